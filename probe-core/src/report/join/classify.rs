//! The first step of joining a path: whether it can be judged at all (both
//! agents took part and could probe) and what its target end offered (a
//! canary, a live service, an empty dialled port). Every reason a path
//! cannot be judged is an `error` with its words.

use super::super::evidence::{AgentEvidence, AgentOutcome, RoundEvidence};
use crate::control::{ListenerState, ListeningSocket};
use crate::plan::{PathView, Plan};
use crate::port::Protocol;
use crate::probe::udp_service::live_request_known;

/// Who judges a path: the UDP join, for a UDP canary, else this join with
/// what the target offered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Offered {
    /// A UDP canary listened: the UDP join judges the path.
    UdpCanary,
    /// What the target end offered to a path this join judges.
    Probe(Listener),
}

/// What the target end of a path offered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Listener {
    /// A TCP canary listened.
    Canary,
    /// No canary: a real service held the port, or the port is not planned.
    Live { why: &'static str },
    /// The client dials a port the target does not listen on; the canary
    /// sits on the listening port (`server_port`), this one is empty.
    Dialled,
    /// No canary: the port's service listens only at other addresses
    /// (the target's `elsewhere` sockets), so nothing listens here.
    Elsewhere,
}

/// Both ends' evidence of a path that can be judged.
#[derive(Debug, Clone, Copy)]
pub(super) struct Ends<'r> {
    /// The source agent's.
    pub(super) src: &'r AgentEvidence,
    /// The target agent's.
    pub(super) dst: &'r AgentEvidence,
}

/// Both ends of `path` and what its target offered, or why the path cannot
/// be judged (the `error` detail).
pub(super) fn classify<'r>(
    plan: &Plan,
    round: &'r RoundEvidence,
    path: &PathView<'_>,
) -> Result<(Ends<'r>, Offered), String> {
    let (Some(src), Some(dst)) = (round.agents.get(path.from), round.agents.get(path.to)) else {
        return Err("agent not asked (internal error: the path's hosts were not contacted)".into());
    };
    agents_took_part(path, src, dst)?;
    let listener = listener(plan, path, dst)?;
    Ok((Ends { src, dst }, listener))
}

/// Why either agent did not do its part, if it did not.
fn agents_took_part(
    path: &PathView<'_>,
    src: &AgentEvidence,
    dst: &AgentEvidence,
) -> Result<(), String> {
    if let AgentOutcome::Unreachable(why) = &src.outcome {
        return Err(format!("source agent {} unreachable: {why}", path.from));
    }
    if let AgentOutcome::Unreachable(why) = &dst.outcome {
        return Err(format!(
            "target agent {} unreachable, nothing to measure against: {why}",
            path.to
        ));
    }
    if let Some(why) = src.outcome.problem() {
        return Err(format!("source agent {}: {why}", path.from));
    }
    if let Some(why) = dst.outcome.problem() {
        return Err(format!("target agent {}: {why}", path.to));
    }
    if let Some(e) = &src.probe_error {
        return Err(format!("source agent {} could not probe: {e}", path.from));
    }
    Ok(())
}

/// What the target agent reported for the path's port.
fn listener(plan: &Plan, path: &PathView<'_>, dst: &AgentEvidence) -> Result<Offered, String> {
    let port = path.port.get();
    let udp = path.protocol == Protocol::Udp;
    let listener_report = dst
        .listeners
        .iter()
        .find(|l| l.port == port && (l.protocol == Protocol::Udp) == udp);
    match (&path.role, listener_report) {
        (None, _) => Ok(Offered::Probe(Listener::Live {
            why: "not a planned port of the target, so no canary",
        })),
        (Some(_), Some(l)) => match l.state {
            ListenerState::Canary if udp => Ok(Offered::UdpCanary),
            ListenerState::Canary => Ok(Offered::Probe(Listener::Canary)),
            ListenerState::Held
                if udp && !live_request_known(port, plan.snmp_community.as_deref()) =>
            {
                Err(format!(
                    "UDP cannot be proven without a canary: a real service holds {}:{port}/udp ({}) and portcall knows no request of its protocol; silence would prove nothing",
                    path.to, path.service
                ))
            }
            ListenerState::Held => Ok(Offered::Probe(Listener::Live {
                why: "a real service holds the port",
            })),
            ListenerState::Failed if !l.elsewhere.is_empty() => {
                Ok(Offered::Probe(Listener::Elsewhere))
            }
            ListenerState::Failed => Err(format!("no canary on {}:{port}: {}", path.to, l.detail)),
        },
        // The client dials a port the target does not listen on: probe it
        // as a live port and say why nothing of the plan is there.
        (Some(_), None) if path.server_port.is_some() => Ok(Offered::Probe(Listener::Dialled)),
        (Some(_), None) => Err(format!(
            "target agent {} reported no listener for port {port}",
            path.to
        )),
    }
}

/// The sockets the target agent found holding the path's port only at
/// other addresses (its `elsewhere`); empty when it found none.
pub(super) fn elsewhere<'r>(path: &PathView<'_>, dst: &'r AgentEvidence) -> &'r [ListeningSocket] {
    let udp = path.protocol == Protocol::Udp;
    dst.listeners
        .iter()
        .find(|l| l.port == path.port.get() && (l.protocol == Protocol::Udp) == udp)
        .map_or(&[], |l| l.elsewhere.as_slice())
}
