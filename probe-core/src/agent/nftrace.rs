//! Rule attribution: which nftables rule, or chain policy, on this host
//! stopped a round's packets, read from the kernel's own packet tracing, so
//! that a report can name the rule to change and not only the host.
//!
//! During a round the agent adds a table of its own,
//! `inet portcall_trace_<round>_<expiry>`, whose chains run before every
//! other on the prerouting and output hooks and set `meta nftrace` only on
//! TCP packets from the sources' addresses (the plan's at `prepare`, then
//! every address the coordinator sends in `trace-sources`: the sources'
//! interfaces and resolved names) to this host's canary ports,
//! and on this host's own probes to their targets (sets of `address . port`
//! with element timeouts). On a host that forwards, the coordinator also
//! sends the paths between other plan hosts that may cross it, and a
//! `transit` chain at the same priority on the forward hook marks those
//! (`source . destination . port`). The kernel then reports every verdict
//! those packets meet, in every table, through netlink trace events.
//!
//! The events are read by running `nft -a monitor` and parsing its lines,
//! not by speaking nf_tables netlink ourselves: trace events carry rule
//! handles and raw expressions, and turning them into the rule's text means
//! re-implementing libnftables' expression printer (and keeping it in step
//! with every nftables release), which `nft` already does; where nftables is
//! the firewall, `nft` is installed. The price is a parser of `nft`'s
//! trace lines, pinned by the tests below.
//!
//! Tracing state is bounded by the round's TTL even when the agent dies:
//! the set elements time out in the kernel at the TTL (so the table goes
//! inert on its own), the monitor runs under `timeout` with the same bound,
//! the table is deleted at teardown or TTL, and an agent starting up deletes
//! every expired `portcall_trace_` table it finds (the expiry is in the name)
//! and schedules the deletion of unexpired ones. A table with `flags owner`
//! would vanish with the netlink socket that created it, the best bound of
//! all, but that socket would have to live in the agent process, which the
//! `nft` command cannot give us.
//!
//! Where tracing is not possible (no `nft`, no CAP_NET_ADMIN), the round
//! goes on and the evidence says why, once per host. Rules of legacy
//! iptables are invisible to nftables tracing; when legacy tables are
//! loaded the evidence says so.

use std::fmt::Write as _;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::time::timeout;

pub use super::nft_cmd::{OwnedTables, nft_path};
use super::nft_cmd::{Unfinished, find_tool, nft};
use super::trace_netlink;
use crate::control::{TraceEvidence, TraceState, TraceStop};

/// Every table the agent adds starts with this.
pub const TABLE_PREFIX: &str = "portcall_trace_";

/// Which packets to trace in a round.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceScope {
    /// The round's id (hex).
    pub round: String,
    /// When the round's TTL ends, in seconds since the epoch.
    pub expires_unix: u64,
    /// `(source address, canary port)` pairs to trace arriving.
    pub inbound: Vec<(IpAddr, u16)>,
    /// `(target address, port)` pairs of this host's probes to trace
    /// leaving.
    pub outbound: Vec<(IpAddr, u16)>,
    /// The round takes quality samples: the table also counts TCP
    /// samples' SYNs ([`super::syn_samples`]).
    pub count_samples: bool,
}

/// The table name for a round: the prefix, up to 16 hex digits of the
/// round id, and the expiry (seconds since the epoch).
pub fn table_name(round: &str, expires_unix: u64) -> String {
    let id: String = round
        .chars()
        .filter(char::is_ascii_hexdigit)
        .take(16)
        .collect();
    format!("{TABLE_PREFIX}{id}_{expires_unix}")
}

/// The expiry carried by one of our table names; `None` for other tables.
pub fn table_expiry(name: &str) -> Option<u64> {
    let rest = name.strip_prefix(TABLE_PREFIX)?;
    let (id, expiry) = rest.rsplit_once('_')?;
    if !id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    expiry.parse().ok()
}

/// Most `address . port` pairs (inbound and outbound) one host traces in a
/// round. Tracing costs kernel and `nft` time that grows with the round
/// (a 50-host mesh took 2.4 times as long traced, a 100-host one missed its
/// probe deadline), and a measurement must not be spoilt by its own
/// diagnostics: past this the host does not trace and says why.
pub const MAX_TRACED_PAIRS: usize = 512;

/// Why a host with `pairs` pairs to trace does not, when they are more than
/// [`MAX_TRACED_PAIRS`].
pub fn too_large(pairs: usize) -> Option<String> {
    (pairs > MAX_TRACED_PAIRS).then(|| {
        format!(
            "not traced: this host's part of the round has {pairs} address-port pairs, more than {MAX_TRACED_PAIRS} (tracing them would slow the round itself); check fewer paths (--only) to name the rules"
        )
    })
}

