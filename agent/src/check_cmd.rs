//! `portcall check`: the coordinator. Loads the plan and the coordinator's
//! certificate, runs one round through every agent, renders the report.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Args;
use clap::builder::{PossibleValuesParser, TypedValueParser};
use probe_core::control::ClientSecurity;
use probe_core::pki::{COORDINATOR, TlsIdentity};
use probe_core::plan::{Address, Only, Plan};
use probe_core::report::{self, RenderOptions, Report, ReportFormat, table::TableOptions};
use probe_core::round::{self, RoundConfig};
use tokio_util::sync::CancellationToken;

/// `--format`: the names of [`ReportFormat::ALL`], parsed by probe-core.
fn report_format() -> impl TypedValueParser<Value = ReportFormat> {
    PossibleValuesParser::new(ReportFormat::ALL.map(ReportFormat::as_str))
        .try_map(|s| s.parse::<ReportFormat>())
}

/// Where and how a report is written.
#[derive(Args, Debug, Clone)]
pub struct OutputArgs {
    /// Output format: table (colour on a TTY), json (portcall.report/v1),
    /// junit, markdown, html (self-contained page) or prometheus (textfile
    /// collector).
    #[arg(long, default_value = "table", value_parser = report_format())]
    pub format: ReportFormat,
    /// Write the report to FILE (atomically) instead of standard output.
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
}

#[derive(Args, Debug)]
#[command(after_help = "\
Every agent of the plan is reached at address:control_port over mutual TLS: the
coordinator presents DIR/coordinator.pem and checks each agent's certificate
against DIR/ca.pem and the agent's plan address or host name.

Exit status: 0 every expectation met; 1 at least one violation (whether or not
other paths could be measured: a violation is a definite failure); 3 no
violation, but the check could not complete (an agent unreachable, a path not
measurable); 2 bad input; 130 interrupted (Ctrl-C, SIGTERM).")]
pub struct CheckArgs {
    /// The plan file (TOML), the same one the agents hold.
    #[arg(long)]
    plan: PathBuf,
    /// Directory with ca.pem, coordinator.pem and coordinator-key.pem.
    #[arg(long, required_unless_present = "insecure")]
    pki: Option<PathBuf>,
    /// Talk plain TCP to agents started with --insecure (loopback only).
    #[arg(long, conflicts_with = "pki")]
    insecure: bool,
    /// Measure only the paths from or to these hosts, or of this flow:
    /// host:NAME, role:NAME, zone:NAME or flow:NAME (a flow's name, its
    /// `from -> to` label, or its position in the file); repeatable, the
    /// union is measured. Agents still hold the whole plan.
    #[arg(long, value_name = "SELECTOR")]
    only: Vec<Only>,
    #[command(flatten)]
    output: OutputArgs,
}

pub fn check(args: CheckArgs) -> anyhow::Result<ExitCode> {
    crate::agent_cmd::init_logging("warn");
    let plan = Plan::load(&args.plan)?;
    let config = RoundConfig {
        only: if args.only.is_empty() {
            None
        } else {
            Some(plan.select_paths(&args.only)?)
        },
        ..RoundConfig::default()
    };
    let security = match &args.pki {
        Some(dir) => ClientSecurity::Mtls(
            TlsIdentity::load(dir, COORDINATOR).context("load the coordinator's certificate")?,
        ),
        None => {
            if let Some(h) = plan.hosts.iter().find(|h| !is_loopback(&h.address)) {
                anyhow::bail!(
                    "--insecure talks plain TCP, allowed only when every agent is on loopback; host {} is at {}",
                    h.name,
                    h.address
                );
            }
            ClientSecurity::Insecure
        }
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("start the async runtime")?;
    let cancel = CancellationToken::new();
    let report = runtime.block_on(async {
        crate::schedule_cmd::stop_on_signal(cancel.clone())?;
        let progress = crate::progress::RoundProgress::on_terminal().map(std::sync::Arc::new);
        let config = RoundConfig {
            observer: round::Observer(
                progress
                    .clone()
                    .map(|p| p as std::sync::Arc<dyn round::RoundObserver>),
            ),
            ..config
        };
        let report = round::check(&plan, &security, &config, &cancel).await;
        if let Some(p) = progress {
            p.finish();
        }
        anyhow::Ok(report)
    })?;
    emit(&report, &args.output, &[])?;
    if cancel.is_cancelled() {
        eprintln!("portcall: interrupted; the round was torn down on every agent it reached");
        return Ok(ExitCode::from(crate::INTERRUPTED));
    }
    Ok(ExitCode::from(report.exit_code()))
}

fn is_loopback(a: &Address) -> bool {
    matches!(a, Address::Ip(ip) if ip.is_loopback())
}

/// Renders `report` where `output` says. `notes` precede a table on
/// standard output and go to standard error otherwise, so JSON stays pure.
pub fn emit(report: &Report, output: &OutputArgs, notes: &[String]) -> anyhow::Result<()> {
    let to_tty = output.out.is_none()
        && probe_core::render::colour_allowed(
            std::io::stdout().is_terminal(),
            std::env::var_os("NO_COLOR").as_deref(),
        );
    let mut bytes = Vec::new();
    if output.format.is_terminal_text() {
        for n in notes {
            bytes.extend_from_slice(format!("note: {n}\n").as_bytes());
        }
        if !notes.is_empty() {
            bytes.push(b'\n');
        }
    } else {
        for n in notes {
            eprintln!("note: {n}");
        }
    }
    let options = RenderOptions {
        table: TableOptions {
            color: to_tty,
            ..TableOptions::default()
        },
    };
    report::render(report, output.format, options, &mut bytes)?;
    match &output.out {
        None => crate::write_stdout(&bytes),
        Some(path) => {
            report::write_atomically(path, &bytes).context("write the report")?;
            eprintln!("wrote {}: {}", path.display(), report.summary);
            Ok(())
        }
    }
}
