//! `portcall agent`: one host's agent, serving the control endpoint until
//! SIGINT or SIGTERM, or (`--stdio`, started by `check --ssh`) one
//! coordinator on standard input and output until the input closes.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::Args;
use probe_core::agent::{self, Agent, AgentConfig, AgentLimits, StdioPlan};
use probe_core::control::ServerSecurity;
use probe_core::pki::{self, TlsIdentity};
use probe_core::plan::{PathScope, Plan};
use tokio_util::sync::CancellationToken;

#[derive(Args, Debug)]
pub struct AgentArgs {
    /// The plan file (TOML), the same one the coordinator uses; with
    /// --stdio, `-` reads it from the coordinator first.
    #[arg(long, required_unless_present = "cleanup")]
    plan: Option<PathBuf>,
    /// The plan host this agent plays (default: the host whose address is
    /// one of this machine's).
    #[arg(long)]
    host: Option<String>,
    /// Directory with ca.pem, HOST.pem and HOST-key.pem.
    #[arg(long, required_unless_present_any = ["insecure", "every", "stdio"])]
    pki: Option<PathBuf>,
    /// Serve the control endpoint over plain TCP without client
    /// certificates; refused unless the endpoint is on loopback.
    #[arg(long, conflicts_with = "pki")]
    insecure: bool,
    /// The name the coordinator's client certificate carries: this agent
    /// acts for no other certificate, even one from the same CA.
    #[arg(long, value_name = "NAME", default_value = pki::COORDINATOR)]
    coordinator: String,
    /// Serve the control endpoint here instead of the host's plan address
    /// and control_port.
    #[arg(long, value_name = "ADDR:PORT")]
    listen: Option<SocketAddr>,
    /// Serve one coordinator on standard input and output (what
    /// `check --ssh` runs) and exit when the input closes; no port is
    /// opened and no certificate is needed.
    #[arg(long, requires = "host", conflicts_with_all = ["pki", "insecure", "listen", "every"])]
    stdio: bool,
    /// Do not trace the round's packets through this host's nftables
    /// firewall (rule attribution; needs CAP_NET_ADMIN, reported as
    /// unavailable without it).
    #[arg(long)]
    no_rule_trace: bool,
    /// Delete every rule-tracing table (`inet portcall_trace_*`) in this
    /// network namespace and exit: what a service manager runs after the
    /// agent stopped (systemd's ExecStopPost), so that not even an agent
    /// killed with SIGKILL leaves one until its expiry.
    #[arg(long, exclusive = true)]
    cleanup: bool,
    /// With --stdio, trace the round's packets (what `whatif` passes; the
    /// default now, kept so that older `whatif` invocations still parse).
    #[arg(long, hide = true, requires = "stdio")]
    stdio_rule_trace: bool,
    /// Schedule mode: `--every` and `--metrics` (see schedule_cmd).
    #[command(flatten)]
    schedule: crate::schedule_cmd::ScheduleArgs,
}

pub fn agent(args: AgentArgs) -> anyhow::Result<ExitCode> {
    if args.cleanup {
        return cleanup();
    }
    let plan_file = args.plan.clone().context("--plan is required")?;
    if args.stdio {
        return stdio(&args, &plan_file);
    }
    init_logging("info");
    // Schedule mode alone: without --pki or --insecure there is no control
    // endpoint (clap has made sure --every is there).
    if args.pki.is_none() && !args.insecure {
        return crate::schedule_cmd::run(&plan_file, args.host.as_deref(), &args.schedule);
    }
    // Read without materializing a path, then keep only this host's: an
    // agent's memory follows its own paths, not the whole plan's.
    let plan = Plan::load_scoped(&plan_file, &PathScope::Lazy)?;
    let host = match args.host {
        Some(h) => h,
        None => agent::detect_host(&plan)?,
    };
    // Before looking for its certificate: a misspelt host would otherwise
    // be reported as a missing certificate file.
    if plan.host(&host).is_none() {
        return Err(agent::AgentError::unknown_host(&plan, &host).into());
    }
    let plan = Arc::new(plan.scoped(&PathScope::Host(host.clone())));
    let (security, canary_tls) = match &args.pki {
        Some(dir) => {
            let id = TlsIdentity::load(dir, &host)
                .with_context(|| format!("load the certificate of {host}"))?;
            (
                ServerSecurity::Mtls(id.control_server_config()?),
                id.canary_server_config()?,
            )
        }
        None => (
            ServerSecurity::Insecure,
            pki::self_signed_canary_config(&host)?,
        ),
    };
    let config = AgentConfig {
        plan,
        host,
        security,
        canary_tls,
        listen: args.listen,
        coordinator: args.coordinator,
        limits: AgentLimits::default(),
        rule_trace: !args.no_rule_trace,
    };
    // One thread: an agent mostly waits, and a single-threaded runtime
    // keeps its idle footprint small.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("start the async runtime")?;
    runtime.block_on(async {
        let agent = Agent::bind(config).await?;
        eprintln!(
            "portcall agent {}: control endpoint on {}",
            agent.host(),
            agent.local_addr()
        );
        let cancel = CancellationToken::new();
        crate::schedule_cmd::stop_on_signal(cancel.clone())?;
        // With --every, schedule mode runs beside the control endpoint.
        let scheduled =
            crate::schedule_cmd::start(&plan_file, Some(agent.host()), &args.schedule).await?;
        let ((), scheduled) = tokio::join!(
            agent.run(cancel.clone()),
            crate::schedule_cmd::run_scheduled(scheduled, cancel)
        );
        scheduled?;
        anyhow::Ok(())
    })?;
    Ok(ExitCode::SUCCESS)
}

