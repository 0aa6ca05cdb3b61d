//! `portcall check`: the coordinator. Loads the plan and the coordinator's
//! certificate (or, with `--ssh`, the ssh settings), runs one round through
//! every agent, renders the report.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Args;
use clap::builder::{PossibleValuesParser, TypedValueParser};
use probe_core::control::{ClientSecurity, SshOptions, SshTransport, Transport};
use probe_core::pki::{COORDINATOR, TlsIdentity};
use probe_core::plan::{Address, Only, PathScope, Plan};
use probe_core::report::{self, RenderOptions, Report, ReportFormat, table::ReportTableOptions};
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

With --ssh, nothing listens for the coordinator: each host's agent is started
as `ssh [OPTIONS] TARGET portcall agent --stdio --plan - --host NAME` (TARGET
from the host's `ssh = \"user@name:port\"`, else its address with [defaults]
ssh_user) and the round runs over that session. Your ssh configuration, agent
and known_hosts apply; a host whose ssh fails is reported unreachable with
ssh's last line.

Exit status: 0 every expectation met; 1 at least one violation (whether or not
other paths could be measured: a violation is a definite failure); 3 no
violation, but the check could not complete (an agent unreachable, a path not
measurable); 2 bad input; 130 interrupted (Ctrl-C, SIGTERM).")]
pub struct CheckArgs {
    /// The plan file (TOML), the same one the agents hold.
    #[arg(long)]
    plan: PathBuf,
    /// Directory with ca.pem, coordinator.pem and coordinator-key.pem.
    #[arg(long, required_unless_present_any = ["insecure", "ssh"])]
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
    /// Repeat each open path's nonce exchange N times, paced per target
    /// (one sample per 10 ms), for loss per direction, round-trip
    /// percentiles and jitter in the report's `quality` (default: the
    /// plan's `[defaults] samples`, else 1: no samples).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=10_000))]
    samples: Option<u32>,
    /// After the round, collect every host's state (ruleset, addresses,
    /// routes; as `portcall state collect`) into DIR for `portcall whatif`.
    #[arg(long, value_name = "DIR")]
    save_state: Option<PathBuf>,
    #[command(flatten)]
    ssh: SshArgs,
    #[command(flatten)]
    output: OutputArgs,
}

/// `--ssh` and its settings.
#[derive(Args, Debug)]
pub struct SshArgs {
    /// Start each host's agent over ssh and talk to it there: no control
    /// port, no certificates.
    #[arg(long, conflicts_with_all = ["pki", "insecure"])]
    ssh: bool,
    /// Copy this portcall binary to each host for the round (a private
    /// temporary path, SHA-256 checked, removed afterwards).
    #[arg(long, requires = "ssh")]
    push: bool,
    /// The portcall binary on the hosts (default: `portcall` on the
    /// remote PATH).
    #[arg(long, value_name = "PATH", requires = "ssh", conflicts_with = "push")]
    remote_path: Option<String>,
    /// An ssh option (`-o OPTION`), e.g. `ProxyJump=bastion`; repeatable.
    #[arg(long = "ssh-option", value_name = "OPTION", requires = "ssh")]
    ssh_options: Vec<String>,
    /// Use this ssh_config instead of ~/.ssh/config (`ssh -F FILE`).
    #[arg(long, value_name = "FILE", requires = "ssh")]
    ssh_config: Option<PathBuf>,
    /// Hosts whose ssh sessions are being set up at once.
    #[arg(long, value_name = "N", default_value_t = 32, requires = "ssh",
          value_parser = clap::value_parser!(u16).range(1..))]
    ssh_parallel: u16,
    /// The ssh client to run (tests stand a fake one in).
    #[arg(
        long,
        value_name = "PATH",
        requires = "ssh",
        hide = true,
        default_value = "ssh"
    )]
    ssh_program: PathBuf,
}

pub fn check(args: CheckArgs) -> anyhow::Result<ExitCode> {
    crate::agent_cmd::init_logging("warn");
    check_out(&args.output)?;
    if args.ssh.ssh {
        return check_ssh(&args);
    }
    // The coordinator walks the plan's paths when it needs them and never
    // holds them all (a 100-host mesh has 99,000).
    let plan = Plan::load_scoped(&args.plan, &PathScope::Lazy)?;
    let config = round_config(&plan, &args)?;
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
    run(
        &plan,
        &security,
        &config,
        &args.output,
        args.save_state.as_deref(),
    )
}

/// The round's settings: `--only` selects paths, `--samples` (else the
/// plan's default) sets the quality samples.
fn round_config(plan: &Plan, args: &CheckArgs) -> anyhow::Result<RoundConfig> {
    Ok(RoundConfig {
        samples: args.samples.unwrap_or(plan.defaults.samples),
        only: if args.only.is_empty() {
            None
        } else {
            Some(plan.select_paths(&args.only)?)
        },
        ..RoundConfig::default()
    })
}

impl SshArgs {
    /// Whether `--ssh` was given.
    pub fn enabled(&self) -> bool {
        self.ssh
    }

    /// The ssh transport's settings (`--push` copies the running binary).
    pub fn options(&self) -> anyhow::Result<SshOptions> {
        let push = match self.push {
            false => None,
            true => Some(std::env::current_exe().context("find the running portcall to push")?),
        };
        Ok(SshOptions {
            program: self.ssh_program.clone(),
            config_file: self.ssh_config.clone(),
            options: self.ssh_options.clone(),
            remote_path: self.remote_path.clone(),
            push,
            parallel: usize::from(self.ssh_parallel),
            ..SshOptions::default()
        })
    }
}

