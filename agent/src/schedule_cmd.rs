//! `portcall agent --every DURATION --metrics ADDR [--flap-changes K]
//! [--flap-window ROUNDS] [--samples N]`: schedule mode's glue.
//! Arguments, the runtime and the signals (SIGTERM and SIGINT stop,
//! SIGHUP re-reads the plan); the rounds and the endpoint live in
//! `probe_core::schedule`.

use std::net::SocketAddr;
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use probe_core::schedule::{FlapConfig, ReloadHandle, ScheduleConfig, Scheduled, parse_duration};
use tokio::signal::unix::{SignalKind, signal};
use tokio_util::sync::CancellationToken;

/// Schedule mode's arguments, flattened into `portcall agent`'s.
#[derive(Args, Debug, Clone, Default)]
pub struct ScheduleArgs {
    /// Probe this host's outgoing paths against the live services this
    /// often (e.g. 30s, 5m, 1h), with a jitter of a tenth, and export the
    /// results at --metrics. Without --pki there is no control endpoint.
    #[arg(long, value_name = "DURATION", value_parser = parse_every, requires = "metrics")]
    pub every: Option<Duration>,
    /// Serve Prometheus metrics at http://ADDR:PORT/metrics (and /healthz).
    #[arg(long, value_name = "ADDR:PORT", requires = "every")]
    pub metrics: Option<SocketAddr>,
    /// A path flaps while its verdict changed (ok to violation or back,
    /// between rounds that measured it) at least this many times within
    /// the last --flap-window rounds: exported as portcall_path_flapping
    /// and logged once per episode [default: 3]
    #[arg(long, value_name = "K", requires = "every")]
    pub flap_changes: Option<u32>,
    /// The rounds --flap-changes are counted over, 2 to 1000
    /// [default: 20]
    #[arg(long, value_name = "ROUNDS", requires = "every")]
    pub flap_window: Option<u32>,
    /// Each round, after its probes, time N connect-only TCP handshakes
    /// (one per 10 ms per target address; nothing sent, closed politely) of
    /// every TCP or TLS path whose probe connected, and N DNS queries of
    /// every UDP path to a DNS server that answered: exported as the
    /// portcall_path_samples_{sent,answered}_total counters and the
    /// portcall_path_rtt_seconds histogram. The agent also counts other
    /// agents' samples arriving here (nft, CAP_NET_ADMIN) as
    /// portcall_path_samples_arrived_total, for loss per direction
    /// [default: the plan's `[defaults] samples`, else 1: no samples]
    #[arg(long, value_name = "N", requires = "every",
          value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub samples: Option<u32>,
}

fn parse_every(s: &str) -> Result<Duration, String> {
    parse_duration(s).map_err(|e| e.to_string())
}

/// Schedule mode alone (no control endpoint): runs until SIGTERM or SIGINT.
pub fn run(plan: &Path, host: Option<&str>, args: &ScheduleArgs) -> anyhow::Result<ExitCode> {
    // One thread: a scheduled agent mostly sleeps, and a single-threaded
    // runtime keeps its idle footprint small.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("start the async runtime")?;
    let result = runtime.block_on(async {
        let Some(scheduled) = start(plan, host, args).await? else {
            anyhow::bail!("schedule mode needs --every and --metrics");
        };
        let cancel = CancellationToken::new();
        let stop = stop_on_signal(cancel.clone())?;
        run_scheduled(Some(scheduled), cancel).await?;
        stop.abort();
        anyhow::Ok(())
    });
    // A name lookup still blocking a worker thread must not hold up the
    // exit: SIGTERM ends the agent within a second.
    runtime.shutdown_timeout(Duration::from_millis(200));
    result.map(|()| ExitCode::SUCCESS)
}

/// Loads the plan and binds the metrics endpoint when `--every` was given;
/// `None` otherwise. `host` is the plan host (already chosen when the
/// control endpoint runs too).
pub async fn start(
    plan: &Path,
    host: Option<&str>,
    args: &ScheduleArgs,
) -> anyhow::Result<Option<Scheduled>> {
    let (Some(every), Some(metrics)) = (args.every, args.metrics) else {
        return Ok(None);
    };
    let mut config = ScheduleConfig::new(plan.to_path_buf(), every, metrics);
    config.host = host.map(str::to_string);
    config.flaps = FlapConfig::new(
        args.flap_changes.unwrap_or(FlapConfig::DEFAULT_CHANGES),
        args.flap_window.unwrap_or(FlapConfig::DEFAULT_WINDOW),
    )?;
    config.samples = args.samples;
    let scheduled = Scheduled::start(config).await?;
    eprintln!(
        "portcall agent {}: probing {} outgoing path(s) every {}; metrics on http://{}/metrics",
        scheduled.host(),
        scheduled.outgoing_paths(),
        humanize(every),
        scheduled.metrics_addr()
    );
    Ok(Some(scheduled))
}

/// Runs `scheduled` (if any) until `cancel` fires, re-reading the plan on
/// SIGHUP meanwhile.
pub async fn run_scheduled(
    scheduled: Option<Scheduled>,
    cancel: CancellationToken,
) -> anyhow::Result<()> {
    let Some(scheduled) = scheduled else {
        return Ok(());
    };
    let reloader = reload_on_sighup(scheduled.reload_handle())?;
    scheduled.run(cancel).await;
    reloader.abort();
    Ok(())
}

/// Cancels `cancel` on SIGTERM or SIGINT (every agent mode).
pub fn stop_on_signal(cancel: CancellationToken) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let mut term = signal(SignalKind::terminate()).context("install the SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("install the SIGINT handler")?;
    Ok(tokio::spawn(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        cancel.cancel();
    }))
}

/// Requests a plan reload on every SIGHUP.
fn reload_on_sighup(handle: ReloadHandle) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let mut hup = signal(SignalKind::hangup()).context("install the SIGHUP handler")?;
    Ok(tokio::spawn(async move {
        while hup.recv().await.is_some() {
            tracing::info!("SIGHUP: reloading the plan");
            handle.reload();
        }
    }))
}

/// `300s` as `5m`, for the start-up line.
fn humanize(d: Duration) -> String {
    let ms = d.as_millis();
    match ms {
        _ if ms % 3_600_000 == 0 => format!("{}h", ms / 3_600_000),
        _ if ms % 60_000 == 0 => format!("{}m", ms / 60_000),
        _ if ms % 1000 == 0 => format!("{}s", ms / 1000),
        _ => format!("{ms}ms"),
    }
}