/// The `nft -f` input that creates the round's trace table.
pub fn ruleset(scope: &TraceScope, ttl: Duration) -> String {
    let name = table_name(&scope.round, scope.expires_unix);
    let secs = ttl.as_secs().max(1) + u64::from(ttl.subsec_nanos() > 0);
    let mut s = format!("table inet {name} {{\n");
    let sets = [
        ("in4", "ipv4_addr", &scope.inbound, false),
        ("in6", "ipv6_addr", &scope.inbound, true),
        ("out4", "ipv4_addr", &scope.outbound, false),
        ("out6", "ipv6_addr", &scope.outbound, true),
    ];
    for (set, kind, pairs, v6) in sets {
        let mut elements: Vec<String> = pairs
            .iter()
            .filter(|(a, _)| a.is_ipv6() == v6)
            .map(|(a, p)| format!("{a} . {p} timeout {secs}s"))
            .collect();
        elements.sort();
        elements.dedup();
        let _ = write!(
            s,
            "  set {set} {{\n    type {kind} . inet_service\n    flags timeout\n"
        );
        if !elements.is_empty() {
            let _ = writeln!(s, "    elements = {{ {} }}", elements.join(", "));
        }
        s.push_str("  }\n");
    }
    // Below raw (-300) and conntrack (-200): our mark is set before any
    // other chain of the hook sees the packet.
    s.push_str(
        "  chain pre {\n    type filter hook prerouting priority -500; policy accept;\n    ip saddr . tcp dport @in4 meta nftrace set 1\n    ip6 saddr . tcp dport @in6 meta nftrace set 1\n  }\n",
    );
    s.push_str(
        "  chain out {\n    type filter hook output priority -500; policy accept;\n    ip daddr . tcp dport @out4 meta nftrace set 1\n    ip6 daddr . tcp dport @out6 meta nftrace set 1\n  }\n}\n",
    );
    s
}

/// The `nft -f` input that adds `pairs` to the arriving sets of table
/// `inet table`, each element timing out after `left` (whole seconds,
/// rounded up).
pub fn add_elements(table: &str, pairs: &[(IpAddr, u16)], left: Duration) -> String {
    let secs = left.as_secs().max(1) + u64::from(left.subsec_nanos() > 0);
    let mut s = String::new();
    for (set, v6) in [("in4", false), ("in6", true)] {
        let elements: Vec<String> = pairs
            .iter()
            .filter(|(a, _)| a.is_ipv6() == v6)
            .map(|(a, p)| format!("{a} . {p} timeout {secs}s"))
            .collect();
        if !elements.is_empty() {
            let _ = writeln!(
                s,
                "add element inet {table} {set} {{ {} }}",
                elements.join(", ")
            );
        }
    }
    s
}

/// A forwarded flow to mark: source address, destination address, port.
pub type ForwardTriple = (IpAddr, IpAddr, u16);

/// The `nft -f` input that marks `triples` in the forward hook of table
/// `inet table`, elements timing out after `left`: with `create`, first
/// the `transit4`/`transit6` sets and the `transit` chain (before every
/// other chain of the hook, as `pre` is in prerouting; not `fwd`, a
/// keyword of nft's grammar), made only on a host asked to trace what it
/// forwards. A triple whose two addresses differ in family is left out.
pub fn forward_elements(
    table: &str,
    triples: &[ForwardTriple],
    left: Duration,
    create: bool,
) -> String {
    let secs = left.as_secs().max(1) + u64::from(left.subsec_nanos() > 0);
    let mut s = String::new();
    if create {
        for (set, kind) in [("transit4", "ipv4_addr"), ("transit6", "ipv6_addr")] {
            let _ = writeln!(
                s,
                "add set inet {table} {set} {{ type {kind} . {kind} . inet_service; flags timeout; }}"
            );
        }
        let _ = writeln!(
            s,
            "add chain inet {table} transit {{ type filter hook forward priority -500; policy accept; }}"
        );
        for (ip, set) in [("ip", "transit4"), ("ip6", "transit6")] {
            let _ = writeln!(
                s,
                "add rule inet {table} transit {ip} saddr . {ip} daddr . tcp dport @{set} meta nftrace set 1"
            );
        }
    }
    for (set, v6) in [("transit4", false), ("transit6", true)] {
        let elements: Vec<String> = triples
            .iter()
            .filter(|(a, d, _)| a.is_ipv6() == v6 && d.is_ipv6() == v6)
            .map(|(a, d, p)| format!("{a} . {d} . {p} timeout {secs}s"))
            .collect();
        if !elements.is_empty() {
            let _ = writeln!(
                s,
                "add element inet {table} {set} {{ {} }}",
                elements.join(", ")
            );
        }
    }
    s
}

pub use super::trace_event::{ChainRef, TraceLine};
pub use super::trace_log::TraceLog;

