//! [`ProbeConfig`]: everything that shapes a sweep, with its defaults, and
//! the one place a plan host's probe settings are read from the plan.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use crate::plan::Plan;
use crate::probe::tls::TlsOptions;
use crate::probe::ttl_walk::WalkConfig;

/// Everything that shapes a sweep. Build it with struct update syntax from
/// [`ProbeConfig::default`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeConfig {
    /// Deadline of one TCP connect attempt (`timeout_ms`); with `adaptive`,
    /// the upper bound of the deadline derived from measured round trips.
    pub connect_timeout: Duration,
    /// Deadline of the TLS handshake, after TCP connected.
    pub tls_timeout: Duration,
    /// Deadline of the caller's [`Exchange`], after connect (and TLS).
    pub exchange_timeout: Duration,
    /// Extra attempts for targets that stayed silent. Other outcomes are
    /// final at once.
    pub retries: u32,
    /// Least time between paced retries to a host that sends ICMP errors
    /// (and between the starts of two attempts on one of its targets).
    /// Linux lets a host send about one ICMP error per second to each peer
    /// (after a burst of six), so a second apart gives each retry a fresh
    /// token. Other silent targets are retried as soon as their attempt's
    /// deadline has passed.
    pub retry_spacing: Duration,
    /// How much longer a sweep may take to pace retries to a host that has
    /// been seen rejecting with ICMP: when all of that host's unfinished
    /// targets fit in this window at one per `retry_spacing`, its retries
    /// are paced so that a handful of rejected ports are each seen as
    /// `unreachable` rather than drowned in its rate limit; otherwise they
    /// go at once.
    pub icmp_pacing_window: Duration,
    /// Most attempts in flight at once. Each holds one socket. When the
    /// process or system runs out of descriptors first (EMFILE, ENFILE),
    /// the sweep narrows itself to what fits and widens again slowly, so a
    /// value above the open-file limit costs speed, never correctness.
    pub concurrency: usize,
    /// Local address to bind probes to, so the target sees this source;
    /// a target of the other family is a `local-error`.
    pub source: Option<IpAddr>,
    /// This host's own addresses, when `source` is not given: each probe
    /// binds to the first of its target's family, and when there is none
    /// the kernel chooses (a dual-stack host the plan names by one
    /// address still reaches targets of the other family).
    pub sources: Vec<IpAddr>,
    /// How TLS targets are verified.
    pub tls: TlsOptions,
    /// Deadline for resolving each DNS name.
    pub resolve_timeout: Duration,
    /// How long a target may keep failing locally (no descriptor, no
    /// ephemeral port) before it is reported as `local-error`.
    pub local_error_budget: Duration,
    /// When TCP opens but the TLS handshake stalls, try once more with this
    /// maximum segment size; success there (and a control try that stalls
    /// again) is a path-MTU black hole.
    /// `None` turns the second try off.
    pub mtu_retry_mss: Option<u32>,
    /// Walk the TTL toward targets that stayed silent
    /// ([`crate::probe::ttl_walk`]), to name the last router before the silence.
    /// `None` turns walks off.
    pub ttl_walk: Option<WalkConfig>,
    /// Most attempts in flight at once to one destination address, so that
    /// a sweep never queues more handshakes at one server than it can take.
    /// A host whose TLS handshakes stall while others succeed gets half as
    /// many (down to one), and one more back with each handshake that
    /// succeeds.
    pub per_host_concurrency: usize,
    /// Derive each connect deadline from the round trips measured to the
    /// target's address ([`crate::probe::rtt`]), within `min_rtt_timeout ..=
    /// connect_timeout`. Off: every attempt waits `connect_timeout`.
    pub adaptive: bool,
    /// The least an adaptive connect deadline may be.
    pub min_rtt_timeout: Duration,
    /// Most extra attempts for a silent target whose host answers other
    /// ports (or that answered itself before): silence there may be packet
    /// loss as well as a firewall's drop, and a few more tries at the
    /// host's adaptive deadline tell them apart; how many of these a
    /// target gets follows the loss the sweep has shown ([`super::loss`]).
    /// Rounds ([`Self::for_plan_host`]) use [`ROUND_LOSS_RETRIES`]; 0 for
    /// agentless sweeps.
    pub loss_retries: u32,
    /// Where in the destination addresses the sweep starts
    /// ([`crate::probe::spread`]): sources of one round given different offsets
    /// start on different hosts.
    pub spread_offset: u64,
}

/// The default of [`ProbeConfig::per_host_concurrency`]: a single-threaded
/// TLS server taking a few milliseconds per handshake clears this many
/// well within a one-second TLS deadline.
pub const DEFAULT_PER_HOST: usize = 64;

/// [`ProbeConfig::loss_retries`] in rounds: with 30% of packets lost each
/// way a handshake gets through about every other try, and an open port
/// then stays silent through all of `1 + retries + 10` tries well under
/// once in a thousand rounds.
pub const ROUND_LOSS_RETRIES: u32 = 10;

