//! The second step of joining a path: what was observed, from both ends'
//! facts. The prober's measurements are copied into the report; the
//! target's evidence (its canary's sighting of our nonce, its kernel's
//! handshake table, its firewall trace) turns the prober's outcome into the
//! joined one. No words here but the reasons a path cannot be judged.

use super::super::PathReport;
use super::super::blame::{self, TargetStage};
use super::super::evidence::{AgentEvidence, RoundEvidence, local_denial};
use super::classify::{Ends, Listener};
use super::index::EvidenceIndex;
use crate::control::{HandshakeStage, PathProbe, TraceDirection, TraceEvidence, TraceState};
use crate::plan::{Family, PathView, Plan};
use crate::port::Protocol;
use crate::probe::Observed;

/// One probed path as the join weighs it: its plan, evidence and probe.
#[derive(Clone, Copy)]
pub(super) struct Case<'a> {
    pub(super) plan: &'a Plan,
    pub(super) round: &'a RoundEvidence,
    pub(super) path: &'a PathView<'a>,
    pub(super) probe: &'a PathProbe,
    pub(super) ends: Ends<'a>,
    pub(super) listener: Listener,
    /// The source's own kernel refused to send ([`local_denial`]).
    pub(super) denied: bool,
}

impl<'a> Case<'a> {
    /// The case of `path` probed by `probe`.
    pub(super) fn new(
        plan: &'a Plan,
        round: &'a RoundEvidence,
        path: &'a PathView<'a>,
        probe: &'a PathProbe,
        (ends, listener): (Ends<'a>, Listener),
    ) -> Case<'a> {
        Case {
            plan,
            round,
            path,
            probe,
            ends,
            listener,
            denied: local_denial(probe),
        }
    }
}

/// A round trip in microseconds as the report's milliseconds (two
/// decimals).
pub(super) fn ms(us: u64) -> f64 {
    (us as f64 / 10.0).round() / 100.0
}

/// Copies the prober's own measurements into the report.
pub(super) fn record(r: &mut PathReport, probe: &PathProbe) {
    r.latency_ms = probe.connect_us.map(|us| ms(u64::from(us)));
    r.tls_ms = probe.tls_us.map(|us| ms(u64::from(us)));
    r.attempts = probe.attempts;
    r.icmp = probe.icmp.as_deref().cloned();
    // A DNS target's family is the one its resolved address had.
    r.family = r.family.or(probe.source.map(|s| Family::of(s.ip())));
    r.cert = probe.cert.as_deref().cloned();
    r.service_banner = probe.service_banner.as_deref().map(str::to_string);
    // Any connection proves layer 4; a protocol probe may prove more.
    r.proof = probe
        .proof
        .or_else(|| probe.connect_us.map(|_| crate::probe::service::Proof::L4));
    r.service_answer = probe.service_answer.as_deref().cloned();
}

/// The joined outcome of a probed path, with what the target saw recorded
/// in the report (`target_saw`, `seen_source`, `target_stage`,
/// `local_denial`); `Err` with the reason when the path cannot be judged.
pub(super) fn observe(
    c: &Case<'_>,
    index: &EvidenceIndex<'_>,
    r: &mut PathReport,
) -> Result<Observed, String> {
    let (path, probe) = (c.path, c.probe);
    r.local_denial = probe.errno.filter(|_| c.denied);
    let port = path.port.get();
    let udp = path.protocol == Protocol::Udp;
    // How far the source's handshakes got at the target, by the target's
    // kernel: keyed by the address the source sent from (or, when it never
    // connected, its plan address).
    // Only addresses of the path's own family: a dual-stack pair's other
    // path must not lend this one its handshakes.
    let v4 = r
        .address
        .parse::<std::net::IpAddr>()
        .ok()
        .map(|a| a.is_ipv4());
    // The kernel's handshake tables are TCP's: nothing to say of UDP.
    let handshake = c.ends.dst.handshakes.as_ref().filter(|_| !udp).map(|_| {
        let source = probe.source.map(|s| s.ip());
        index.stage((path.from, source), path.to, port, v4)
    });
    match c.listener {
        Listener::Canary => at_canary(c, index, handshake, r),
        Listener::Live { .. } | Listener::Elsewhere => {
            // UDP has no connect: its round trip is the answer's.
            if udp && probe.observed == Observed::Open {
                r.latency_ms = Some(ms(probe.latency_us));
            }
            // Without a canary only a trace of a failing connection is
            // evidence: polling can miss a short one, so neither "nothing"
            // nor the stage of a connection that worked is said.
            r.target_stage = handshake
                .flatten()
                .filter(|_| probe.observed != Observed::Open)
                .map(|h| stage_of(Some(h)));
            Ok(probe.observed)
        }
        Listener::Dialled => Ok(probe.observed),
    }
}

fn stage_of(h: Option<HandshakeStage>) -> TargetStage {
    match h {
        None => TargetStage::Nothing,
        Some(HandshakeStage::Syn) => TargetStage::Syn,
        Some(HandshakeStage::Connected) => TargetStage::Connected,
    }
}