/// Parses one line of `nft -a monitor` output; `None` for anything that is
/// not a trace line of a TCP packet, a rule verdict or a policy.
pub fn parse_line(line: &str) -> Option<TraceLine> {
    let rest = line.trim_end().strip_prefix("trace id ")?;
    let mut it = rest.splitn(5, ' ');
    let (id, family, table, chain, body) =
        (it.next()?, it.next()?, it.next()?, it.next()?, it.next()?);
    let at = ChainRef {
        family: family.to_string(),
        table: table.to_string(),
        chain: chain.to_string(),
    };
    let id = id.to_string();
    if let Some(packet) = body.strip_prefix("packet: ") {
        let words: Vec<&str> = packet.split_whitespace().collect();
        let after = |a: &str, b: &str| {
            words
                .windows(3)
                .find(|w| w[0] == a && w[1] == b)
                .map(|w| w[2])
        };
        let (source, dest) = match (after("ip", "saddr"), after("ip", "daddr")) {
            (Some(s), Some(d)) => (s, d),
            _ => (after("ip6", "saddr")?, after("ip6", "daddr")?),
        };
        return Some(TraceLine::Packet {
            id,
            at,
            source: source.parse().ok()?,
            dest: dest.parse().ok()?,
            port: after("tcp", "dport")?.parse().ok()?,
        });
    }
    if let Some(policy) = body.strip_prefix("policy ") {
        return Some(TraceLine::Policy {
            id,
            at,
            policy: policy.trim().to_string(),
        });
    }
    if let Some(r) = body.strip_prefix("unknown rule handle ") {
        // The monitor did not know the rule (added after it started); the
        // caller reads it back by handle.
        let (handle, verdict) = r.split_once(" (verdict ")?;
        return Some(TraceLine::Rule {
            id,
            at,
            handle: handle.trim().parse().ok(),
            text: None,
            verdict: verdict.strip_suffix(')')?.to_string(),
        });
    }
    let (text, verdict) = body.strip_prefix("rule ")?.rsplit_once(" (verdict ")?;
    let (text, handle) = match text.rsplit_once(" # handle ") {
        Some((t, h)) => (t, h.trim().parse().ok()),
        None => (text, None),
    };
    Some(TraceLine::Rule {
        id,
        at,
        handle,
        text: Some(text.trim().to_string()),
        verdict: verdict.strip_suffix(')')?.to_string(),
    })
}

/// Seconds since the epoch, now.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The legacy iptables tables loaded in this network namespace, whose rules
/// nftables tracing cannot see.
fn legacy_tables() -> Vec<String> {
    let mut names = Vec::new();
    for (file, tool) in [
        ("/proc/net/ip_tables_names", "iptables"),
        ("/proc/net/ip6_tables_names", "ip6tables"),
    ] {
        if let Ok(text) = std::fs::read_to_string(file) {
            names.extend(
                text.split_whitespace()
                    .map(|t| format!("{tool}-legacy {t}")),
            );
        }
    }
    names
}

/// Deletes our expired trace tables (left by an agent that was killed) and
/// returns the unexpired ones with their expiry, for the caller to delete
/// when they expire. Errors (no nft, not permitted) leave nothing to do.
pub async fn sweep(now_unix: u64) -> Vec<(String, u64)> {
    let Some(bin) = nft_path() else {
        return Vec::new();
    };
    let Ok(listing) = nft(&bin, &["list", "tables", "inet"], None).await else {
        return Vec::new();
    };
    let mut pending = Vec::new();
    for name in listing
        .lines()
        .filter_map(|l| l.trim().strip_prefix("table inet "))
    {
        let Some(expiry) = table_expiry(name) else {
            continue;
        };
        if expiry <= now_unix {
            match nft(&bin, &["delete", "table", "inet", name], None).await {
                Ok(_) => tracing::info!(table = name, "deleted an expired trace table"),
                Err(e) => {
                    tracing::warn!(table = name, error = %e, "could not delete an expired trace table")
                }
            }
        } else {
            pending.push((name.to_string(), expiry));
        }
    }
    pending
}

/// Deletes table `inet name` when its expiry passes (now, if it has).
pub async fn delete_at(name: String, expiry_unix: u64) {
    let wait = expiry_unix.saturating_sub(unix_now());
    tokio::time::sleep(Duration::from_secs(wait)).await;
    if let Some(bin) = nft_path() {
        let _ = nft(&bin, &["delete", "table", "inet", &name], None).await;
    }
}

/// Every `portcall_trace_*` table in this network namespace, deleted
/// whatever its expiry: `portcall agent --cleanup`, for a service
/// manager to run after the agent stopped (nothing else of ours may be
/// running then). Returns the names deleted.
pub async fn delete_every_table() -> Result<Vec<String>, TraceError> {
    let bin = nft_path().ok_or(TraceError::NoNft)?;
    let listing = nft(&bin, &["list", "tables", "inet"], None)
        .await
        .map_err(|e| refusal(&e))?;
    let mut deleted = Vec::new();
    for name in listing
        .lines()
        .filter_map(|l| l.trim().strip_prefix("table inet "))
        .filter(|n| table_expiry(n).is_some())
    {
        nft(&bin, &["delete", "table", "inet", name], None)
            .await
            .map_err(|e| refusal(&e))?;
        deleted.push(name.to_string());
    }
    Ok(deleted)
}

/// A round's tracing, running.
#[derive(Debug)]
pub struct Tracer {
    nft: PathBuf,
    table: String,
    log: Arc<Mutex<TraceLog>>,
    /// `netlink` or `nft monitor text`: see [`Tracer::events`].
    events: &'static str,
    monitor: Mutex<Option<TextMonitor>>,
    /// Set to stop the netlink reader.
    netlink: Option<Arc<AtomicBool>>,
    note: Option<String>,
    /// Every `address . port` pair the table marks, arriving or leaving
    /// (bounded by [`MAX_TRACED_PAIRS`]).
    traced: Mutex<std::collections::HashSet<(IpAddr, u16)>>,
    /// Every forwarded flow the table marks (counted against the same
    /// bound); the forward chain exists once this is not empty.
    forwarded: Mutex<std::collections::HashSet<ForwardTriple>>,
    owned: Arc<OwnedTables>,
    /// The table counts TCP quality samples' SYNs.
    pub counts_samples: bool,
}

