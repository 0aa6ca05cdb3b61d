//! `portcall probe`: agentless probes of targets named on the command line
//! or in a file. Parses arguments into a `ProbeConfig` and targets, runs the
//! engine, renders, and maps outcomes to the exit code.

use std::hash::{BuildHasherDefault, Hasher};
use std::io::Write;
use std::net::IpAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args, ValueEnum};
use probe_core::probe::{
    Greeting, GreetingExchange, Observed, ProbeConfig, Prober, SweepEta, Target, TlsOptions,
    TrustRoots, UdpOptions, parse_target, parse_target_list, render,
};
use tokio_util::sync::CancellationToken;

/// Sweeps of at least this many targets get a progress bar on a terminal.
const PROGRESS_FROM: usize = 100;

/// Arguments of `portcall probe`.
#[derive(Args, Debug)]
#[command(after_help = "\
TARGET is HOST:PORTS[/tls|/udp]: HOST a DNS name, an IPv4 address or a
bracketed IPv6 address; PORTS a port, a list (7611,7711) or a range
(30000-30999).
Examples: db1:3306  198.18.0.5:9443/tls  host:7611,7711  [::1]:443  ns1:53/udp

UDP targets are open only on an answer that proves arrival: a valid reply to
a DNS (53), NTP (123) or, with --snmp-community, SNMP (161) request, or a
portcall canary's line. Silence is timeout, never open: without a canary or a
known service, UDP cannot be proven.

Exit status: 0 every target open, 1 some target not open, 2 bad input, 130
interrupted (Ctrl-C, SIGTERM).")]
pub struct ProbeArgs {
    /// Targets to probe.
    #[arg(value_name = "TARGET")]
    targets: Vec<String>,
    /// Read more targets from FILE (whitespace-separated, `#` comments;
    /// `-` is standard input).
    #[arg(short = 'f', long = "file", value_name = "FILE")]
    files: Vec<PathBuf>,
    /// Deadline of each connect attempt and of the TLS handshake. Connect
    /// deadlines adapt below it to the round trips measured to each target
    /// address (see --no-adaptive).
    #[arg(long, value_name = "MS", default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..=600_000))]
    timeout_ms: u64,
    /// Wait the whole --timeout-ms on every connect attempt instead of a
    /// deadline derived from measured round trips.
    #[arg(long)]
    no_adaptive: bool,
    /// Extra attempts for targets that stay silent.
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u32).range(0..=10))]
    retries: u32,
    /// Most connection attempts in flight at once.
    #[arg(long, value_name = "N", default_value_t = 4096, value_parser = clap::value_parser!(u64).range(1..=65_536))]
    concurrency: u64,
    /// Most connection attempts in flight at once to one target address
    /// (halved for a host whose TLS handshakes stall while others succeed).
    #[arg(long, value_name = "N", default_value_t = probe_core::probe::DEFAULT_PER_HOST as u64, value_parser = clap::value_parser!(u64).range(1..=65_536))]
    per_host: u64,
    /// Local address to send probes from.
    #[arg(long, value_name = "ADDR")]
    source: Option<IpAddr>,
    /// Verify TLS certificates against the CA certificates in FILE (PEM)
    /// instead of the system store; a server certificate found in FILE
    /// itself (self-signed) is trusted as pinned, as with
    /// `openssl s_client -CAfile`.
    #[arg(long, value_name = "FILE")]
    ca: Option<PathBuf>,
    /// Report a TLS certificate that does not verify as `tls-error`.
    #[arg(long)]
    verify: bool,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    format: Format,
    /// SNMP community for a v2c get of sysDescr.0 on UDP port 161 (e.g.
    /// `public`). Without it no SNMP request is sent: a community is a
    /// credential.
    #[arg(long, value_name = "COMMUNITY")]
    snmp_community: Option<String>,
    /// List every result in the table; by default an outcome other than
    /// open with more than 25 results is counted in a "Not shown" line, as
    /// nmap does.
    #[arg(long)]
    all: bool,
}

/// How results are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Format {
    /// An aligned table for people.
    Table,
    /// `portcall.probe/v1` JSON.
    Json,
}

/// The probe engine's configuration from the command line: the one place
/// `portcall probe` assembles it.
fn probe_config(args: &ProbeArgs) -> anyhow::Result<ProbeConfig> {
    let timeout = Duration::from_millis(args.timeout_ms);
    Ok(ProbeConfig {
        connect_timeout: timeout,
        tls_timeout: timeout,
        exchange_timeout: timeout,
        retries: args.retries,
        concurrency: usize::try_from(args.concurrency).context("--concurrency")?,
        per_host_concurrency: usize::try_from(args.per_host).context("--per-host")?,
        adaptive: !args.no_adaptive,
        source: args.source,
        tls: TlsOptions {
            roots: args
                .ca
                .clone()
                .map_or(TrustRoots::System, TrustRoots::PemFile),
            require_verified: args.verify,
        },
        ..ProbeConfig::default()
    })
}

