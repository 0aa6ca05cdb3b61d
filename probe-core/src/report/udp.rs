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
use super::evidence::{
    AgentEvidence, RoundEvidence, icmp_from_source, local_denial, note_elsewhere,
};
use super::{PathReport, TargetEnd, Verdict};
use crate::control::PathProbe;
use crate::plan::{Family, PathView, Plan};
use crate::probe::Observed;

/// Joins a UDP path whose target held a canary: what the canary recorded
/// ([`observe`]), the outcome and its words ([`describe`]), then where it
/// breaks and its verdict (a one-way path is a violation whatever the
/// expectation).
pub(super) fn decide_udp(
    plan: &Plan,
    round: &RoundEvidence,
    path: &PathView<'_>,
    probe: Option<&PathProbe>,
    mut r: PathReport,
    dst: &AgentEvidence,
) -> PathReport {
    let Some(probe) = probe else {
        let why = format!(
            "source agent {} returned no result for this path",
            path.from
        );
        return fail(r, why);
    };
    r.attempts = probe.attempts;
    r.icmp = probe.icmp.as_deref().cloned();
    r.family = r.family.or(probe.source.map(|s| Family::of(s.ip())));
    if let Some(e) = &dst.evidence_error {
        r.observed = Some(probe.observed);
        return fail(r, format!("target agent {} gave no evidence: {e}", path.to));
    }
    if probe.observed == Observed::LocalError {
        r.observed = Some(Observed::LocalError);
        let why = format!(
            "the prober on {} could not try: {}",
            path.from, probe.detail
        );
        return fail(r, why);
    }
    // The round trip of the answer that came back.
    if probe.observed == Observed::Open {
        r.latency_ms = Some((probe.latency_us as f64 / 10.0).round() / 100.0);
    }
    let c = Case {
        plan,
        round,
        path,
        probe,
        denied: local_denial(probe),
    };
    r.local_denial = probe.errno.filter(|_| c.denied);
    let arrived = observe(&c, dst, &mut r);
    if let Some(why) = overloaded(&c, arrived, dst) {
        r.observed = Some(probe.observed);
        return fail(r, why);
    }
    let (observed, one_way, redirected_to) = describe(&c, arrived, &mut r);
    r.observed = Some(observed);
    let mut addresses = vec![r.address.clone()];
    if let Some(h) = plan.host(path.to) {
        addresses.extend(h.addresses.iter().map(ToString::to_string));
    }
    r.blame = blame::blame(&blame::Evidence {
        observed: r.observed,
        target_addresses: &addresses,
        icmp: probe.icmp.as_deref(),
        target_stage: r.target_stage,
        walk: probe.walk.as_deref(),
        path_mtu: false,
        local_denial: c.denied,
        redirected_to: redirected_to.as_deref(),
        traced: None,
        icmp_from_source: round
            .agents
            .get(path.from)
            .is_some_and(|src| icmp_from_source(plan, path.from, src, probe)),
        neighbour: probe.neighbour.as_deref(),
    });
    r.verdict = if one_way {
        // It got through: wrong for a must-be-blocked path, broken for a
        // must-be-open one.
        Verdict::Violation
    } else {
        Verdict::decide(path.expect, r.observed, TargetEnd::Canary)
    };
    r
}

/// `r` as an `error` for `detail`.
fn fail(mut r: PathReport, detail: String) -> PathReport {
    r.verdict = Verdict::Error;
    r.detail = detail;
    r
}

/// One probed UDP path as the join weighs it.
struct Case<'a> {
    plan: &'a Plan,
    round: &'a RoundEvidence,
    path: &'a PathView<'a>,
    probe: &'a PathProbe,
    /// The source's own kernel refused to send ([`local_denial`]).
    denied: bool,
}

/// What the target's UDP canary recorded of our nonce: `target_saw`,
/// `seen_source` and `arrived` in the report; whether it arrived.
fn observe(c: &Case<'_>, dst: &AgentEvidence, r: &mut PathReport) -> bool {
    let port = c.path.port.get();
    let sighting = c.probe.nonce.as_ref().and_then(|n| {
        dst.canaries
            .iter()
            .filter(|c| c.port == port && c.is_udp())
            .flat_map(|c| c.seen.iter())
            .find(|s| s.nonce == *n)
    });
    r.arrived = Some(sighting.map_or(0, |s| s.datagrams.max(1)));
    r.target_saw = Some(sighting.is_some());
    r.seen_source = sighting.map(|s| s.source.ip().to_string());
    sighting.is_some()
}