/// The `nft monitor` process and the `timeout` wrapper around it, in a
/// process group of their own. Killing only the wrapper (what
/// `kill_on_drop` does) leaves `nft` running under init, holding its
/// network namespace alive, once per round; so the whole group is ended,
/// when tracing stops and when the monitor is dropped.
#[derive(Debug)]
struct Monitor {
    child: Child,
    group: Option<nix::unistd::Pid>,
}

impl Monitor {
    fn spawn(cmd: &mut Command) -> std::io::Result<Monitor> {
        cmd.process_group(0);
        let child = cmd.spawn()?;
        let group = child
            .id()
            .and_then(|id| i32::try_from(id).ok())
            .map(nix::unistd::Pid::from_raw);
        Ok(Monitor { child, group })
    }

    fn signal_group(&mut self) {
        if let Some(group) = self.group.take() {
            let _ = nix::sys::signal::killpg(group, nix::sys::signal::Signal::SIGKILL);
        }
    }

    async fn kill(mut self) {
        self.signal_group();
        let _ = self.child.kill().await;
    }
}

/// How a round's trace events are read.
#[derive(Debug)]
enum Reader {
    /// The kernel's netlink messages (`trace_netlink`), subscribed before
    /// the table exists.
    Netlink(Option<trace_netlink::Subscription>),
    /// `nft -a monitor`, with a watch that turns true once it is seen to
    /// receive our table's events, and its standard error.
    Text(Box<TextMonitor>),
}

/// The fallback reader: `nft -a monitor` parsed line by line.
#[derive(Debug)]
struct TextMonitor {
    monitor: Monitor,
    ready: tokio::sync::watch::Receiver<bool>,
    stderr: Option<tokio::process::ChildStderr>,
}

impl Reader {
    /// Waits until events of `table` are read: at once for netlink; for
    /// the monitor, which subscribes asynchronously, touching the table
    /// until its lines show it receives events (or about 2 s).
    async fn ready(&mut self, bin: &Path, table: &str) -> Result<(), TraceError> {
        let Reader::Text(m) = self else {
            return Ok(());
        };
        for i in 0..20 {
            if timeout(Duration::from_millis(100), m.ready.wait_for(|r| *r))
                .await
                .is_ok_and(|r| r.is_ok())
            {
                return Ok(());
            }
            let _ = nft(
                bin,
                &["add", "chain", "inet", table, &format!("sync{i}")],
                None,
            )
            .await;
        }
        let mut why = String::new();
        if let Some(mut err) = m.stderr.take() {
            use tokio::io::AsyncReadExt;
            let mut buf = Vec::new();
            let _ = timeout(Duration::from_millis(200), err.read_to_end(&mut buf)).await;
            why = String::from_utf8_lossy(&buf).trim().to_string();
        }
        Err(if why.is_empty() {
            TraceError::NoEvents
        } else {
            refusal(&why)
        })
    }
}

impl TextMonitor {
    async fn kill(self) {
        self.monitor.kill().await;
    }
}

impl Monitor {
    /// Starts `nft -a monitor` for `table`, its lines parsed into `log`.
    fn start(
        bin: &Path,
        table: &str,
        ttl: Duration,
        log: &Arc<Mutex<TraceLog>>,
    ) -> Result<TextMonitor, TraceError> {
        // The monitor may not outlive the round even if we die: `timeout`
        // ends it at the TTL (and kill_on_drop when we drop it).
        let bound = format!("{}s", ttl.as_secs() + 2);
        let mut cmd = match find_tool("timeout") {
            Some(t) => {
                let mut c = Command::new(t);
                c.args(["-k", "1", &bound]).arg(bin);
                c
            }
            None => Command::new(bin),
        };
        cmd.args(["-a", "monitor"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut monitor = Monitor::spawn(&mut cmd).map_err(TraceError::Monitor)?;
        let stdout = monitor
            .child
            .stdout
            .take()
            .ok_or(TraceError::MonitorOutput)?;
        let stderr = monitor.child.stderr.take();
        let (ready_tx, ready) = tokio::sync::watch::channel(false);
        let (log, table) = (log.clone(), table.to_string());
        tokio::spawn(async move {
            let mut lines = BufReader::new(stdout).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                if !*ready_tx.borrow() && line.contains(&table) && !line.starts_with("trace") {
                    let _ = ready_tx.send(true);
                }
                if let Some(t) = parse_line(&line) {
                    log.lock().unwrap_or_else(|e| e.into_inner()).record(t);
                }
            }
        });
        Ok(TextMonitor {
            monitor,
            ready,
            stderr,
        })
    }
}

impl Drop for Monitor {
    fn drop(&mut self) {
        self.signal_group();
    }
}

impl Tracer {
    /// Starts tracing `scope` for `ttl`: the monitor first, then the table,
    /// and returns once the monitor is seen to receive events. The error is
    /// the reason tracing is not possible here, in words for the report.
    /// The table is listed in `owned` until [`Tracer::stop`] deletes it.
    pub async fn start(
        scope: &TraceScope,
        ttl: Duration,
        owned: &Arc<OwnedTables>,
    ) -> Result<Tracer, TraceError> {
        let Some(bin) = nft_path() else {
            return Err(TraceError::NoNft);
        };
        let table = table_name(&scope.round, scope.expires_unix);
        let log = Arc::new(Mutex::new(TraceLog::new(&table)));
        // The kernel's own events where this process may read them; `nft
        // -a monitor`'s text where it may not.
        let mut reader = match trace_netlink::subscribe() {
            Ok(sub) => Reader::Netlink(Some(sub)),
            Err(e) => {
                tracing::info!(error = %e, "no netlink trace events here; reading `nft -a monitor` instead");
                Reader::Text(Box::new(Monitor::start(&bin, &table, ttl, &log)?))
            }
        };
        // Listed before it exists: dropped from here on (the coordinator
        // went away mid-`prepare`), the guard deletes it.
        owned.add(&table);
        let mut unfinished = Unfinished {
            owned: owned.clone(),
            nft: bin.clone(),
            table: Some(table.clone()),
        };
        let made = match nft(&bin, &["-f", "-"], Some(&ruleset(scope, ttl))).await {
            Err(e) => Err(refusal(&e)),
            Ok(_) => reader.ready(&bin, &table).await,
        };
        if let Err(e) = made {
            if let Reader::Text(m) = reader {
                (*m).kill().await;
            }
            let _ = nft(&bin, &["delete", "table", "inet", &table], None).await;
            unfinished.table = None;
            owned.forget(&table);
            return Err(e);
        }
        if scope.count_samples {
            super::syn_samples::add(&bin, &table, ttl).await;
        }
        let (monitor, netlink) = match reader {
            Reader::Text(m) => (Some(*m), None),
            Reader::Netlink(sub) => {
                let stop = Arc::new(AtomicBool::new(false));
                let log = log.clone();
                let until = std::time::Instant::now() + ttl + Duration::from_secs(2);
                sub.expect("subscribed above")
                    .read(stop.clone(), until, move |l| {
                        log.lock().unwrap_or_else(|e| e.into_inner()).record(l);
                    })
                    .map_err(TraceError::Monitor)?;
                (None, Some(stop))
            }
        };
        let legacy = legacy_tables();
        let note = (!legacy.is_empty()).then(|| {
            format!(
                "legacy iptables tables are loaded ({}): their rules are invisible to nftables tracing",
                legacy.join(", ")
            )
        });
        unfinished.table = None;
        Ok(Tracer {
            nft: bin,
            table,
            log,
            events: if netlink.is_some() {
                "netlink"
            } else {
                "nft monitor text"
            },
            monitor: Mutex::new(monitor),
            netlink,
            note,
            counts_samples: scope.count_samples,
            traced: Mutex::new(
                scope
                    .inbound
                    .iter()
                    .chain(&scope.outbound)
                    .copied()
                    .collect(),
            ),
            forwarded: Mutex::default(),
            owned: owned.clone(),
        })
    }