/// Runs `portcall probe`.
pub fn probe(args: ProbeArgs) -> anyhow::Result<ExitCode> {
    let targets = collect_targets(&args)?;
    let timeout = Duration::from_millis(args.timeout_ms);
    let config = probe_config(&args)?;
    if let Some(source) = args.source {
        check_source(source)?;
    }
    // Well-known services that speak first (MySQL on 3306) are greeted and
    // left politely; their greeting shows in the detail.
    let greetings = targets
        .iter()
        .map(|t| {
            (t.protocol == probe_core::port::Protocol::Tcp)
                .then(|| Greeting::for_port(t.port.get()))
                .flatten()
        })
        .collect();
    let greeter = Arc::new(GreetingExchange::new(greetings, timeout / 2, None));
    // The worst one target can take: every attempt silent, then the TLS
    // handshake and the greeting at their deadlines.
    let worst = timeout * (args.retries + 1) + timeout * 2;
    let eta = SweepEta::new(targets.len(), config.concurrency, worst);
    if let Some(c) = &args.snmp_community {
        if let Err(why) = probe_core::plan::check_snmp_community(c) {
            bail!("--snmp-community {c:?}: {why}");
        }
    }
    let udp = UdpOptions {
        snmp_community: args.snmp_community.clone(),
    };
    let prober = Prober::with_udp(config, Some(greeter), udp)?;

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("start the async runtime")?;
    let cancel = CancellationToken::new();
    let results = runtime.block_on(async {
        crate::schedule_cmd::stop_on_signal(cancel.clone())?;
        let mut bar =
            crate::progress::SweepProgress::on_terminal(targets.len(), PROGRESS_FROM, eta);
        // Kept compact (a closed port is a few numbers), each result built
        // again only as it is written.
        let results = prober
            .sweep_kept(targets, &cancel, |_, _| {
                if let Some(bar) = &mut bar {
                    bar.inc();
                }
            })
            .await;
        if let Some(bar) = bar {
            bar.finish();
        }
        anyhow::Ok(results)
    })?;

    // Streamed rather than built in memory first: a full sweep is 65535
    // results. A closed pipe (`| head`) is not an error worth reporting.
    let mut out = std::io::BufWriter::with_capacity(1 << 16, std::io::stdout().lock());
    let written = match args.format {
        Format::Table => render::write_table_each(
            results.iter(),
            render::TableOptions { all: args.all },
            &mut out,
        ),
        Format::Json => render::write_json_each(results.iter(), &mut out),
    }
    .and_then(|()| out.flush());
    match written {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            return Err(anyhow::Error::new(e).context("write the results"));
        }
        _ => {}
    }
    if cancel.is_cancelled() {
        eprintln!("portcall: interrupted; targets not probed are listed as local-error");
        return Ok(ExitCode::from(crate::INTERRUPTED));
    }
    let all_open = results.observed().all(|o| o == Observed::Open);
    Ok(if all_open {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// Targets from the arguments, then from each file, without repeats.
fn collect_targets(args: &ProbeArgs) -> anyhow::Result<Vec<Target>> {
    let mut targets = Vec::new();
    for spec in &args.targets {
        targets.extend(parse_target(spec)?);
    }
    for file in &args.files {
        let text = if file.as_os_str() == "-" {
            std::io::read_to_string(std::io::stdin()).context("read targets from stdin")?
        } else {
            std::fs::read_to_string(file)
                .with_context(|| format!("read targets from {}", file.display()))?
        };
        let found =
            parse_target_list(&text).with_context(|| format!("targets file {}", file.display()))?;
        targets.extend(found);
    }
    if targets.is_empty() {
        bail!("no targets given (name some, e.g. db1:3306, or use -f FILE)");
    }
    let mut seen: std::collections::HashSet<Target, BuildHasherDefault<Fnv>> =
        std::collections::HashSet::with_capacity_and_hasher(targets.len(), Default::default());
    targets.retain(|t| seen.insert(t.clone()));
    Ok(targets)
}

/// FNV-1a, for the set of targets seen: it is hashed once per target of
/// the operator's own arguments (nothing adversarial to resist), where
/// SipHash costs a measurable share of a 65,535-port sweep's CPU.
struct Fnv(u64);

impl Default for Fnv {
    fn default() -> Fnv {
        Fnv(0xcbf2_9ce4_8422_2325)
    }
}

impl Hasher for Fnv {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0 ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3);
        }
    }
}

/// A source address that is not on this host would make every probe a
/// local error; say so once, as bad input.
fn check_source(source: IpAddr) -> anyhow::Result<()> {
    std::net::TcpListener::bind((source, 0))
        .map(drop)
        .with_context(|| format!("--source {source} is not an address of this host"))
}