/// Why the canary's silence about our nonce proves nothing: its cap of
/// distinct nonces was full, so ours may have arrived and been dropped.
/// Only an answer or a silence is in doubt (an ICMP error still says what
/// it says); such a path is an `error`, never a verdict.
fn overloaded(c: &Case<'_>, arrived: bool, dst: &AgentEvidence) -> Option<String> {
    if arrived || !matches!(c.probe.observed, Observed::Open | Observed::Timeout) {
        return None;
    }
    let port = c.path.port.get();
    let (kept, dropped) = dst
        .canaries
        .iter()
        .filter(|e| e.port == port && e.is_udp())
        .fold((0, 0), |(k, d), e| (k + e.seen.len(), d + e.dropped));
    (dropped > 0).then(|| {
        format!(
            "overloaded: the canary of {} kept {kept} nonces and dropped {dropped} more, so whether ours arrived is unknown",
            c.path.to
        )
    })
}

/// The joined outcome, its detail (and `target_stage`) in the report,
/// whether the path is one-way, and where else our nonce turned up.
fn describe(c: &Case<'_>, arrived: bool, r: &mut PathReport) -> (Observed, bool, Option<String>) {
    let (plan, path, probe) = (c.plan, c.path, c.probe);
    let count = r.arrived.unwrap_or(0);
    let sent = probe.attempts.max(count);
    let of = format!(
        "{count} of {sent} datagram{} arrived",
        if sent == 1 { "" } else { "s" }
    );
    let from = r.seen_source.clone().unwrap_or_default();
    let canary = format!(" while the canary of {} was listening", path.to);
    let mut redirected_to = None;
    let observed = match (arrived, probe.observed) {
        (true, Observed::Open) => {
            r.target_stage = Some(TargetStage::Nonce);
            r.detail = format!("{} saw our nonce from {from} and answered; {of}", path.to);
            Observed::Open
        }
        (true, o) => {
            // Arrived, yet the prober heard nothing it could accept.
            r.target_stage = Some(TargetStage::Nonce);
            let mut d = format!(
                "the target received it; its answer never came back: {} recorded our nonce from {from} ({of}), and no answer reached {} within {} ms per attempt (a one-way path: the return route or a filter on the way back drops {}'s answers)",
                path.to, path.from, plan.defaults.timeout_ms, path.to
            );
            if o != Observed::Timeout && !probe.detail.is_empty() {
                d.push_str(&format!("; the prober saw: {}", probe.detail));
            }
            r.detail = d;
            return (Observed::Timeout, true, None);
        }
        (false, Observed::Open) => {
            r.detail = format!(
                "an answer came back, but the canary of {} did not record our nonce",
                path.to
            );
            note_elsewhere(
                plan,
                c.round,
                path,
                probe,
                &mut r.detail,
                &mut redirected_to,
            );
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
            r.detail = rejected(c, &r.address, &canary);
            o
        }
        (false, o) => {
            r.detail = probe.detail.to_string();
            if o == Observed::WrongHost {
                note_elsewhere(
                    plan,
                    c.round,
                    path,
                    probe,
                    &mut r.detail,
                    &mut redirected_to,
                );
            }
            o
        }
    };
    (observed, false, redirected_to)
}

/// The words for a datagram refused: by the source itself, or by the ICMP
/// error's sender.
fn rejected(c: &Case<'_>, address: &str, canary: &str) -> String {
    let (path, probe) = (c.path, c.probe);
    let with = |base: String| {
        if probe.detail.is_empty() {
            base
        } else {
            format!("{base} ({})", probe.detail)
        }
    };
    if c.denied {
        with(format!(
            "refused on {} itself before anything was sent: its own packet filter or security policy{canary}",
            path.from
        ))
    } else if let Some(icmp) = &probe.icmp {
        if icmp.from == address {
            format!("rejected by {} (ICMP {}){canary}", path.to, icmp.kind)
        } else {
            format!(
                "rejected by {} (ICMP {}), a device on the way, not {}{canary}",
                icmp.from, icmp.kind, path.to
            )
        }
    } else {
        with(format!("rejected with an ICMP error{canary}"))
    }
}

#[cfg(test)]
mod tests {
    use std::time::SystemTime;

    use super::*;
    use crate::control::{CanaryEvidence, ListenerReport, ListenerState, PathProbe, Sighting};
    use crate::plan::Expect;
    use crate::port::Protocol;
    use crate::probe::IcmpEvidence;
    use crate::report::blame::{Cause, Where};
    use crate::report::evidence::AgentOutcome;
    use crate::report::join::join;
    use crate::report::text::arrival;
    use crate::report::{Report, Verdict};