    /// Marks forwarded packets of more flows (`source . destination .
    /// port`), their elements timing out `left` from now: paths between
    /// other plan hosts that may cross this one. The forward chain is
    /// made with the first ones. Past [`MAX_TRACED_PAIRS`] in all (arriving,
    /// leaving and forwarded) none is added and the error says so.
    /// Returns how many forwarded flows the table marks.
    pub async fn add_forward(
        &self,
        triples: &[ForwardTriple],
        left: Duration,
    ) -> Result<usize, String> {
        let (new, total, create) = {
            let done = self.forwarded.lock().unwrap_or_else(|e| e.into_inner());
            let mut new: Vec<ForwardTriple> = triples
                .iter()
                .filter(|(a, d, _)| a.is_ipv6() == d.is_ipv6())
                .filter(|t| !done.contains(t))
                .copied()
                .collect();
            new.sort_unstable();
            new.dedup();
            let inbound = self.traced.lock().unwrap_or_else(|e| e.into_inner()).len();
            let total = inbound + done.len() + new.len();
            (new, total, done.is_empty())
        };
        if new.is_empty() {
            return Ok(self
                .forwarded
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .len());
        }
        if let Some(why) = too_large(total) {
            return Err(why);
        }
        let input = forward_elements(&self.table, &new, left, create);
        nft(&self.nft, &["-f", "-"], Some(&input)).await?;
        let mut done = self.forwarded.lock().unwrap_or_else(|e| e.into_inner());
        done.extend(new);
        Ok(done.len())
    }

    /// Marks packets arriving from more `(source address, port)` pairs,
    /// their elements timing out `left` from now (the round's TTL left):
    /// the addresses the plan does not name (a dual-stack source's other
    /// family, a source named by DNS). Pairs already marked are skipped;
    /// past [`MAX_TRACED_PAIRS`] in all none is added and the error says
    /// so. Returns how many pairs the table marks.
    pub async fn add_inbound(
        &self,
        pairs: &[(IpAddr, u16)],
        left: Duration,
    ) -> Result<usize, String> {
        let (new, total) = {
            let traced = self.traced.lock().unwrap_or_else(|e| e.into_inner());
            let mut new: Vec<(IpAddr, u16)> = pairs
                .iter()
                .filter(|p| !traced.contains(p))
                .copied()
                .collect();
            new.sort_unstable();
            new.dedup();
            let total = traced.len() + new.len();
            (new, total)
        };
        if new.is_empty() {
            return Ok(total);
        }
        if let Some(why) = too_large(total) {
            return Err(why);
        }
        let input = add_elements(&self.table, &new, left);
        nft(&self.nft, &["-f", "-"], Some(&input)).await?;
        let mut traced = self.traced.lock().unwrap_or_else(|e| e.into_inner());
        traced.extend(new);
        Ok(traced.len())
    }

    /// Where this tracer reads its events: `netlink` (the kernel's trace
    /// messages) or `nft monitor text` (the fallback).
    pub fn events(&self) -> &'static str {
        self.events
    }