/// `agent --stdio`: the plan from a file or (`-`) from the coordinator.
fn stdio(args: &AgentArgs, plan_file: &std::path::Path) -> anyhow::Result<ExitCode> {
    // Standard error travels back through ssh; only warnings go there.
    init_logging("warn");
    let host = args.host.clone().context("--stdio needs --host")?;
    let plan = if plan_file.as_os_str() == "-" {
        StdioPlan::Upload
    } else {
        StdioPlan::Loaded(Arc::new(Plan::load_scoped(
            plan_file,
            &PathScope::Host(host.clone()),
        )?))
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("start the async runtime")?;
    let result = runtime.block_on(async {
        let cancel = CancellationToken::new();
        crate::schedule_cmd::stop_on_signal(cancel.clone())?;
        agent::serve_stdio(
            plan,
            &host,
            AgentLimits::default(),
            // As a long-running agent: traced where the remote side may
            // (root or CAP_NET_ADMIN), else the evidence says why. The
            // session's end stops the monitor and deletes the table before
            // `serve_stdio` returns. (`--stdio-rule-trace`, which `whatif`
            // passes, is implied now.)
            args.stdio_rule_trace || !args.no_rule_trace,
            tokio::io::stdin(),
            tokio::io::stdout(),
            cancel,
        )
        .await?;
        anyhow::Ok(())
    });
    // A read of standard input may still be blocked in a worker thread
    // after a signal: do not wait for it.
    runtime.shutdown_timeout(std::time::Duration::from_millis(100));
    result?;
    Ok(ExitCode::SUCCESS)
}

/// `agent --cleanup`: deletes every trace table of this namespace, and
/// the arrival-count tables of schedule-mode agents no longer running, and
/// says which; exits 0 when there is nothing to delete or no nftables
/// (nothing can be left then), 2 when nft refused.
fn cleanup() -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("start the async runtime")?;
    match runtime.block_on(agent::nftrace::delete_every_table()) {
        Ok(deleted) if deleted.is_empty() => eprintln!("portcall agent --cleanup: no trace table"),
        Ok(deleted) => {
            for t in &deleted {
                eprintln!("portcall agent --cleanup: deleted table inet {t}");
            }
        }
        Err(agent::nftrace::TraceError::NoNft) => {
            eprintln!("portcall agent --cleanup: no nft command, so no trace table");
        }
        Err(e) => return Err(anyhow::Error::new(e).context("delete the trace tables")),
    }
    // Schedule mode's arrival counts of agents no longer running.
    for t in runtime.block_on(probe_core::schedule::arrivals::delete_dead_tables()) {
        eprintln!("portcall agent --cleanup: deleted table inet {t}");
    }
    Ok(ExitCode::SUCCESS)
}

/// Logs to standard error; `RUST_LOG` overrides the default level.
pub fn init_logging(default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Colour codes only for a person at a terminal, not in journald or
        // a log file.
        .with_ansi(probe_core::render::colour_allowed(
            std::io::IsTerminal::is_terminal(&std::io::stderr()),
            std::env::var_os("NO_COLOR").as_deref(),
        ))
        .try_init();
}