/// The outcome at a listening TCP canary: open only with our nonce seen.
fn at_canary(
    c: &Case<'_>,
    index: &EvidenceIndex<'_>,
    handshake: Option<Option<HandshakeStage>>,
    r: &mut PathReport,
) -> Result<Observed, String> {
    let (path, probe, dst) = (c.path, c.probe, c.ends.dst);
    let port = path.port.get();
    if let Some(e) = &dst.evidence_error {
        r.observed = Some(probe.observed);
        return Err(format!("target agent {} gave no evidence: {e}", path.to));
    }
    let sighting = probe
        .nonce
        .as_ref()
        .and_then(|n| index.get(path.to)?.sighting(port, n));
    r.target_saw = Some(sighting.is_some());
    r.seen_source = sighting.map(|s| s.source.ip().to_string());
    r.target_stage = match (sighting, handshake) {
        (Some(_), _) => Some(TargetStage::Nonce),
        // The source connected, yet the target's tables show
        // nothing: a short connection can come and go between two
        // readings, so "nothing" is not said.
        (None, Some(None)) if probe.source.is_some() => None,
        (None, Some(h)) => Some(stage_of(h)),
        (None, None) => None,
    };
    if sighting.is_none() && probe.shed {
        // Our own canary was too busy to answer: nothing measured,
        // and never a verdict on the path.
        let shed: u64 = dst
            .canaries
            .iter()
            .filter(|c| c.port == port && !c.is_udp())
            .map(|c| c.shed)
            .sum();
        return Err(format!(
            "not measured: the canary of {} closed every attempt unanswered; it shed {shed} connection{} under load this round ({})",
            path.to,
            if shed == 1 { "" } else { "s" },
            probe.detail
        ));
    }
    Ok(match (sighting, probe.observed) {
        // A second try with a small MSS delivered the nonce, but
        // ordinary traffic does not get through.
        (Some(_), o) if probe.path_mtu => o,
        (Some(_), _) => Observed::Open,
        (None, Observed::Open) => Observed::WrongHost,
        (None, o) => o,
    })
}

/// What the firewall traces say about one path: the source's output
/// chain stopped our probe, a rule or policy on the target stopped it, the
/// target's firewall let it through, or the target (tracing) never saw
/// it; and when neither end names a rule, a forwarding plan host between
/// them that traced the path stopped in its firewall as it forwarded it.
/// `None` where no one traced.
pub(super) fn traced(
    c: &Case<'_>,
    index: &EvidenceIndex<'_>,
    address: &str,
) -> Option<blame::Traced> {
    fn on(a: &AgentEvidence) -> Option<&TraceEvidence> {
        a.trace.as_ref().filter(|t| t.state == TraceState::Traced)
    }
    let (plan, path, probe) = (c.plan, c.path, c.probe);
    // The trace table matches TCP only.
    if path.protocol == Protocol::Udp {
        return None;
    }
    let dest: Option<std::net::IpAddr> = address.parse().ok();
    let port = path.port.get();
    if let Some(t) = on(c.ends.src) {
        let egress = t.flows.iter().find(|f| {
            f.direction == TraceDirection::Out
                && f.port == port
                && Some(f.dest) == dest
                && f.stop.is_some()
        });
        if let Some(stop) = egress.and_then(|f| f.stop.as_ref()) {
            return Some(blame::Traced::Egress(blame::BlameRule::of(path.from, stop)));
        }
    }
    let mut sources: Vec<std::net::IpAddr> = probe.source.map(|s| s.ip()).into_iter().collect();
    // Every address the source can send from (its agent's interfaces, its
    // resolved plan names): the one its unconnected probe left from is
    // among them.
    sources.extend(&c.ends.src.addresses);
    if let Some(h) = plan.host(path.from) {
        sources.extend(h.addresses.iter().filter_map(|a| match a {
            crate::plan::Address::Ip(ip) => Some(*ip),
            crate::plan::Address::Dns(_) => None,
        }));
    }
    let at_target = on(c.ends.dst).map(|t| at_target(t, &sources, dest, port, path.to));
    match at_target {
        None | Some(blame::Traced::NeverArrived) => {}
        decided => return decided,
    }
    let forwarded = dest.and_then(|d| index.forward_stop((path.from, path.to), &sources, d, port));
    let Some((host, flow)) = forwarded else {
        return at_target;
    };
    // The forwarding host's plan address of the path's family, else its
    // primary.
    let address = plan.host(host).map(|h| {
        let same = h.addresses.iter().find(|a| match a {
            crate::plan::Address::Ip(ip) => ip.is_ipv6() == flow.dest.is_ipv6(),
            crate::plan::Address::Dns(_) => false,
        });
        same.unwrap_or(&h.address).to_string()
    });
    Some(blame::Traced::Forwarded {
        rule: blame::BlameRule::of(host, flow.stop.as_ref()?),
        address,
    })
}

/// What the target's trace `t` says of packets from `sources` to
/// `dest:port`: a rule of `to`'s stopped them, they passed, or none
/// arrived.
fn at_target(
    t: &TraceEvidence,
    sources: &[std::net::IpAddr],
    dest: Option<std::net::IpAddr>,
    port: u16,
    to: &str,
) -> blame::Traced {
    let arrived: Vec<_> = t
        .flows
        .iter()
        .filter(|f| {
            f.direction == TraceDirection::In
                && f.port == port
                && sources.contains(&f.source)
                && dest.is_none_or(|d| d == f.dest)
        })
        .collect();
    if let Some(stop) = arrived.iter().find_map(|f| f.stop.as_ref()) {
        return blame::Traced::AtTarget(blame::BlameRule::of(to, stop));
    }
    if arrived.is_empty() {
        blame::Traced::NeverArrived
    } else {
        blame::Traced::PassedTarget
    }
}