    /// The table's name.
    pub fn table(&self) -> &str {
        &self.table
    }

    /// What was traced so far; rules the monitor printed as unknown (added
    /// after it started) are read back by handle.
    pub async fn evidence(&self) -> TraceEvidence {
        // Let the monitor's last lines (the round's final packets) through
        // the pipe before reading the log.
        tokio::time::sleep(Duration::from_millis(50)).await;
        let mut flows = self.log.lock().unwrap_or_else(|e| e.into_inner()).flows();
        for f in &mut flows {
            let Some(stop) = f.stop.as_mut() else {
                continue;
            };
            if let (None, Some(handle), None) = (&stop.text, stop.handle, &stop.policy) {
                stop.text = self.rule_text(stop, handle).await;
            }
        }
        TraceEvidence {
            state: TraceState::Traced,
            reason: self.note.clone(),
            flows,
        }
    }

    async fn rule_text(&self, stop: &TraceStop, handle: u64) -> Option<String> {
        let (family, table) = stop.table.split_once(' ')?;
        let listing = nft(
            &self.nft,
            // Stateless: a rule's text without its counters' values, so
            // the same rule reads the same in every round (a diff or a
            // what-if compares it).
            &["-a", "-s", "list", "chain", family, table, &stop.chain],
            None,
        )
        .await
        .ok()?;
        let suffix = format!(" # handle {handle}");
        listing
            .lines()
            .find_map(|l| l.trim().strip_suffix(suffix.as_str()))
            .map(|t| t.trim().to_string())
    }

    /// Ends tracing: the monitor stops and the table is deleted.
    pub async fn stop(&self) {
        let child = self
            .monitor
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(m) = child {
            m.kill().await;
        }
        if let Some(stop) = &self.netlink {
            stop.store(true, Ordering::SeqCst);
        }
        if let Err(e) = nft(&self.nft, &["delete", "table", "inet", &self.table], None).await
            && !e.contains("No such file")
        {
            tracing::warn!(table = %self.table, error = %e, "could not delete the trace table");
            return;
        }
        self.owned.forget(&self.table);
    }
}

/// The report's words for why `nft` refused.
fn refusal(stderr: &str) -> TraceError {
    let nft = stderr.lines().next().unwrap_or_default().to_owned();
    if stderr.contains("Operation not permitted") || stderr.contains("Permission denied") {
        TraceError::NotPermitted { nft }
    } else if stderr.contains("Protocol not supported")
        || stderr.contains("No such file or directory")
    {
        TraceError::NoKernelSupport { nft }
    } else {
        TraceError::Refused { nft }
    }
}

/// Why rule tracing is not possible on this host, in words for the report
/// (each cause once: a variant's words include what nft said).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TraceError {
    /// The nft command is not installed.
    #[error("no nftables: the nft command is not installed")]
    NoNft,
    /// `nft monitor` could not be started.
    #[error("could not run nft monitor: {0}")]
    Monitor(std::io::Error),
    /// `nft monitor` started without an output to read.
    #[error("nft monitor has no stdout")]
    MonitorOutput,
    /// nft lacks the privilege to add the trace table.
    #[error("not permitted: rule tracing needs CAP_NET_ADMIN (nft: {nft})")]
    NotPermitted {
        /// nft's first line of error.
        nft: String,
    },
    /// The kernel has no nftables.
    #[error("no nftables in this kernel (nft: {nft})")]
    NoKernelSupport {
        /// nft's first line of error.
        nft: String,
    },
    /// nft refused the trace table for another reason.
    #[error("nft refused the trace table: {nft}")]
    Refused {
        /// nft's first line of error.
        nft: String,
    },
    /// The monitor saw none of the trace table's events in time.
    #[error("nft monitor received no events within 2 s")]
    NoEvents,
}

