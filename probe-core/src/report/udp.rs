//! The verdict join for UDP paths with a canary: silence proves nothing by
//! itself, so every outcome rests on what the target's UDP canary recorded
//! (which nonces, how many datagrams) and on what came back to the prober.
//!
//! - `open` only when the canary recorded our nonce AND its answer came
//!   back;
//! - the nonce recorded but no answer: its own finding, "the target
//!   received it; its answer never came back" (a one-way path), a
//!   violation whatever the expectation, blamed on the return path;
//! - no nonce and silence while the canary listened: `timeout` (dropped);
//! - ICMP port-unreachable: `refused`; any other ICMP: `unreachable`, with
//!   the ICMP's own evidence (type, code, sender).
//!
//! `arrived` is how many of the prober's datagrams the canary recorded.

use super::blame::{self, TargetStage};
use super::join::{AgentEvidence, RoundEvidence, elsewhere, local_denial};
use super::{PathReport, TargetEnd, Verdict};
use crate::plan::{Family, Plan};
use crate::probe::Observed;
use crate::probe::udp_service::{UdpOptions, UdpService};

/// Whether portcall knows a valid request to prove that a live UDP service
/// on `port` answers ([`UdpService::for_port`]: DNS, NTP; SNMP only with a
/// community, which rounds do not send). Elsewhere a held UDP port cannot
/// be proven.
pub fn live_request_known(port: u16) -> bool {
    UdpService::for_port(port, &UdpOptions::default()) != UdpService::Canary
}

/// "2 of 3 datagrams arrived", for renderers; `None` when the canary's
/// count is not known (TCP, no canary).
pub fn arrival(r: &PathReport) -> Option<String> {
    let arrived = r.arrived?;
    let sent = r.attempts.max(arrived);
    Some(format!(
        "{arrived} of {sent} datagram{} arrived",
        if sent == 1 { "" } else { "s" }
    ))
}

