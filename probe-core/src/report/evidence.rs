//! The evidence of a round as both joins read it (the TCP join in
//! `join`, the UDP one in `udp`): what each agent contributed
//! ([`AgentEvidence`], [`RoundEvidence`]) and the facts both read the same
//! way from a probe (a local denial, a silence, a nonce that turned up at
//! another host). Neither join imports the other's file for them.

use std::collections::BTreeMap;
use std::time::SystemTime;

use super::PlanMismatch;
use crate::control::{
    CanaryEvidence, Forwarding, Handshake, ListenerReport, Nonce, PathProbe, TraceEvidence,
};
use crate::plan::{PathView, Plan};
use crate::probe::Silence;
use crate::probe::classify::is_local_denial;

/// Whether an agent took part.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AgentOutcome {
    /// It prepared the round.
    Up,
    /// It could not be reached or refused the round; the reason.
    Unreachable(String),
    /// The round was cancelled before it finished its part.
    Cancelled,
    /// It holds another plan.
    PlanMismatch(PlanMismatch),
}

impl AgentOutcome {
    /// Why the agent did not do its part, in words; `None` when it did.
    pub(super) fn problem(&self) -> Option<String> {
        match self {
            AgentOutcome::Up => None,
            AgentOutcome::Unreachable(why) => Some(format!("unreachable: {why}")),
            AgentOutcome::Cancelled => {
                Some("the round was cancelled before it finished its part".into())
            }
            AgentOutcome::PlanMismatch(m) => Some(m.to_string()),
        }
    }
}

/// Everything one agent contributed to a round.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentEvidence {
    /// TCP quality samples' SYNs the target counted, where it could
    /// ([`crate::control::EvidenceReply::syn_samples`]).
    pub syn_samples: Option<Vec<crate::control::SynSamples>>,
    /// Whether it took part.
    pub outcome: AgentOutcome,
    /// Its listeners, from `prepare`.
    pub listeners: Vec<ListenerReport>,
    /// Its probes of its outgoing paths.
    pub probes: Vec<PathProbe>,
    /// Why the probe request failed, if it did.
    pub probe_error: Option<String>,
    /// What its canaries saw.
    pub canaries: Vec<CanaryEvidence>,
    /// Why the evidence request failed, if it did.
    pub evidence_error: Option<String>,
    /// The handshakes its kernel saw on its planned ports; `None` when it
    /// could not watch them (or gave no evidence).
    pub handshakes: Option<Vec<Handshake>>,
    /// What nftables tracing on its host saw; `None` when it does not
    /// trace (or gave no evidence).
    pub trace: Option<TraceEvidence>,
    /// Every address its host can send from: what its agent reported in
    /// `prepared` (all interfaces), and for a source its plan addresses
    /// and resolved plan names. Empty from agents that predate it.
    pub addresses: Vec<std::net::IpAddr>,
    /// The families its host forwards, as its agent reported them in
    /// `prepared` (off from agents that predate it).
    pub forwarding: Forwarding,
}

impl AgentEvidence {
    /// An agent that took no part, for `reason`.
    pub fn unreachable(reason: String) -> AgentEvidence {
        AgentEvidence {
            syn_samples: None,
            outcome: AgentOutcome::Unreachable(reason),
            listeners: Vec::new(),
            probes: Vec::new(),
            probe_error: None,
            canaries: Vec::new(),
            evidence_error: None,
            handshakes: None,
            trace: None,
            addresses: Vec::new(),
            forwarding: Forwarding::default(),
        }
    }
}

/// A round's raw material.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoundEvidence {
    /// When the round started.
    pub started_at: SystemTime,
    /// When it finished.
    pub finished_at: SystemTime,
    /// The agents asked, by host; hosts in no path are absent.
    pub agents: BTreeMap<String, AgentEvidence>,
}

/// Whether the source's own kernel refused to send
/// ([`is_local_denial`] of the probe's errno) and no ICMP error explains
/// it: EACCES is also how the kernel reports an ICMPv6 admin-prohibited,
/// which is the source's own refusal only when no ICMP error came back.
pub(super) fn local_denial(probe: &PathProbe) -> bool {
    is_local_denial(probe.errno) && probe.icmp.is_none()
}

/// "no answer within N ms (k attempts)" for a path that timed out. Whether
/// the path stayed silent is the probe's [`PathProbe::silence`]; the
/// prober's own words then say how long it waited (an adaptive deadline
/// can be shorter than `timeout_ms`, and they say why), shown as they are.
/// A timeout without that (a report from a prober that does not say) gets
/// the plan's `timeout_ms`.
pub(super) fn silence_words(probe: &PathProbe, timeout_ms: u64) -> String {
    let attempts = |waited_ms: u64| {
        format!(
            "no answer within {waited_ms} ms ({} attempt{})",
            probe.attempts,
            if probe.attempts == 1 { "" } else { "s" }
        )
    };
    match probe.silence {
        Some(_) if !probe.detail.is_empty() => probe.detail.to_string(),
        Some(Silence { waited_ms, .. }) => attempts(waited_ms),
        None => attempts(timeout_ms),
    }
}

/// Appends where else our nonce turned up, if it did, and remembers that
/// host's address of the path's family for the blame.
pub(super) fn note_elsewhere(
    plan: &Plan,
    round: &RoundEvidence,
    path: &PathView<'_>,
    probe: &PathProbe,
    detail: &mut String,
    redirected_to: &mut Option<String>,
) {
    let Some((host, source)) = probe.nonce.as_ref().and_then(|n| elsewhere(round, n)) else {
        return;
    };
    detail.push_str(&format!("; our nonce arrived at {host} from {source}"));
    let v4 = path
        .address
        .to_string()
        .parse::<std::net::IpAddr>()
        .ok()
        .map(|a| a.is_ipv4());
    *redirected_to = plan.host(&host).map(|h| {
        h.addresses
            .iter()
            .map(ToString::to_string)
            .find(|a| a.parse::<std::net::IpAddr>().ok().map(|a| a.is_ipv4()) == v4)
            .unwrap_or_else(|| h.address.to_string())
    });
}

/// Where else a nonce turned up: `(host, source)`.
fn elsewhere(round: &RoundEvidence, nonce: &Nonce) -> Option<(String, String)> {
    round.agents.iter().find_map(|(host, a)| {
        a.canaries
            .iter()
            .flat_map(|c| c.seen.iter())
            .find(|s| s.nonce == *nonce)
            .map(|s| (host.clone(), s.source.ip().to_string()))
    })
}

/// Whether the ICMP error `probe` got came from the source `from` itself
/// (one of its own addresses: its agent's list, the probe's bound source,
/// its plan addresses). The kernel reports a failed ARP or neighbour
/// discovery that way; such an error is no device's answer.
pub(super) fn icmp_from_source(
    plan: &Plan,
    from: &str,
    src: &AgentEvidence,
    probe: &PathProbe,
) -> bool {
    let Some(sender) = probe
        .icmp
        .as_deref()
        .and_then(crate::probe::IcmpEvidence::from_ip)
    else {
        return false;
    };
    src.addresses.contains(&sender)
        || probe.source.is_some_and(|s| s.ip() == sender)
        || plan.host(from).is_some_and(|h| {
            h.addresses
                .iter()
                .any(|a| matches!(a, crate::plan::Address::Ip(ip) if *ip == sender))
        })
}