    const PLAN: &str = r#"
name = "udp-join"
[defaults]
timeout_ms = 500
retries = 2
[[hosts]]
name = "web"
address = "198.18.0.1"
[[hosts]]
name = "ns"
address = "198.18.0.2"
roles = ["dns", "syslog"]
[[flows]]
from = "host:web"
to = "host:ns"
ports = ["dns", "dns-tcp", "syslog"]
[[flows]]
from = "host:web"
to = "host:ns"
ports = [9999]
expect = "blocked"
"#;

    /// The plan's paths: web -> ns 53/udp, 53/tcp, 514/udp (open) and
    /// 9999 (blocked, unplanned).
    fn plan() -> Plan {
        let p = Plan::parse(PLAN, "udp.toml").unwrap();
        let shape: Vec<(u16, Protocol)> =
            p.paths.iter().map(|p| (p.port.get(), p.protocol)).collect();
        assert_eq!(
            shape,
            [
                (53, Protocol::Udp),
                (53, Protocol::Tcp),
                (514, Protocol::Udp),
                (9999, Protocol::Tcp)
            ]
        );
        p
    }

    fn listener(port: u16, protocol: Protocol, state: ListenerState) -> ListenerReport {
        ListenerReport {
            port,
            protocol,
            service: String::new(),
            state,
            detail: String::new(),
            elsewhere: Vec::new(),
        }
    }

    fn probe(path: usize, observed: Observed, attempts: u32) -> PathProbe {
        PathProbe {
            path,
            nonce: Some(format!("n{path}").into()),
            observed,
            detail: Box::default(),
            latency_us: 800,
            attempts,
            source: Some("198.18.0.1:40000".parse().unwrap()),
            answered_by: None,
            icmp: None,
            path_mtu: false,
            walk: None,
            connect_us: None,
            tls_us: None,
            cert: None,
            service_banner: None,
            shed: false,
            errno: None,
            // A silent path says so, as the engine does.
            silence: (observed == Observed::Timeout).then_some(crate::probe::Silence {
                waited_ms: 500,
                adaptive: false,
                possibly_rate_limited: false,
            }),
            neighbour: None,
            proof: None,
            service_answer: None,
            answered: None,
            quality: None,
        }
    }

    fn agent(
        listeners: Vec<ListenerReport>,
        probes: Vec<PathProbe>,
        canaries: Vec<CanaryEvidence>,
    ) -> AgentEvidence {
        AgentEvidence {
            outcome: AgentOutcome::Up,
            listeners,
            probes,
            probe_error: None,
            canaries,
            evidence_error: None,
            handshakes: None,
            trace: None,
            addresses: Vec::new(),
            syn_samples: None,
            forwarding: crate::control::Forwarding::default(),
        }
    }

    fn saw(port: u16, udp: bool, nonce: &str, datagrams: u32) -> CanaryEvidence {
        CanaryEvidence {
            port,
            seen: vec![Sighting {
                nonce: nonce.into(),
                source: "198.18.0.1:40000".parse().unwrap(),
                datagrams,
                samples: 0,
            }],
            strays: 0,
            dropped: 0,
            shed: 0,
            transport: if udp {
                crate::control::TransportProtocol::Udp
            } else {
                crate::control::TransportProtocol::Tcp
            },
            counts_samples: false,
        }
    }

    /// Joins path 0 (53/udp to a canary) probed as `p`, with ns's canaries
    /// having seen `canaries`; 53/udp is in `udp_state`.
    fn run(p: PathProbe, canaries: Vec<CanaryEvidence>, udp_state: ListenerState) -> Report {
        let plan = plan();
        let web = agent(vec![], vec![p], vec![]);
        let ns = agent(
            vec![
                listener(53, Protocol::Udp, udp_state),
                listener(53, Protocol::Tcp, ListenerState::Canary),
                listener(514, Protocol::Udp, ListenerState::Canary),
            ],
            vec![],
            canaries,
        );
        let round = RoundEvidence {
            started_at: SystemTime::UNIX_EPOCH,
            finished_at: SystemTime::UNIX_EPOCH,
            agents: [("web".to_string(), web), ("ns".to_string(), ns)].into(),
        };
        join(&plan, &round)
    }