/// Joins a UDP path whose target held a canary.
pub(super) fn judge(
    plan: &Plan,
    round: &RoundEvidence,
    i: usize,
    mut r: PathReport,
    src: &AgentEvidence,
    dst: &AgentEvidence,
) -> PathReport {
    let path = &plan.paths[i];
    let fail = |mut r: PathReport, detail: String| {
        r.verdict = Verdict::Error;
        r.detail = detail;
        r
    };
    let Some(probe) = src.probes.iter().find(|p| p.path == i) else {
        return fail(
            r,
            format!(
                "source agent {} returned no result for this path",
                path.from
            ),
        );
    };
    r.attempts = probe.attempts;
    r.icmp = probe.icmp.clone();
    r.family = r.family.or(probe.source.map(|s| Family::of(s.ip())));
    if let Some(e) = &dst.evidence_error {
        r.observed = Some(probe.observed);
        return fail(r, format!("target agent {} gave no evidence: {e}", path.to));
    }
    if probe.observed == Observed::LocalError {
        r.observed = Some(Observed::LocalError);
        return fail(
            r,
            format!(
                "the prober on {} could not try: {}",
                path.from, probe.detail
            ),
        );
    }
    // The round trip of the answer that came back.
    if probe.observed == Observed::Open {
        r.latency_ms = Some((probe.latency_us as f64 / 10.0).round() / 100.0);
    }
    let port = path.port.get();
    let sighting = probe.nonce.as_ref().and_then(|n| {
        dst.canaries
            .iter()
            .filter(|c| c.port == port && c.udp)
            .flat_map(|c| c.seen.iter())
            .find(|s| &s.nonce == n)
    });
    let arrived = sighting.map_or(0, |s| s.datagrams.max(1));
    r.arrived = Some(arrived);
    r.target_saw = Some(sighting.is_some());
    r.seen_source = sighting.map(|s| s.source.ip().to_string());
    let sent = probe.attempts.max(arrived);
    let of = format!(
        "{arrived} of {sent} datagram{} arrived",
        if sent == 1 { "" } else { "s" }
    );
    let from = r.seen_source.clone().unwrap_or_default();
    let canary = format!(" while the canary of {} was listening", path.to);
    let with = |base: String| {
        if probe.detail.is_empty() {
            base
        } else {
            format!("{base} ({})", probe.detail)
        }
    };
    let denied = local_denial(&probe.detail) && probe.icmp.is_none();
    let mut one_way = false;
    let mut redirected_to = None;
    let observed = match (sighting.is_some(), probe.observed) {
        (true, Observed::Open) => {
            r.target_stage = Some(TargetStage::Nonce);
            r.detail = format!("{} saw our nonce from {from} and answered; {of}", path.to);
            Observed::Open
        }
        (true, o) => {
            // Arrived, yet the prober heard nothing it could accept.
            one_way = true;
            r.target_stage = Some(TargetStage::Nonce);
            let mut d = format!(
                "the target received it; its answer never came back: {} recorded our nonce from {from} ({of}), and no answer reached {} within {} ms per attempt (a one-way path: the return route or a filter on the way back drops {}'s answers)",
                path.to, path.from, plan.defaults.timeout_ms, path.to
            );
            if o != Observed::Timeout && !probe.detail.is_empty() {
                d.push_str(&format!("; the prober saw: {}", probe.detail));
            }
            r.detail = d;
            Observed::Timeout
        }
        (false, Observed::Open) => {
            r.detail = format!(
                "an answer came back, but the canary of {} did not record our nonce",
                path.to
            );
            note_elsewhere(plan, round, path, probe, &mut r.detail, &mut redirected_to);
            Observed::WrongHost
        }
        (false, Observed::Timeout) => {
            r.target_stage = Some(TargetStage::Nothing);
            r.detail = format!(
                "dropped: no answer within {} ms ({} datagram{}), and the canary of {} recorded none of them{canary}",
                plan.defaults.timeout_ms,
                probe.attempts,
                if probe.attempts == 1 { "" } else { "s" },
                path.to,
            );
            Observed::Timeout
        }
        (false, o @ (Observed::Refused | Observed::Unreachable)) => {
            r.target_stage = Some(TargetStage::Nothing);
            r.detail = if denied {
                with(format!(
                    "refused on {} itself before anything was sent: its own packet filter or security policy{canary}",
                    path.from
                ))
            } else if let Some(icmp) = &probe.icmp {
                if icmp.from == r.address {
                    format!("rejected by {} (ICMP {}){canary}", path.to, icmp.kind)
                } else {
                    format!(
                        "rejected by {} (ICMP {}), a device on the way, not {}{canary}",
                        icmp.from, icmp.kind, path.to
                    )
                }
            } else {
                with(format!("rejected with an ICMP error{canary}"))
            };
            o
        }
        (false, o) => {
            r.detail = probe.detail.clone();
            if o == Observed::WrongHost {
                note_elsewhere(plan, round, path, probe, &mut r.detail, &mut redirected_to);
            }
            o
        }
    };
    r.observed = Some(observed);
    let mut addresses = vec![r.address.clone()];
    if let Some(h) = plan.host(&path.to) {
        addresses.extend(h.addresses.iter().map(ToString::to_string));
    }
    r.blame = blame::blame(&blame::Evidence {
        observed: r.observed,
        target_addresses: &addresses,
        icmp: probe.icmp.as_ref(),
        target_stage: r.target_stage,
        walk: probe.walk.as_ref(),
        path_mtu: false,
        local_denial: denied,
        redirected_to: redirected_to.as_deref(),
        traced: None,
    });
    r.verdict = if one_way {
        // It got through: wrong for a must-be-blocked path, broken for a
        // must-be-open one.
        Verdict::Violation
    } else {
        Verdict::judge(path.expect, r.observed, TargetEnd::Canary)
    };
    r
}

/// Appends where else our nonce turned up, if it did, and remembers that
/// host's address of the path's family for the blame.
fn note_elsewhere(
    plan: &Plan,
    round: &RoundEvidence,
    path: &crate::plan::Path,
    probe: &crate::control::PathProbe,
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