/// `check --ssh`: the same round through ssh sessions.
fn check_ssh(args: &CheckArgs) -> anyhow::Result<ExitCode> {
    let text = std::fs::read_to_string(&args.plan)
        .with_context(|| format!("read plan {}", args.plan.display()))?;
    let plan = Plan::parse_scoped(&text, &args.plan.display().to_string(), &PathScope::Lazy)?;
    let transport = SshTransport::new(&plan, &text, args.ssh.options()?)?;
    let config = round_config(&plan, args)?;
    run(
        &plan,
        &transport,
        &config,
        &args.output,
        args.save_state.as_deref(),
    )
}

/// Runs the round through `transport`, tearing it down on SIGINT or
/// SIGTERM, and emits it.
fn run<T: Transport>(
    plan: &Plan,
    transport: &T,
    config: &RoundConfig,
    output: &OutputArgs,
    save_state: Option<&std::path::Path>,
) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("start the async runtime")?;
    let cancel = CancellationToken::new();
    let evidence = runtime.block_on(async {
        crate::schedule_cmd::stop_on_signal(cancel.clone())?;
        let progress = crate::progress::RoundProgress::on_terminal().map(std::sync::Arc::new);
        let config = RoundConfig {
            observer: round::Observer(
                progress
                    .clone()
                    .map(|p| p as std::sync::Arc<dyn round::RoundObserver>),
            ),
            ..config.clone()
        };
        let evidence = round::run_round(plan, transport, &config, &cancel).await;
        if let Some(p) = progress {
            p.finish();
        }
        if let (Some(dir), false) = (save_state, cancel.is_cancelled()) {
            let timeout = std::time::Duration::from_secs(20);
            let collected = probe_core::twin::collect::collect(plan, transport, timeout).await;
            let notes = probe_core::twin::collect::write(&collected, dir)
                .context("write the state directory")?;
            for n in &notes {
                eprintln!("portcall: state: {n}");
            }
            eprintln!("saved the hosts' state in {}", dir.display());
        }
        anyhow::Ok(evidence)
    })?;
    let joining = std::time::Instant::now();
    let code = if output.format == ReportFormat::Json {
        // JSON is written as each path is judged, once, on every core: the
        // paths' reports are never all held at once (a 100-host mesh has
        // 99,000).
        let mut streamed = report::join_deferred(plan, &evidence, config.only.as_deref());
        emit_json_streamed(&mut streamed, output)?;
        streamed.report.exit_code()
    } else {
        let report = match &config.only {
            None => report::join(plan, &evidence),
            Some(only) => report::join_paths(plan, &evidence, only),
        };
        emit(&report, output, &[])?;
        report.exit_code()
    };
    tracing::info!(
        elapsed_ms = joining.elapsed().as_millis() as u64,
        "report joined and written"
    );
    if cancel.is_cancelled() {
        eprintln!("portcall: {}", round::interrupted_summary(&evidence));
        return Ok(ExitCode::from(crate::INTERRUPTED));
    }
    Ok(ExitCode::from(code))
}

/// [`emit`] for `--format json`, judging the paths as they are written.
fn emit_json_streamed(
    streamed: &mut report::StreamedReport<'_>,
    output: &OutputArgs,
) -> anyhow::Result<()> {
    match &output.out {
        None => {
            let mut out = std::io::BufWriter::with_capacity(64 * 1024, std::io::stdout().lock());
            match streamed
                .write_json_once(&mut out)
                .and_then(|()| std::io::Write::flush(&mut out))
            {
                Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.into()),
                _ => Ok(()),
            }
        }
        Some(path) => {
            report::write_atomically_with(path, |w| streamed.write_json_once(w))
                .context("write the report")?;
            eprintln!("wrote {}: {}", path.display(), streamed.report.summary);
            Ok(())
        }
    }
}

/// Refuses an `--out` that could not be written before the round runs, so
/// a round is never thrown away at its end for a typo in a path.
pub fn check_out(output: &OutputArgs) -> anyhow::Result<()> {
    if let Some(path) = &output.out {
        report::check_writable(path).context("--out refused before the round")?;
    }
    Ok(())
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
    let format = output.format;
    let notes_here = format.is_terminal_text();
    if !notes_here {
        for n in notes {
            eprintln!("note: {n}");
        }
    }
    let options = RenderOptions {
        table: ReportTableOptions {
            color: to_tty,
            ..ReportTableOptions::default()
        },
    };
    // Rendered as it is written: a report of 100,000 paths is never held
    // twice (as the model and as its text).
    let render = |mut w: &mut dyn std::io::Write| -> std::io::Result<()> {
        if notes_here {
            for n in notes {
                writeln!(w, "note: {n}")?;
            }
            if !notes.is_empty() {
                writeln!(w)?;
            }
        }
        report::render(report, format, options, &mut w)
    };
    match &output.out {
        None => {
            let mut out = std::io::BufWriter::with_capacity(64 * 1024, std::io::stdout().lock());
            match render(&mut out).and_then(|()| std::io::Write::flush(&mut out)) {
                Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.into()),
                _ => Ok(()),
            }
        }
        Some(path) => {
            report::write_atomically_with(path, render).context("write the report")?;
            eprintln!("wrote {}: {}", path.display(), report.summary);
            Ok(())
        }
    }
}