    #[test]
    fn open_needs_the_nonce_at_the_canary_and_the_answer_back() {
        let r = run(
            probe(0, Observed::Open, 3),
            vec![saw(53, true, "n0", 2)],
            ListenerState::Canary,
        );
        let p = &r.paths[0];
        assert_eq!(p.protocol, Protocol::Udp);
        assert_eq!(
            (p.observed, p.verdict),
            (Some(Observed::Open), Verdict::Ok),
            "{p:?}"
        );
        assert_eq!(p.arrived, Some(2));
        assert_eq!(p.attempts, 3);
        assert_eq!(arrival(p).as_deref(), Some("2 of 3 datagrams arrived"));
        assert!(
            p.detail.contains("2 of 3 datagrams arrived"),
            "{}",
            p.detail
        );
        assert_eq!(p.seen_source.as_deref(), Some("198.18.0.1"));
        assert_eq!(p.blame, None);

        // An answer without the nonce at the canary is not open: the TCP
        // canary of the same port number saw it, which proves nothing of
        // UDP.
        let r = run(
            probe(0, Observed::Open, 1),
            vec![saw(53, false, "n0", 0)],
            ListenerState::Canary,
        );
        let p = &r.paths[0];
        assert_eq!(p.observed, Some(Observed::WrongHost), "{p:?}");
        assert_eq!(p.verdict, Verdict::Violation);
        assert_eq!(p.arrived, Some(0));
    }

    /// Regression: forged nonces filled the UDP canary's cap, ours was
    /// dropped, and an open path became a `wrong-host` violation. A full
    /// cap says "overloaded" and decides nothing.
    #[test]
    fn a_full_canary_cap_is_overloaded_never_a_verdict() {
        for observed in [Observed::Open, Observed::Timeout] {
            let mut full = saw(53, true, "forged", 1);
            full.dropped = 1;
            let r = run(probe(0, observed, 1), vec![full], ListenerState::Canary);
            let p = &r.paths[0];
            assert_eq!(p.verdict, Verdict::Error, "{p:?}");
            assert!(
                p.detail
                    .starts_with("overloaded: the canary of ns kept 1 nonces and dropped 1 more"),
                "{}",
                p.detail
            );
        }
    }

    #[test]
    fn a_nonce_that_arrived_without_an_answer_back_is_the_one_way_finding() {
        for expect_blocked in [false, true] {
            let mut plan_text = PLAN.to_string();
            if expect_blocked {
                plan_text = plan_text.replacen(
                    "ports = [\"dns\", \"dns-tcp\", \"syslog\"]",
                    "ports = [\"dns\", \"dns-tcp\", \"syslog\"]\nexpect = \"blocked\"",
                    1,
                );
            }
            let plan = Plan::parse(&plan_text, "udp.toml").unwrap();
            assert_eq!(
                plan.paths[0].expect,
                if expect_blocked {
                    Expect::Blocked
                } else {
                    Expect::Open
                }
            );
            let web = agent(vec![], vec![probe(0, Observed::Timeout, 3)], vec![]);
            let ns = agent(
                vec![listener(53, Protocol::Udp, ListenerState::Canary)],
                vec![],
                vec![saw(53, true, "n0", 3)],
            );
            let round = RoundEvidence {
                started_at: SystemTime::UNIX_EPOCH,
                finished_at: SystemTime::UNIX_EPOCH,
                agents: [("web".to_string(), web), ("ns".to_string(), ns)].into(),
            };
            let r = join(&plan, &round);
            let p = &r.paths[0];
            assert_eq!(p.observed, Some(Observed::Timeout), "{p:?}");
            assert_eq!(p.verdict, Verdict::Violation, "blocked={expect_blocked}");
            assert_eq!(p.arrived, Some(3));
            assert_eq!(p.target_stage, Some(TargetStage::Nonce));
            assert!(
                p.detail
                    .starts_with("the target received it; its answer never came back"),
                "{}",
                p.detail
            );
            let b = p.blame.as_ref().expect("blamed");
            assert_eq!((b.at, b.cause), (Where::ReturnPath, Cause::AnswerLost));
            assert!(
                b.sentence("ns", None)
                    .contains("ns received it; its answer never came back"),
                "{}",
                b.sentence("ns", None)
            );
        }
    }