impl ProbeConfig {
    /// The address a probe of `addr` binds: `source`, else the first of
    /// `sources` of the target's family; `None` lets the kernel choose.
    pub(crate) fn source_for(&self, addr: SocketAddr) -> Option<IpAddr> {
        self.source.or_else(|| {
            self.sources
                .iter()
                .copied()
                .find(|s| s.is_ipv4() == addr.is_ipv4())
        })
    }
}

impl Default for ProbeConfig {
    fn default() -> ProbeConfig {
        ProbeConfig {
            connect_timeout: Duration::from_millis(1000),
            tls_timeout: Duration::from_millis(1000),
            exchange_timeout: Duration::from_millis(1000),
            retries: 1,
            retry_spacing: Duration::from_millis(1000),
            icmp_pacing_window: Duration::from_secs(5),
            concurrency: 4096,
            source: None,
            sources: Vec::new(),
            tls: TlsOptions::default(),
            resolve_timeout: Duration::from_secs(5),
            local_error_budget: Duration::from_secs(30),
            mtu_retry_mss: Some(536),
            ttl_walk: None,
            per_host_concurrency: DEFAULT_PER_HOST,
            adaptive: true,
            min_rtt_timeout: Duration::from_millis(100),
            spread_offset: 0,
            loss_retries: 0,
        }
    }
}

/// What a caller bounds its sweeps by, beside the plan: the agent's
/// `--probe-concurrency` and `--probe-per-host` limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SweepLimits {
    /// [`ProbeConfig::concurrency`].
    pub concurrency: usize,
    /// [`ProbeConfig::per_host_concurrency`] (at least one).
    pub per_host: usize,
}

impl Default for SweepLimits {
    fn default() -> SweepLimits {
        let d = ProbeConfig::default();
        SweepLimits {
            concurrency: d.concurrency,
            per_host: d.per_host_concurrency,
        }
    }
}

impl ProbeConfig {
    /// The sweeps of plan host `host`, the one reading of a plan's probe
    /// settings: `timeout_ms` for every phase's deadline, `retries`,
    /// `adaptive`; the host's place among the plan's hosts as the spread
    /// offset (the sources of a mesh start one host apart); TTL walks
    /// toward silent targets; and `sources`, the host's addresses that are
    /// this machine's (each probe binds the one of its target's family).
    /// A host not in the plan starts at offset 0.
    pub fn for_plan_host(
        plan: &Plan,
        host: &str,
        sources: Vec<IpAddr>,
        limits: SweepLimits,
    ) -> ProbeConfig {
        let d = &plan.defaults;
        let per_attempt = Duration::from_millis(d.timeout_ms);
        ProbeConfig {
            connect_timeout: per_attempt,
            tls_timeout: per_attempt,
            exchange_timeout: per_attempt,
            retries: d.retries,
            adaptive: d.adaptive,
            concurrency: limits.concurrency,
            per_host_concurrency: limits.per_host.max(1),
            spread_offset: plan
                .hosts
                .iter()
                .position(|h| h.name == host)
                .map_or(0, |p| p as u64),
            sources,
            ttl_walk: Some(WalkConfig::default()),
            loss_retries: ROUND_LOSS_RETRIES,
            ..ProbeConfig::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PLAN: &str = r#"
name = "t"
[defaults]
timeout_ms = 750
retries = 3
adaptive = false
[[hosts]]
name = "web"
address = "198.18.0.10"
[[hosts]]
name = "db"
address = "198.18.0.20"
roles = ["db"]
[roles.db]
ports = [{ name = "sql", port = 13306, offset = false }]
[[flows]]
name = "web to db"
from = "host:web"
to = "host:db"
ports = ["sql"]
"#;

    #[test]
    fn a_plan_host_config_reads_the_defaults_and_the_host_place() {
        let plan = Plan::parse(PLAN, "plan.toml").expect("the plan is valid");
        let web = plan.hosts.iter().position(|h| h.name == "web").unwrap() as u64;
        let db = plan.hosts.iter().position(|h| h.name == "db").unwrap() as u64;
        let sources = vec!["198.18.0.20".parse().unwrap()];
        let limits = SweepLimits {
            concurrency: 100,
            per_host: 0,
        };
        let c = ProbeConfig::for_plan_host(&plan, "db", sources.clone(), limits);
        let ms750 = Duration::from_millis(750);
        assert_eq!(
            c,
            ProbeConfig {
                connect_timeout: ms750,
                tls_timeout: ms750,
                exchange_timeout: ms750,
                retries: 3,
                adaptive: false,
                concurrency: 100,
                per_host_concurrency: 1,
                spread_offset: db,
                sources,
                ttl_walk: Some(WalkConfig::default()),
                loss_retries: ROUND_LOSS_RETRIES,
                ..ProbeConfig::default()
            }
        );
        let w = ProbeConfig::for_plan_host(&plan, "web", Vec::new(), SweepLimits::default());
        assert_eq!(w.spread_offset, web);
        assert_ne!(w.spread_offset, c.spread_offset);
        assert_eq!(w.concurrency, ProbeConfig::default().concurrency);
        assert_eq!(w.per_host_concurrency, DEFAULT_PER_HOST);
        let unknown = ProbeConfig::for_plan_host(&plan, "nope", Vec::new(), limits);
        assert_eq!(unknown.spread_offset, 0);
    }
}