/// An unavailable trace, for the evidence.
pub fn unavailable(reason: String) -> TraceEvidence {
    TraceEvidence {
        state: TraceState::Unavailable,
        reason: Some(reason),
        flows: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TABLE: &str = "portcall_trace_ab12_1999999999";

    /// Lines copied from `nft -a monitor` (nftables 1.0.6) while a SYN was
    /// dropped by a rule, and one by a chain's policy.
    const DROP_BY_RULE: &str = "\
add table inet portcall_trace_ab12_1999999999 # handle 3
trace id 22dcab81 inet portcall_trace_ab12_1999999999 pre packet: iif \"eth0\" ether saddr 3a:ee:ad:b0:89:cc ether daddr ae:7b:3e:a5:37:63 ip saddr 198.18.0.1 ip daddr 198.18.0.2 ip dscp cs0 ip ecn not-ect ip ttl 64 ip id 22448 ip protocol tcp ip length 60 tcp sport 35764 tcp dport 9443 tcp flags == syn tcp window 64240 
trace id 22dcab81 inet portcall_trace_ab12_1999999999 pre unknown rule handle 4 (verdict continue)
trace id 22dcab81 inet portcall_trace_ab12_1999999999 pre policy accept 
trace id 22dcab81 inet filter input packet: iif \"eth0\" ether saddr 3a:ee:ad:b0:89:cc ether daddr ae:7b:3e:a5:37:63 ip saddr 198.18.0.1 ip daddr 198.18.0.2 ip dscp cs0 ip ecn not-ect ip ttl 64 ip id 22448 ip protocol tcp ip length 60 tcp sport 35764 tcp dport 9443 tcp flags == syn tcp window 64240 
trace id 22dcab81 inet filter input rule tcp dport 9443 drop comment \"the culprit\" # handle 2 (verdict drop)
trace id 81a69835 inet portcall_trace_ab12_1999999999 pre packet: iif \"eth0\" ip6 saddr 2001:2::1 ip6 daddr 2001:2::2 ip6 dscp cs0 ip6 ecn not-ect ip6 hoplimit 64 ip6 nexthdr tcp ip6 length 40 tcp sport 35766 tcp dport 9443 tcp flags == syn tcp window 64240 
trace id 81a69835 inet filter input packet: iif \"eth0\" ip6 saddr 2001:2::1 ip6 daddr 2001:2::2 tcp sport 35766 tcp dport 9443 tcp flags == syn
trace id 81a69835 inet filter input policy drop 
trace id 99aa0000 inet portcall_trace_ab12_1999999999 out packet: oif \"eth0\" ip saddr 198.18.0.2 ip daddr 198.18.0.7 tcp sport 40000 tcp dport 5432 tcp flags == syn
trace id 99aa0000 ip filter OUTPUT rule meta l4proto tcp tcp dport 5432 counter packets 1 bytes 60 reject # handle 7 (verdict drop)
trace id 77770000 inet portcall_trace_ab12_1999999999 pre packet: iif \"eth0\" ip saddr 198.18.0.1 ip daddr 198.18.0.2 tcp sport 35800 tcp dport 8080 tcp flags == syn
trace id 77770000 inet filter input rule tcp dport 8080 accept # handle 9 (verdict accept)
trace id 55550000 inet filter input unknown rule handle 12 (verdict drop)
";

    #[test]
    fn names_carry_the_round_and_expiry_and_only_ours_parse() {
        assert_eq!(
            table_name("ab12ff", 1_999_999_999),
            "portcall_trace_ab12ff_1999999999"
        );
        assert_eq!(
            table_name(&"a".repeat(64), 7),
            format!("portcall_trace_{}_7", "a".repeat(16))
        );
        assert_eq!(table_expiry(TABLE), Some(1_999_999_999));
        assert_eq!(table_expiry("filter"), None);
        assert_eq!(table_expiry("portcall_trace_zz_5"), None);
        assert_eq!(table_expiry("portcall_trace_ab_x"), None);
    }

    #[test]
    fn lines_parse_into_packets_rules_and_policies() {
        let lines: Vec<TraceLine> = DROP_BY_RULE.lines().filter_map(parse_line).collect();
        assert_eq!(lines.len(), 13, "{lines:#?}");
        assert_eq!(
            lines[0],
            TraceLine::Packet {
                id: "22dcab81".into(),
                at: ChainRef {
                    family: "inet".into(),
                    table: TABLE.into(),
                    chain: "pre".into()
                },
                source: "198.18.0.1".parse().unwrap(),
                dest: "198.18.0.2".parse().unwrap(),
                port: 9443,
            }
        );
        assert_eq!(
            lines[1],
            TraceLine::Rule {
                id: "22dcab81".into(),
                at: ChainRef {
                    family: "inet".into(),
                    table: TABLE.into(),
                    chain: "pre".into()
                },
                handle: Some(4),
                text: None,
                verdict: "continue".into(),
            }
        );
        assert_eq!(
            lines[4],
            TraceLine::Rule {
                id: "22dcab81".into(),
                at: ChainRef {
                    family: "inet".into(),
                    table: "filter".into(),
                    chain: "input".into()
                },
                handle: Some(2),
                text: Some("tcp dport 9443 drop comment \"the culprit\"".into()),
                verdict: "drop".into(),
            }
        );
        assert!(matches!(&lines[7], TraceLine::Policy { policy, .. } if policy == "drop"));
        assert_eq!(parse_line("add table inet x"), None);
        assert_eq!(parse_line("trace id 1 inet"), None);
    }

    #[test]
    fn the_log_keeps_the_first_stop_of_each_flow_and_ignores_our_own_rules() {
        let mut log = TraceLog::new(TABLE);
        for l in DROP_BY_RULE.lines().filter_map(parse_line) {
            log.record(l);
        }
        let flows = log.flows();
        let summary: Vec<String> = flows
            .iter()
            .map(|f| {
                format!(
                    "{:?} {} -> {}:{} x{} {:?}",
                    f.direction, f.source, f.dest, f.port, f.packets, f.stop
                )
            })
            .collect();
        expect_test::expect![[r#"
            [
                "In 198.18.0.1 -> 198.18.0.2:8080 x1 None",
                "In 198.18.0.1 -> 198.18.0.2:9443 x1 Some(TraceStop { table: \"inet filter\", chain: \"input\", handle: Some(2), text: Some(\"tcp dport 9443 drop comment \\\"the culprit\\\"\"), policy: None })",
                "In 2001:2::1 -> 2001:2::2:9443 x1 Some(TraceStop { table: \"inet filter\", chain: \"input\", handle: None, text: None, policy: Some(\"drop\") })",
                "Out 198.18.0.2 -> 198.18.0.7:5432 x1 Some(TraceStop { table: \"ip filter\", chain: \"OUTPUT\", handle: Some(7), text: Some(\"meta l4proto tcp tcp dport 5432 counter packets 1 bytes 60 reject\"), policy: None })",
            ]
        "#]]
        .assert_debug_eq(&summary);
    }

    #[test]
    fn the_ruleset_marks_only_the_scope_and_times_out_with_the_round() {
        let scope = TraceScope {
            round: "ab12".into(),
            expires_unix: 1_999_999_999,
            inbound: vec![
                ("198.18.0.1".parse().unwrap(), 9443),
                ("2001:2::1".parse().unwrap(), 9443),
                ("198.18.0.1".parse().unwrap(), 9443),
            ],
            outbound: vec![],
            count_samples: false,
        };
        expect_test::expect![[r#"
            table inet portcall_trace_ab12_1999999999 {
              set in4 {
                type ipv4_addr . inet_service
                flags timeout
                elements = { 198.18.0.1 . 9443 timeout 31s }
              }
              set in6 {
                type ipv6_addr . inet_service
                flags timeout
                elements = { 2001:2::1 . 9443 timeout 31s }
              }
              set out4 {
                type ipv4_addr . inet_service
                flags timeout
              }
              set out6 {
                type ipv6_addr . inet_service
                flags timeout
              }
              chain pre {
                type filter hook prerouting priority -500; policy accept;
                ip saddr . tcp dport @in4 meta nftrace set 1
                ip6 saddr . tcp dport @in6 meta nftrace set 1
              }
              chain out {
                type filter hook output priority -500; policy accept;
                ip daddr . tcp dport @out4 meta nftrace set 1
                ip6 daddr . tcp dport @out6 meta nftrace set 1
              }
            }
        "#]]
        .assert_eq(&ruleset(&scope, Duration::from_millis(30_500)));
    }

    #[test]
    fn more_sources_are_added_to_the_arriving_set_of_their_family() {
        let pairs = [
            ("198.18.0.1".parse().unwrap(), 7101),
            ("2001:2:0:1::10".parse().unwrap(), 7101),
            ("2001:2:0:1::10".parse().unwrap(), 7102),
        ];
        expect_test::expect![[r#"
            add element inet portcall_trace_ab12_1999999999 in4 { 198.18.0.1 . 7101 timeout 3s }
            add element inet portcall_trace_ab12_1999999999 in6 { 2001:2:0:1::10 . 7101 timeout 3s, 2001:2:0:1::10 . 7102 timeout 3s }
        "#]]
        .assert_eq(&add_elements(TABLE, &pairs, Duration::from_millis(2_100)));
        assert_eq!(add_elements(TABLE, &[], Duration::from_secs(3)), "");
    }

    #[test]
    fn forwarded_flows_get_a_forward_hook_chain_once_and_elements_by_family() {
        let triples = [
            (
                "198.18.1.20".parse().unwrap(),
                "198.18.2.40".parse().unwrap(),
                7101,
            ),
            (
                "2001:2:0:1::20".parse().unwrap(),
                "2001:2:0:2::40".parse().unwrap(),
                7101,
            ),
            // Mixed families never match a packet: left out.
            (
                "198.18.1.20".parse().unwrap(),
                "2001:2:0:2::40".parse().unwrap(),
                7101,
            ),
        ];
        expect_test::expect![[r#"
            add set inet portcall_trace_ab12_1999999999 transit4 { type ipv4_addr . ipv4_addr . inet_service; flags timeout; }
            add set inet portcall_trace_ab12_1999999999 transit6 { type ipv6_addr . ipv6_addr . inet_service; flags timeout; }
            add chain inet portcall_trace_ab12_1999999999 transit { type filter hook forward priority -500; policy accept; }
            add rule inet portcall_trace_ab12_1999999999 transit ip saddr . ip daddr . tcp dport @transit4 meta nftrace set 1
            add rule inet portcall_trace_ab12_1999999999 transit ip6 saddr . ip6 daddr . tcp dport @transit6 meta nftrace set 1
            add element inet portcall_trace_ab12_1999999999 transit4 { 198.18.1.20 . 198.18.2.40 . 7101 timeout 3s }
            add element inet portcall_trace_ab12_1999999999 transit6 { 2001:2:0:1::20 . 2001:2:0:2::40 . 7101 timeout 3s }
        "#]]
        .assert_eq(&forward_elements(
            TABLE,
            &triples,
            Duration::from_millis(2_100),
            true,
        ));
        // Later flows: elements only.
        expect_test::expect![[r#"
            add element inet portcall_trace_ab12_1999999999 transit4 { 198.18.1.20 . 198.18.2.40 . 7101 timeout 3s }
        "#]]
        .assert_eq(&forward_elements(
            TABLE,
            &triples[..1],
            Duration::from_millis(2_100),
            false,
        ));
    }

    #[test]
    fn a_round_too_large_to_trace_says_so() {
        assert_eq!(too_large(MAX_TRACED_PAIRS), None);
        let why = too_large(980).unwrap();
        assert!(
            why.contains("980 address-port pairs, more than 512"),
            "{why}"
        );
    }

    #[test]
    fn refusals_are_named() {
        assert!(
            refusal("Error: Could not process rule: Operation not permitted")
                .to_string()
                .starts_with("not permitted: rule tracing needs CAP_NET_ADMIN")
        );
        assert!(
            refusal("netlink: Error: cache initialization failed: Protocol not supported")
                .to_string()
                .starts_with("no nftables in this kernel")
        );
    }
}