    #[test]
    fn silence_without_the_nonce_is_a_drop_and_icmp_is_refused_or_unreachable() {
        let r = run(
            probe(0, Observed::Timeout, 3),
            vec![],
            ListenerState::Canary,
        );
        let p = &r.paths[0];
        assert_eq!(
            (p.observed, p.verdict),
            (Some(Observed::Timeout), Verdict::Violation)
        );
        assert_eq!(p.arrived, Some(0));
        assert_eq!(p.target_saw, Some(false));
        assert!(
            p.detail
                .starts_with("dropped: no answer within 500 ms (3 datagrams)"),
            "{}",
            p.detail
        );
        assert_eq!(p.blame.as_ref().map(|b| b.cause), Some(Cause::Drop));

        let mut refused = probe(0, Observed::Refused, 1);
        refused.icmp = Some(Box::new(IcmpEvidence {
            kind: "port-unreachable".into(),
            code: 3,
            from: "198.18.0.2".into(),
        }));
        let r = run(refused, vec![], ListenerState::Canary);
        let p = &r.paths[0];
        assert_eq!(
            (p.observed, p.verdict),
            (Some(Observed::Refused), Verdict::Violation)
        );
        assert!(
            p.detail.contains("rejected by ns (ICMP port-unreachable)"),
            "{}",
            p.detail
        );
        let b = p.blame.as_ref().unwrap();
        assert_eq!((b.at, b.cause), (Where::Target, Cause::IcmpReject));

        let mut prohibited = probe(0, Observed::Unreachable, 1);
        prohibited.icmp = Some(Box::new(IcmpEvidence {
            kind: "admin-prohibited".into(),
            code: 13,
            from: "198.18.0.254".into(),
        }));
        let r = run(prohibited, vec![], ListenerState::Canary);
        let p = &r.paths[0];
        assert_eq!(p.observed, Some(Observed::Unreachable));
        assert_eq!(
            p.icmp.as_ref().map(|i| i.from.as_str()),
            Some("198.18.0.254")
        );
        assert!(
            p.detail.contains("a device on the way, not ns"),
            "{}",
            p.detail
        );
        let b = p.blame.as_ref().unwrap();
        assert_eq!(
            (b.at, b.hop.as_deref()),
            (Where::Network, Some("198.18.0.254"))
        );
    }

    #[test]
    fn a_held_udp_port_is_live_where_portcall_knows_a_request_else_an_error() {
        // 53: a DNS request proves a live server.
        let mut live = probe(0, Observed::Open, 1);
        live.nonce = None;
        live.detail = "DNS answered".into();
        let r = run(live, vec![], ListenerState::Held);
        let p = &r.paths[0];
        assert_eq!(
            (p.observed, p.verdict),
            (Some(Observed::Open), Verdict::Ok),
            "{p:?}"
        );
        assert!(
            p.detail.contains("the live service answered"),
            "{}",
            p.detail
        );
        assert_eq!(p.arrived, None);
        // Silence from it is never open.
        let mut silent = probe(0, Observed::Timeout, 3);
        silent.nonce = None;
        let r = run(silent, vec![], ListenerState::Held);
        assert_eq!(r.paths[0].observed, Some(Observed::Timeout));
        assert_ne!(r.paths[0].verdict, Verdict::Ok);

        // 514 held: nothing portcall can ask a syslog collector.
        let plan = plan();
        let web = agent(vec![], vec![], vec![]);
        let ns = agent(
            vec![listener(514, Protocol::Udp, ListenerState::Held)],
            vec![],
            vec![],
        );
        let round = RoundEvidence {
            started_at: SystemTime::UNIX_EPOCH,
            finished_at: SystemTime::UNIX_EPOCH,
            agents: [("web".to_string(), web), ("ns".to_string(), ns)].into(),
        };
        let p = &join(&plan, &round).paths[2];
        assert_eq!((p.observed, p.verdict), (None, Verdict::Error), "{p:?}");
        assert!(
            p.detail
                .starts_with("UDP cannot be proven without a canary"),
            "{}",
            p.detail
        );
    }

    #[test]
    fn every_format_shows_udp_and_the_datagrams_that_arrived() {
        use crate::report::{ReportFormat, render};
        let mut r = run(
            probe(0, Observed::Timeout, 3),
            vec![saw(53, true, "n0", 2)],
            ListenerState::Canary,
        );
        r.paths.truncate(1);
        r.recount();
        for format in ReportFormat::ALL {
            let mut out = Vec::new();
            render(&r, format, Default::default(), &mut out).unwrap();
            let text = String::from_utf8(out).unwrap();
            match format {
                ReportFormat::Prometheus => {
                    assert!(text.contains(r#"protocol="udp""#), "{format:?}: {text}")
                }
                ReportFormat::Json => {
                    assert!(text.contains(r#""protocol": "udp""#), "{text}");
                    assert!(text.contains(r#""arrived": 2"#), "{text}");
                    let back = crate::report::json::read(&text).unwrap();
                    assert_eq!(back.paths[0].arrived, Some(2));
                }
                _ => {
                    assert!(text.contains("53/udp"), "{format:?}: {text}");
                    assert!(
                        text.contains("2 of 3 datagrams arrived"),
                        "{format:?}: {text}"
                    );
                }
            }
        }
    }
}
