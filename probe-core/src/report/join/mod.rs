//! The verdict join: both sides' evidence of every path (what the prober
//! saw, what the target's canary saw) turned into one observed outcome and
//! a verdict, exactly as docs/outcomes.md defines them. Pure: no I/O, so every
//! rule is tested directly.
//!
//! - open only when the target's canary saw our nonce;
//! - blocked when the canary was listening and saw nothing (`timeout` =
//!   dropped, `unreachable` = rejected by ICMP, `refused` = reset);
//! - without a canary (a real service holds the port, or the port is not a
//!   planned one), `refused` means the service is down: an `error`, never
//!   "blocked";
//! - a path whose agent (either end) is unreachable is an `error`;
//! - a path whose canary closed every attempt unanswered (it was shedding
//!   a flood) is an `error`, never `wrong-host`.

mod classify;
mod describe;
mod index;
mod observe;
mod once;
mod quality;

use super::blame;
use super::evidence::{AgentOutcome, RoundEvidence, icmp_from_source};
use super::{
    AgentState, Conflict, HostReport, PathReport, Report, SCHEMA, Summary, TargetEnd, Verdict,
};
use crate::control::{ListenerState, PathProbe};
use crate::plan::{PathView, Plan};
use crate::probe::Observed;
use classify::{Listener, Offered};
use index::EvidenceIndex;
use observe::Case;
pub use once::OnePass;

/// Joins the evidence of a round on `plan` into its report.
pub fn join(plan: &Plan, round: &RoundEvidence) -> Report {
    join_selected(plan, round, None)
}

/// [`join`] for a round that measured only the paths `only` (indices into
/// the plan's paths, `check --only`): the report lists those paths.
pub fn join_paths(plan: &Plan, round: &RoundEvidence, only: &[usize]) -> Report {
    join_selected(plan, round, Some(only))
}

fn join_selected(plan: &Plan, round: &RoundEvidence, only: Option<&[usize]>) -> Report {
    let streamed = StreamedReport::new(plan, round, only);
    let mut paths = Vec::new();
    streamed
        .each(|p| {
            paths.push(p);
            Ok::<(), std::convert::Infallible>(())
        })
        .unwrap_or_else(|e| match e {});
    let mut report = streamed.report;
    report.paths = paths;
    report.recount();
    report
}

/// A joined round whose paths are judged as they are written
/// ([`StreamedReport::write_json`]), one at a time: the coordinator holds
/// the evidence, never every path's report at once (nor the plan's paths:
/// they are walked with [`Plan::for_each_path`]).
#[derive(Debug)]
pub struct StreamedReport<'a> {
    plan: &'a Plan,
    round: &'a RoundEvidence,
    /// The selected path indices, sorted; `None` for every path.
    only: Option<Vec<usize>>,
    index: EvidenceIndex<'a>,
    texts: FlowTexts,
    /// The report without its paths (`paths` is empty); its summary
    /// counts them.
    pub report: Report,
}

/// A [`StreamedReport`] whose paths are not judged yet (its summary is
/// empty): [`StreamedReport::write_json_once`] judges each once as it
/// writes it and fills the summary in.
pub fn join_deferred<'a>(
    plan: &'a Plan,
    round: &'a RoundEvidence,
    only: Option<&'a [usize]>,
) -> StreamedReport<'a> {
    StreamedReport::new(plan, round, only)
}

/// [`join_paths`] (or [`join`], without `only`) judged path by path, for
/// writing as JSON without holding the paths' reports.
pub fn join_streamed<'a>(
    plan: &'a Plan,
    round: &'a RoundEvidence,
    only: Option<&'a [usize]>,
) -> StreamedReport<'a> {
    let mut s = StreamedReport::new(plan, round, only);
    let mut summary = Summary::default();
    s.each(|p| {
        summary.paths += 1;
        match p.verdict {
            Verdict::Ok => summary.ok += 1,
            Verdict::Violation => summary.violations += 1,
            Verdict::Error => summary.errors += 1,
        }
        Ok::<(), std::convert::Infallible>(())
    })
    .unwrap_or_else(|e| match e {});
    s.report.summary = summary;
    s
}

impl<'a> StreamedReport<'a> {
    fn new(plan: &'a Plan, round: &'a RoundEvidence, only: Option<&[usize]>) -> Self {
        StreamedReport {
            plan,
            round,
            only: only.map(|o| {
                let mut o = o.to_vec();
                o.sort_unstable();
                o.dedup();
                o
            }),
            index: EvidenceIndex::new(plan, round),
            texts: FlowTexts::new(plan),
            report: report_without_paths(plan, round),
        }
    }

    /// Judges every selected path in plan order, handing each report to
    /// `f`.
    fn each<E>(&self, mut f: impl FnMut(PathReport) -> Result<(), E>) -> Result<(), E> {
        let flow = self.plan.for_each_path(|p| {
            if !self.selected(p.index) {
                return std::ops::ControlFlow::Continue(());
            }
            match f(self.judge(&p)) {
                Ok(()) => std::ops::ControlFlow::Continue(()),
                Err(e) => std::ops::ControlFlow::Break(e),
            }
        });
        match flow {
            std::ops::ControlFlow::Continue(()) => Ok(()),
            std::ops::ControlFlow::Break(e) => Err(e),
        }
    }

    /// Whether the path at `index` is in the report.
    fn selected(&self, index: usize) -> bool {
        self.only
            .as_ref()
            .is_none_or(|only| only.binary_search(&index).is_ok())
    }

    /// The report of one path.
    fn judge(&self, p: &PathView<'_>) -> PathReport {
        let probe = self.index.probe(p.from, p.index);
        let lookups = Lookups {
            texts: &self.texts,
            index: &self.index,
        };
        let mut r = join_path(self.plan, self.round, lookups, p, probe);
        quality::attach(self.plan, self.round, p, probe, &mut r);
        r
    }

    /// Writes the report as [`super::json::write`] writes the whole one,
    /// byte for byte, judging each path as it goes.
    pub fn write_json(&self, w: &mut dyn std::io::Write) -> std::io::Result<()> {
        serde_json::to_writer_pretty(&mut *w, &Doc(self, true))?;
        writeln!(w)
    }

    /// The report as [`StreamedReport::write_json`] writes it, with no
    /// paths (`"paths": []`): the frame [`OnePass`] fills.
    fn write_frame(&self, w: &mut dyn std::io::Write) -> std::io::Result<()> {
        serde_json::to_writer_pretty(&mut *w, &Doc(self, false))?;
        writeln!(w)
    }
}

/// The fields of `Report`, in its order, with the paths streamed (or,
/// with `false`, none).
struct Doc<'s, 'a>(&'s StreamedReport<'a>, bool);

impl serde::Serialize for Doc<'_, '_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::{SerializeSeq, SerializeStruct};

        struct Paths<'s, 'a>(&'s StreamedReport<'a>);
        impl serde::Serialize for Paths<'_, '_> {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                let mut seq = s.serialize_seq(Some(self.0.report.summary.paths))?;
                self.0.each(|p| seq.serialize_element(&p))?;
                seq.end()
            }
        }
        let r = &self.0.report;
        let notes = !r.notes.is_empty();
        let mut st = s.serialize_struct("Report", 7 + usize::from(notes))?;
        st.serialize_field("schema", &r.schema)?;
        st.serialize_field("plan", &r.plan)?;
        st.serialize_field("started_at", &r.started_at)?;
        st.serialize_field("finished_at", &r.finished_at)?;
        st.serialize_field("summary", &r.summary)?;
        st.serialize_field("hosts", &r.hosts)?;
        if self.1 {
            st.serialize_field("paths", &Paths(self.0))?;
        } else {
            st.serialize_field("paths", &[(); 0])?;
        }
        if notes {
            st.serialize_field("notes", &r.notes)?;
        } else {
            st.skip_field("notes")?;
        }
        st.end()
    }
}

/// The report of a round on `plan` with its hosts and no paths yet.
fn report_without_paths(plan: &Plan, round: &RoundEvidence) -> Report {
    let hosts = plan
        .hosts
        .iter()
        .map(|h| {
            let mut plan_mismatch = None;
            let (agent, agent_detail, conflicts) = match round.agents.get(&h.name) {
                None => (AgentState::None, None, Vec::new()),
                Some(a) => match &a.outcome {
                    AgentOutcome::Unreachable(r) => {
                        (AgentState::Unreachable, Some(r.clone()), Vec::new())
                    }
                    AgentOutcome::Cancelled => {
                        (AgentState::Cancelled, a.outcome.problem(), Vec::new())
                    }
                    AgentOutcome::PlanMismatch(m) => {
                        plan_mismatch = Some(m.clone());
                        (AgentState::PlanMismatch, Some(m.to_string()), Vec::new())
                    }
                    AgentOutcome::Up => (
                        AgentState::Up,
                        None,
                        a.listeners
                            .iter()
                            .filter(|l| l.state != ListenerState::Canary)
                            .map(|l| Conflict {
                                port: l.port,
                                service: l.service.clone(),
                                state: l.state,
                                detail: l.detail.clone(),
                            })
                            .collect(),
                    ),
                },
            };
            HostReport {
                name: h.name.clone(),
                address: h.address.to_string(),
                agent,
                conflicts,
                agent_detail,
                plan_mismatch,
                zone: h.zone.clone(),
                rule_trace: round
                    .agents
                    .get(&h.name)
                    .and_then(|a| a.trace.as_ref())
                    .map(|t| super::RuleTrace {
                        state: t.state,
                        reason: t.reason.clone(),
                    }),
                addresses: if h.addresses.len() > 1 {
                    h.addresses.iter().map(ToString::to_string).collect()
                } else {
                    Vec::new()
                },
            }
        })
        .collect();
    Report {
        schema: SCHEMA.to_string(),
        plan: plan.name.clone(),
        started_at: super::rfc3339(round.started_at),
        finished_at: super::rfc3339(round.finished_at),
        summary: Summary::default(),
        hosts,
        paths: Vec::new(),
        notes: Vec::new(),
    }
}

/// Each flow's label and source selectors, written once per report rather
/// than once per path (a mesh's one flow has 99,000 paths).
#[derive(Debug)]
struct FlowTexts {
    /// By flow index (from 1; see [`Plan::flow`]): label, source selectors.
    flows: Vec<(String, Vec<String>)>,
}

impl FlowTexts {
    fn new(plan: &Plan) -> FlowTexts {
        FlowTexts {
            flows: plan
                .flows
                .iter()
                .map(|f| (f.label(), f.from.iter().map(ToString::to_string).collect()))
                .collect(),
        }
    }

    fn get(&self, index: usize) -> Option<&(String, Vec<String>)> {
        index.checked_sub(1).and_then(|i| self.flows.get(i))
    }

    /// The labels of the flows behind a path, in flow order.
    fn labels(&self, path: &PathView<'_>) -> Vec<String> {
        path.flows
            .iter()
            .filter_map(|f| self.get(*f))
            .map(|(label, _)| label.clone())
            .collect()
    }

    /// The source selectors of the flows behind a path, each once, in flow
    /// order.
    fn from(&self, path: &PathView<'_>) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for s in path
            .flows
            .iter()
            .filter_map(|f| self.get(*f))
            .flat_map(|(_, from)| from.iter())
        {
            if !out.contains(s) {
                out.push(s.clone());
            }
        }
        out
    }
}

/// What the join prepared once for every path it judges.
#[derive(Clone, Copy)]
struct Lookups<'j, 'a> {
    texts: &'j FlowTexts,
    index: &'j EvidenceIndex<'a>,
}

/// Joins one path: can it be judged and what did its target offer
/// ([`classify`]), what was observed ([`observe`]), in which words
/// ([`describe`]), then where it breaks ([`blame::blame`]) and its verdict.
fn join_path(
    plan: &Plan,
    round: &RoundEvidence,
    Lookups { texts, index }: Lookups<'_, '_>,
    path: &PathView<'_>,
    probe: Option<&PathProbe>,
) -> PathReport {
    let r = unjudged(texts, path);
    let (ends, listener) = match classify::classify(plan, round, path) {
        Ok((ends, Offered::UdpCanary)) => {
            return super::udp::decide_udp(plan, round, path, probe, r, ends.dst);
        }
        Ok((ends, Offered::Probe(listener))) => (ends, listener),
        Err(why) => return fail(r, why),
    };
    let Some(probe) = probe else {
        let why = format!(
            "source agent {} returned no result for this path",
            path.from
        );
        return fail(r, why);
    };
    join_probed(
        &Case::new(plan, round, path, probe, (ends, listener)),
        index,
        r,
    )
}

/// [`join_path`] for a path the source probed.
fn join_probed(c: &Case<'_>, index: &EvidenceIndex<'_>, mut r: PathReport) -> PathReport {
    let (plan, path, probe) = (c.plan, c.path, c.probe);
    observe::record(&mut r, probe);
    if probe.observed == Observed::LocalError {
        r.observed = Some(Observed::LocalError);
        let why = format!(
            "the prober on {} could not try: {}",
            path.from, probe.detail
        );
        return fail(r, why);
    }
    let observed = match observe::observe(c, index, &mut r) {
        Ok(o) => o,
        Err(why) => return fail(r, why),
    };
    if c.listener == Listener::Elsewhere {
        r.listening_elsewhere = classify::elsewhere(path, c.ends.dst).to_vec();
    }
    let (detail, redirected_to) = describe::describe(c, observed, &r);
    r.detail = detail;
    r.observed = Some(observed);
    // The counts only where the attempts' disagreement is the outcome.
    r.answered = probe.answered.filter(|_| observed == Observed::Lossy);
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
        path_mtu: probe.path_mtu,
        local_denial: c.denied,
        redirected_to: redirected_to.as_deref(),
        traced: observe::traced(c, index, &r.address),
        icmp_from_source: icmp_from_source(plan, path.from, c.ends.src, probe),
        neighbour: probe.neighbour.as_deref(),
    });
    let end = match c.listener {
        // A dialled port the target agent vouches is empty is as known as a
        // canary's: a refusal there is what the client will get.
        Listener::Canary | Listener::Dialled => TargetEnd::Canary,
        Listener::Live { .. } => TargetEnd::Live,
        Listener::Elsewhere => TargetEnd::Elsewhere,
    };
    r.verdict = Verdict::decide(path.expect, r.observed, end);
    r
}

/// `r` as an `error` for `detail`.
fn fail(mut r: PathReport, detail: String) -> PathReport {
    r.verdict = Verdict::Error;
    r.detail = detail;
    r
}

/// The report of `path` before any evidence is weighed: the plan's facts,
/// an `error` with no detail.
fn unjudged(texts: &FlowTexts, path: &PathView<'_>) -> PathReport {
    let flows = texts.labels(path);
    let flow = flows.first().cloned().unwrap_or_default();
    PathReport {
        from: path.from.to_owned(),
        to: path.to.to_owned(),
        address: path.address.to_string(),
        port: path.port.get(),
        service: path.service.to_owned(),
        protocol: path.protocol,
        expect: path.expect,
        observed: None,
        verdict: Verdict::Error,
        detail: String::new(),
        latency_ms: None,
        attempts: 0,
        target_saw: None,
        seen_source: None,
        family: path.family,
        icmp: None,
        target_stage: None,
        blame: None,
        flows,
        flow_from: texts.from(path),
        server_port: path.server_port.map(|p| p.get()),
        tls_ms: None,
        flow,
        role: path.role.map(str::to_owned),
        cert: None,
        service_banner: None,
        arrived: None,
        local_denial: None,
        listening_elsewhere: Vec::new(),
        proof: None,
        service_answer: None,
        answered: None,
        quality: None,
    }
}

#[cfg(test)]
mod tests {
    use std::time::SystemTime;

    use super::super::blame::TargetStage;
    use super::super::evidence::AgentEvidence;
    use super::index::AgentIndex;
    use super::*;
    use crate::control::Sighting;
    use crate::control::{CanaryEvidence, Handshake, HandshakeStage, ListenerReport};
    use crate::port::Protocol;

    const PLAN: &str = r#"
name = "join"
[defaults]
timeout_ms = 500
retries = 1
[[hosts]]
name = "web"
address = "127.0.9.1"
[[hosts]]
name = "db"
address = "127.0.9.2"
roles = ["mysql"]
[[flows]]
name = "web to db"
from = "host:web"
to = "host:db"
ports = ["mysql", 22]
[[flows]]
from = "host:db"
to = "host:web"
ports = [80]
expect = "blocked"
"#;

    fn plan() -> Plan {
        Plan::parse(PLAN, "join.toml").unwrap()
    }

    fn up(
        listeners: Vec<ListenerReport>,
        probes: Vec<PathProbe>,
        seen: Vec<Sighting>,
    ) -> AgentEvidence {
        AgentEvidence {
            outcome: AgentOutcome::Up,
            canaries: listeners
                .iter()
                .filter(|l| l.state == ListenerState::Canary)
                .map(|l| CanaryEvidence {
                    port: l.port,
                    seen: seen.clone(),
                    strays: 0,
                    dropped: 0,
                    shed: 0,
                    transport: l.protocol.into(),
                    counts_samples: false,
                })
                .collect(),
            listeners,
            probes,
            probe_error: None,
            evidence_error: None,
            handshakes: None,
            trace: None,
            addresses: Vec::new(),
            syn_samples: None,
            forwarding: crate::control::Forwarding::default(),
        }
    }

    fn mysql(state: ListenerState) -> ListenerReport {
        ListenerReport {
            elsewhere: Vec::new(),
            port: 3306,
            protocol: Protocol::Tcp,
            service: "mysql".into(),
            state,
            detail: String::new(),
        }
    }

    fn probe(path: usize, nonce: Option<&str>, observed: Observed) -> PathProbe {
        PathProbe {
            path,
            nonce: nonce.map(crate::control::Nonce::from),
            observed,
            detail: Box::default(),
            latency_us: 1234,
            attempts: 1,
            source: Some("127.0.9.1:40000".parse().unwrap()),
            answered_by: None,
            connect_us: matches!(
                observed,
                Observed::Open | Observed::TlsError | Observed::WrongHost
            )
            .then_some(1234),
            tls_us: None,
            icmp: None,
            path_mtu: false,
            walk: None,
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

    /// Joins with db's 3306 in `state`, web's probe of path 0 observing
    /// `observed`, and db's canary having seen `seen`.
    fn run(state: ListenerState, observed: Observed, seen: Vec<Sighting>) -> Report {
        let p = plan();
        let web = up(
            vec![],
            vec![
                probe(0, Some("aa"), observed),
                probe(1, None, Observed::Refused),
            ],
            vec![],
        );
        let db = up(
            vec![mysql(state)],
            vec![probe(2, None, Observed::Timeout)],
            seen,
        );
        let round = RoundEvidence {
            started_at: SystemTime::UNIX_EPOCH,
            finished_at: SystemTime::UNIX_EPOCH,
            agents: [("web".to_string(), web), ("db".to_string(), db)].into(),
        };
        join(&p, &round)
    }

    fn saw(nonce: &str) -> Vec<Sighting> {
        vec![Sighting {
            nonce: nonce.into(),
            source: "127.0.9.1:40000".parse().unwrap(),
            datagrams: 0,
            samples: 0,
        }]
    }

    #[test]
    fn quality_sits_beside_the_verdict_and_a_flow_threshold_makes_a_violation() {
        use crate::probe::samples::SampleTally;
        let strict = PLAN.replace(
            "ports = [\"mysql\", 22]",
            "ports = [\"mysql\", 22]\nmax_rtt_ms = 10",
        );
        let p = Plan::parse(&strict, "join.toml").unwrap();
        let mut web = up(
            vec![],
            vec![
                probe(0, Some("aa"), Observed::Open),
                probe(1, None, Observed::Refused),
            ],
            vec![],
        );
        let rtts: Vec<u64> = (0..97).map(|k| 20_000 + (k % 3) * 1000).collect();
        web.probes[0].quality = Some(Box::new(SampleTally::of(100, 100, &rtts)));
        web.probes[1].quality = Some(Box::new(SampleTally::of(100, 0, &[])));
        let db = up(
            vec![mysql(ListenerState::Canary)],
            vec![probe(2, None, Observed::Timeout)],
            saw("aa"),
        );
        let round = RoundEvidence {
            started_at: SystemTime::UNIX_EPOCH,
            finished_at: SystemTime::UNIX_EPOCH,
            agents: [("web".to_string(), web), ("db".to_string(), db)].into(),
        };
        let r = join(&p, &round);
        let q = r.paths[0].quality.clone().flatten().expect("sampled");
        assert_eq!((q.sent, q.answered, q.arrived), (100, 97, None));
        assert_eq!(
            (q.loss_forward_pct, q.loss_return_pct),
            (None, None),
            "no count"
        );
        assert_eq!(r.paths[0].verdict, Verdict::Violation);
        assert!(
            r.paths[0]
                .detail
                .ends_with("; median round trip 21.0 ms > 10 ms"),
            "{}",
            r.paths[0].detail
        );
        let json = serde_json::to_value(&r.paths).unwrap();
        assert_eq!(json[0]["quality"]["rtt_ms"]["p50"], 21.0);
        assert!(json[1]["quality"].is_null() && json[1].get("quality").is_some());
        assert!(json[2].get("quality").is_none(), "not a sampling source");
        // Without the threshold the same figures leave the verdict alone.
        let lenient = join(&plan(), &round);
        assert_eq!(lenient.paths[0].verdict, Verdict::Ok);
        assert!(lenient.paths[0].quality.is_some());
        // A target that counted the samples' SYNs from the probe's source:
        // both directions, exactly.
        let mut counted = round.clone();
        let web = counted.agents.get_mut("web").unwrap();
        web.probes[0].source = Some("127.0.9.1:40000".parse().unwrap());
        counted.agents.get_mut("db").unwrap().syn_samples =
            Some(vec![crate::control::SynSamples {
                source: "127.0.9.1".parse().unwrap(),
                port: 3306,
                syns: 98,
            }]);
        let q = join(&plan(), &counted).paths[0]
            .quality
            .clone()
            .flatten()
            .unwrap();
        assert_eq!(q.arrived, Some(98));
        assert_eq!(
            (q.loss_forward_pct, q.loss_return_pct),
            (Some(2.0), Some(1.02))
        );
        // A TLS path is sampled as a TCP one (marked SYNs): the same count.
        let tls = PLAN.replace(
            "roles = [\"mysql\"]",
            "roles = [\"km\"]\n[roles.km]\nports = [{ name = \"mysql\", port = 3306, protocol = \"tls\", offset = false }]",
        );
        let tls = Plan::parse(&tls, "join.toml").unwrap();
        let r = join(&tls, &counted);
        assert_eq!(r.paths[0].protocol, crate::port::Protocol::Tls);
        let q = r.paths[0].quality.clone().flatten().unwrap();
        assert_eq!(q.arrived, Some(98));
        assert_eq!(q.loss_forward_pct, Some(2.0));
    }

    #[test]
    fn latency_is_the_connect_round_trip_null_without_a_connection_and_tls_apart() {
        let mut r = run(ListenerState::Canary, Observed::Timeout, vec![]);
        assert_eq!(r.paths[0].latency_ms, None, "a timeout never connected");
        assert_eq!(r.paths[0].tls_ms, None);
        let p = plan();
        let mut web = up(vec![], vec![probe(0, Some("aa"), Observed::Open)], vec![]);
        web.probes[0].tls_us = Some(45_678);
        web.probes[0].latency_us = 99_999;
        let db = up(vec![mysql(ListenerState::Canary)], vec![], saw("aa"));
        let round = RoundEvidence {
            started_at: SystemTime::UNIX_EPOCH,
            finished_at: SystemTime::UNIX_EPOCH,
            agents: [("web".to_string(), web), ("db".to_string(), db)].into(),
        };
        r = join(&p, &round);
        assert_eq!(r.paths[0].latency_ms, Some(1.23), "connect only");
        assert_eq!(r.paths[0].tls_ms, Some(45.68));
        let json = serde_json::to_value(&r.paths[0]).unwrap();
        assert_eq!(json["tls_ms"], 45.68);
        // Reports written before `tls_ms` existed still parse.
        let mut old = json.clone();
        old.as_object_mut().unwrap().remove("tls_ms");
        let back: PathReport = serde_json::from_value(old).unwrap();
        assert_eq!(back.tls_ms, None);
    }

    /// The coordinator holds no paths (`PathScope::Lazy`) and walks them:
    /// the report is the one the whole path list gives, with and without
    /// `only`, streamed or not; a result for a path from an agent that is
    /// not its source is never taken for the source's, even when returned
    /// first.
    #[test]
    fn a_plan_walked_lazily_joins_to_the_report_of_the_whole_plan() {
        let all = plan();
        let lazy = Plan::parse_scoped(PLAN, "join.toml", &crate::plan::PathScope::Lazy).unwrap();
        assert!(lazy.paths.is_empty());
        assert_eq!(lazy.path_count(), all.paths.len());
        // db claims web's path 0 (wrongly); web's own result comes later
        // and twice (the first counts).
        let mut late = probe(0, Some("aa"), Observed::Timeout);
        late.detail = "second".into();
        let web = up(
            vec![],
            vec![
                probe(1, None, Observed::Refused),
                probe(0, Some("aa"), Observed::Open),
                late,
            ],
            vec![],
        );
        let db = up(
            vec![mysql(ListenerState::Canary)],
            vec![
                probe(0, Some("zz"), Observed::Refused),
                probe(2, None, Observed::Timeout),
            ],
            saw("aa"),
        );
        let round = RoundEvidence {
            started_at: SystemTime::UNIX_EPOCH,
            finished_at: SystemTime::UNIX_EPOCH,
            agents: [("web".to_string(), web), ("db".to_string(), db)].into(),
        };
        let whole = join(&all, &round);
        assert_eq!(whole.paths[0].observed, Some(Observed::Open));
        assert_eq!(whole, join(&lazy, &round));
        let only = [2, 0];
        let picked = join_paths(&all, &round, &only);
        assert_eq!(picked.paths.len(), 2);
        assert_eq!(picked, join_paths(&lazy, &round, &only));
        let json = |s: &StreamedReport<'_>| {
            let mut out = Vec::new();
            s.write_json(&mut out).unwrap();
            String::from_utf8(out).unwrap()
        };
        assert_eq!(
            json(&join_streamed(&all, &round, Some(&only))),
            json(&join_streamed(&lazy, &round, Some(&only)))
        );
        let mut written = Vec::new();
        super::super::json::write(&whole, &mut written).unwrap();
        assert_eq!(
            String::from_utf8(written).unwrap(),
            json(&join_streamed(&lazy, &round, None))
        );
    }

    /// The index answers what a walk of the records would: the first
    /// sighting of a nonce on the path's TCP port (not a UDP canary's, not
    /// another port's), and the furthest stage per port and source, from
    /// records in any order.
    #[test]
    fn the_evidence_index_finds_what_a_walk_would() {
        let sighting = |nonce: &str, port: u16| Sighting {
            nonce: nonce.into(),
            source: std::net::SocketAddr::from(([198, 18, 0, 1], port)),
            datagrams: 0,
            samples: 0,
        };
        let canary = |port: u16, udp: bool, seen: Vec<Sighting>| CanaryEvidence {
            port,
            seen,
            strays: 0,
            dropped: 0,
            shed: 0,
            transport: if udp {
                crate::control::TransportProtocol::Udp
            } else {
                crate::control::TransportProtocol::Tcp
            },
            counts_samples: false,
        };
        let shake = |port: u16, source: &str, stage: HandshakeStage| Handshake {
            port,
            source: source.parse().unwrap(),
            stage,
        };
        let mut a = AgentEvidence::unreachable(String::new());
        a.canaries = vec![
            canary(80, true, vec![sighting("0c", 1)]),
            canary(
                443,
                false,
                vec![sighting("0b", 2), sighting("0a", 3), sighting("0c", 4)],
            ),
            canary(80, false, vec![sighting("0b", 5), sighting("0b", 6)]),
        ];
        a.handshakes = Some(vec![
            shake(80, "198.18.0.2", HandshakeStage::Connected),
            shake(443, "198.18.0.1", HandshakeStage::Syn),
            shake(80, "198.18.0.1", HandshakeStage::Syn),
            shake(443, "198.18.0.1", HandshakeStage::Connected),
        ]);
        let index = AgentIndex::new(&a);
        let port_of = |s: Option<&Sighting>| s.map(|s| s.source.port());
        assert_eq!(
            port_of(index.sighting(80, &"0b".into())),
            Some(5),
            "the first returned"
        );
        assert_eq!(port_of(index.sighting(443, &"0c".into())), Some(4));
        assert_eq!(
            port_of(index.sighting(80, &"0c".into())),
            None,
            "only on UDP"
        );
        assert_eq!(port_of(index.sighting(443, &"0d".into())), None);
        assert_eq!(port_of(index.sighting(22, &"0a".into())), None);
        assert_eq!(
            index.stage(443, "198.18.0.1".parse().unwrap()),
            Some(HandshakeStage::Connected)
        );
        assert_eq!(
            index.stage(80, "198.18.0.1".parse().unwrap()),
            Some(HandshakeStage::Syn)
        );
        assert_eq!(
            index.stage(80, "198.18.0.2".parse().unwrap()),
            Some(HandshakeStage::Connected)
        );
        assert_eq!(index.stage(443, "198.18.0.2".parse().unwrap()), None);
        let nothing = AgentEvidence::unreachable(String::new());
        let bare = AgentIndex::new(&nothing);
        assert_eq!(
            (
                bare.stage(80, "198.18.0.1".parse().unwrap()),
                bare.sighting(80, &"0b".into())
            ),
            (None, None)
        );
    }

    #[test]
    fn open_needs_the_target_to_see_our_nonce() {
        let r = run(ListenerState::Canary, Observed::Open, saw("aa"));
        let p = &r.paths[0];
        assert_eq!((p.observed, p.verdict), (Some(Observed::Open), Verdict::Ok));
        assert_eq!(p.target_saw, Some(true));
        assert_eq!(p.seen_source.as_deref(), Some("127.0.9.1"));
        assert_eq!(p.flows, ["web to db"]);
        assert_eq!(p.latency_ms, Some(1.23));

        let r = run(ListenerState::Canary, Observed::Open, saw("bb"));
        let p = &r.paths[0];
        assert_eq!(p.observed, Some(Observed::WrongHost));
        assert_eq!(p.verdict, Verdict::Violation);
        assert_eq!(p.target_saw, Some(false));
        assert!(
            p.detail.contains("did not record our nonce"),
            "{}",
            p.detail
        );
    }

    #[test]
    fn local_eperm_is_not_called_an_icmp_rejection() {
        let p = plan();
        let errno = |p: &mut PathProbe, e: i32| {
            p.errno = Some(e);
            p.detail = crate::probe::classify::errno_name(e).into();
        };
        let mut denied = probe(0, Some("aa"), Observed::Unreachable);
        errno(&mut denied, libc::EPERM);
        let mut icmp = probe(0, Some("aa"), Observed::Unreachable);
        errno(&mut icmp, libc::EHOSTUNREACH);
        // An ICMPv6 admin-prohibited reaches connect as EACCES: with the
        // ICMP error in hand it is the router's, not the source's.
        let mut v6 = probe(0, Some("aa"), Observed::Unreachable);
        errno(&mut v6, libc::EACCES);
        v6.icmp = Some(Box::new(crate::probe::IcmpEvidence {
            kind: "admin-prohibited".into(),
            code: 1,
            from: "2001:2:0:1::254".into(),
        }));
        for (probe_of_0, local) in [(denied, true), (icmp, false), (v6, false)] {
            let web = up(
                vec![],
                vec![probe_of_0, probe(1, None, Observed::Refused)],
                vec![],
            );
            let db = up(
                vec![mysql(ListenerState::Canary)],
                vec![probe(2, None, Observed::Timeout)],
                vec![],
            );
            let round = RoundEvidence {
                started_at: SystemTime::UNIX_EPOCH,
                finished_at: SystemTime::UNIX_EPOCH,
                agents: [("web".to_string(), web), ("db".to_string(), db)].into(),
            };
            let d = &join(&p, &round).paths[0].detail;
            assert_eq!(d.contains("refused on web itself"), local, "{d}");
            assert_eq!(d.contains("ICMP"), !local, "{d}");
        }
    }

    /// Whether a path stayed silent, and whether the source refused to
    /// send, are the probe's fields; the detail's words decide nothing.
    #[test]
    fn silence_and_local_denial_are_read_from_the_probes_fields() {
        let p = plan();
        let join_one = |probe_of_0: PathProbe| {
            let web = up(
                vec![],
                vec![probe_of_0, probe(1, None, Observed::Refused)],
                vec![],
            );
            let db = up(vec![mysql(ListenerState::Canary)], vec![], vec![]);
            let round = RoundEvidence {
                started_at: SystemTime::UNIX_EPOCH,
                finished_at: SystemTime::UNIX_EPOCH,
                agents: [("web".to_string(), web), ("db".to_string(), db)].into(),
            };
            join(&p, &round).paths.swap_remove(0)
        };
        let adaptive = "no answer within 120 ms (1 attempt; adaptive timeout: the host's other ports answer in 0.10 ms, longest 0.20 ms; at most 500 ms)";
        // Silent, in the prober's own words: shown as they are.
        let mut silent = probe(0, Some("aa"), Observed::Timeout);
        silent.silence = Some(crate::probe::Silence {
            waited_ms: 120,
            adaptive: true,
            possibly_rate_limited: false,
        });
        silent.detail = adaptive.into();
        assert_eq!(
            join_one(silent.clone()).detail,
            format!("dropped: {adaptive} while the canary of db was listening")
        );
        // Silent without words: the waited time is the field's.
        silent.detail = Box::default();
        assert_eq!(
            join_one(silent.clone()).detail,
            "dropped: no answer within 120 ms (1 attempt) while the canary of db was listening"
        );
        // The same words without the field are not taken for the prober's
        // measure: the plan's deadline is said.
        silent.silence = None;
        silent.detail = adaptive.into();
        assert_eq!(
            join_one(silent).detail,
            "dropped: no answer within 500 ms (1 attempt) while the canary of db was listening"
        );
        // "EPERM" in the words without the errno is no local denial, and
        // the errno is what the report carries.
        let mut words = probe(0, Some("aa"), Observed::Unreachable);
        words.detail = crate::probe::classify::errno_name(libc::EPERM).into();
        let r = join_one(words.clone());
        assert!(!r.detail.contains("refused on web itself"), "{}", r.detail);
        assert_eq!(r.local_denial, None);
        words.errno = Some(libc::EPERM);
        let r = join_one(words);
        assert!(r.detail.contains("refused on web itself"), "{}", r.detail);
        assert_eq!(r.local_denial, Some(libc::EPERM));
        assert_eq!(r.blame.map(|b| b.cause), Some(blame::Cause::Egress));
    }

    #[test]
    fn silence_at_a_listening_canary_is_blocked() {
        for o in [Observed::Timeout, Observed::Unreachable, Observed::Refused] {
            let r = run(ListenerState::Canary, o, vec![]);
            let p = &r.paths[0];
            assert_eq!(p.observed, Some(o));
            assert_eq!(p.verdict, Verdict::Violation, "must-be-open path blocked");
            assert_eq!(p.target_saw, Some(false));
            assert!(
                p.detail.contains("canary of db was listening"),
                "{}",
                p.detail
            );
        }
        // The reverse path db -> web:80 is must-be-blocked and timed out,
        // but 80 is not planned on web: no canary, still blocked.
        let r = run(ListenerState::Canary, Observed::Open, saw("aa"));
        let p = &r.paths[2];
        assert_eq!(
            (p.observed, p.verdict),
            (Some(Observed::Timeout), Verdict::Ok)
        );
        assert_eq!(p.target_saw, None);
        assert_eq!(r.summary.ok, 2);
    }

    /// Joins web's probe of db's 3306 observing `observed`, where db left
    /// the port without a canary because mariadbd listens on loopback only.
    fn run_elsewhere(observed: Observed) -> Report {
        let p = plan();
        let web = up(vec![], vec![probe(0, Some("aa"), observed)], vec![]);
        let mut listener = mysql(ListenerState::Failed);
        listener.elsewhere = vec![crate::control::ListeningSocket {
            address: "127.0.0.1:3306".parse().unwrap(),
            process: Some("mariadbd".into()),
            pid: Some(42),
        }];
        listener.detail = "mariadbd listens on 127.0.0.1:3306 only; no canary".into();
        let db = up(vec![listener], vec![], vec![]);
        let round = RoundEvidence {
            started_at: SystemTime::UNIX_EPOCH,
            finished_at: SystemTime::UNIX_EPOCH,
            agents: [("web".to_string(), web), ("db".to_string(), db)].into(),
        };
        join(&p, &round)
    }

    #[test]
    fn a_service_listening_elsewhere_only_is_refused_as_its_clients_are_never_open() {
        use crate::plan::Expect;
        let r = run_elsewhere(Observed::Refused);
        let p = &r.paths[0];
        assert_eq!(p.observed, Some(Observed::Refused));
        assert_eq!(p.verdict, Verdict::Violation, "{p:#?}");
        assert_eq!(p.target_saw, None);
        assert_eq!(
            p.detail,
            "refused: nothing listens on 127.0.9.2:3306; mariadbd listens on 127.0.0.1:3306 only"
        );
        assert_eq!(p.listening_elsewhere.len(), 1);
        let why = super::super::text::why(p);
        assert!(
            why.contains("mariadbd listens on 127.0.0.1:3306 only"),
            "{why}"
        );
        let json = serde_json::to_value(p).unwrap();
        assert_eq!(
            json["listening_elsewhere"],
            serde_json::json!([{"address": "127.0.0.1:3306", "process": "mariadbd", "pid": 42}])
        );
        // Absent when empty: the other paths carry no such field.
        let other = serde_json::to_value(&r.paths[1]).unwrap();
        assert!(other.get("listening_elsewhere").is_none(), "{other}");
        // A dropped path says where the service listens as well.
        let r = run_elsewhere(Observed::Timeout);
        assert_eq!(r.paths[0].verdict, Verdict::Violation);
        assert!(
            r.paths[0]
                .detail
                .contains("mariadbd listens on 127.0.0.1:3306 only; no canary, so nothing listens on 127.0.9.2:3306"),
            "{}",
            r.paths[0].detail
        );
        // A must-be-blocked path refused there proves no firewall; one
        // dropped does.
        assert_eq!(
            Verdict::decide(
                Expect::Blocked,
                Some(Observed::Refused),
                TargetEnd::Elsewhere
            ),
            Verdict::Error
        );
        assert_eq!(
            Verdict::decide(
                Expect::Blocked,
                Some(Observed::Timeout),
                TargetEnd::Elsewhere
            ),
            Verdict::Ok
        );
        assert_eq!(
            Verdict::decide(Expect::Open, Some(Observed::Refused), TargetEnd::Elsewhere),
            Verdict::Violation
        );
        // Without the sockets (an older agent's `failed`) it stays an error.
        let p = plan();
        let web = up(
            vec![],
            vec![probe(0, Some("aa"), Observed::Refused)],
            vec![],
        );
        let db = up(vec![mysql(ListenerState::Failed)], vec![], vec![]);
        let round = RoundEvidence {
            started_at: SystemTime::UNIX_EPOCH,
            finished_at: SystemTime::UNIX_EPOCH,
            agents: [("web".to_string(), web), ("db".to_string(), db)].into(),
        };
        assert_eq!(join(&p, &round).paths[0].verdict, Verdict::Error);
    }

    #[test]
    fn refused_without_a_canary_is_service_down_not_blocked() {
        // Path 1 is web -> db:22, not planned: refused means nothing listens.
        let r = run(ListenerState::Held, Observed::Refused, vec![]);
        for p in &r.paths[..2] {
            assert_eq!(p.observed, Some(Observed::Refused));
            assert_eq!(p.verdict, Verdict::Error);
            assert!(p.detail.contains("service down"), "{}", p.detail);
            assert_eq!(p.target_saw, None);
        }
        assert_eq!(r.hosts[1].conflicts.len(), 1);
        assert_eq!(r.hosts[1].conflicts[0].state, ListenerState::Held);
        assert_eq!(r.exit_code(), 3);
        let r = run(ListenerState::Held, Observed::Open, vec![]);
        assert_eq!(r.paths[0].verdict, Verdict::Ok);
        assert_eq!(r.paths[0].target_saw, None);
    }

    #[test]
    fn check_and_schedule_mode_judge_a_live_port_alike() {
        // Regression: a must-be-blocked path answered by `refused` where no
        // canary holds the port was `error` in check but ok in schedule mode.
        use crate::schedule::PathSample;
        for observed in Observed::ALL {
            // Path 0 (expect open) to a held port, path 2 (expect blocked)
            // to a port that is not planned: both live, no canary.
            let p = plan();
            let mut web = up(vec![], vec![probe(0, None, observed)], vec![]);
            web.probes.push(probe(1, None, Observed::Timeout));
            let db = up(
                vec![mysql(ListenerState::Held)],
                vec![probe(2, None, observed)],
                vec![],
            );
            let round = RoundEvidence {
                started_at: SystemTime::UNIX_EPOCH,
                finished_at: SystemTime::UNIX_EPOCH,
                agents: [("web".to_string(), web), ("db".to_string(), db)].into(),
            };
            let r = join(&p, &round);
            for i in [0, 2] {
                let path = &r.paths[i];
                let scheduled = PathSample {
                    from: path.from.clone(),
                    to: path.to.clone(),
                    port: crate::port::Port::new(path.port).unwrap(),
                    service: path.service.clone(),
                    expect: path.expect,
                    observed,
                    latency: None,
                    family: None,
                    cert_not_after: None,
                    cert_verified: None,
                    protocol: path.protocol,
                    proof: None,
                    answer: None,
                    history: Default::default(),
                };
                assert_eq!(
                    path.verdict,
                    scheduled.verdict(),
                    "{observed} expecting {}: check and schedule mode disagree",
                    path.expect
                );
            }
            if observed == Observed::Refused {
                assert_eq!(r.paths[0].verdict, Verdict::Error);
                assert_eq!(r.paths[2].verdict, Verdict::Error);
                assert!(
                    r.paths[2].detail.contains("service down"),
                    "{}",
                    r.paths[2].detail
                );
            }
        }
    }

    #[test]
    fn an_unreachable_agent_makes_its_paths_errors_and_the_rest_are_measured() {
        let p = plan();
        let web = up(vec![], vec![probe(0, Some("aa"), Observed::Open)], vec![]);
        let round = RoundEvidence {
            started_at: SystemTime::UNIX_EPOCH,
            finished_at: SystemTime::UNIX_EPOCH,
            agents: [
                ("web".to_string(), web),
                (
                    "db".to_string(),
                    AgentEvidence::unreachable("connect refused".into()),
                ),
            ]
            .into(),
        };
        let r = join(&p, &round);
        assert!(r.paths.iter().all(|p| p.verdict == Verdict::Error));
        assert!(r.paths[0].detail.contains("target agent db unreachable"));
        assert!(r.paths[2].detail.contains("source agent db unreachable"));
        assert_eq!(r.hosts[1].agent, AgentState::Unreachable);
        assert_eq!(r.hosts[0].agent, AgentState::Up);
        assert_eq!(r.exit_code(), 3);
    }

    #[test]
    fn a_path_whose_canary_shed_every_attempt_is_an_error_never_wrong_host() {
        let p = plan();
        let mut web = up(
            vec![],
            vec![probe(0, Some("aa"), Observed::WrongHost)],
            vec![],
        );
        web.probes[0].shed = true;
        web.probes[0].detail = "connected, but the connection closed without an answer".into();
        let mut db = up(vec![mysql(ListenerState::Canary)], vec![], vec![]);
        db.canaries[0].shed = 3;
        let round = RoundEvidence {
            started_at: SystemTime::UNIX_EPOCH,
            finished_at: SystemTime::UNIX_EPOCH,
            agents: [("web".to_string(), web), ("db".to_string(), db)].into(),
        };
        let r = join(&p, &round);
        let path = &r.paths[0];
        assert_eq!(path.verdict, Verdict::Error, "{path:?}");
        assert_eq!(path.observed, None);
        assert!(
            path.detail.contains("shed 3 connections"),
            "{}",
            path.detail
        );
        // The same probe without the shed mark stays the prober's word.
        let mut web = up(
            vec![],
            vec![probe(0, Some("aa"), Observed::WrongHost)],
            vec![],
        );
        web.probes[0].detail = "answered by something else".into();
        let db = up(vec![mysql(ListenerState::Canary)], vec![], vec![]);
        let round = RoundEvidence {
            started_at: SystemTime::UNIX_EPOCH,
            finished_at: SystemTime::UNIX_EPOCH,
            agents: [("web".to_string(), web), ("db".to_string(), db)].into(),
        };
        assert_eq!(join(&p, &round).paths[0].verdict, Verdict::Violation);
    }

    #[test]
    fn a_nonce_seen_by_another_agent_is_named() {
        let p = plan();
        let mut web = up(
            vec![ListenerReport {
                elsewhere: Vec::new(),
                port: 3306,
                protocol: Protocol::Tcp,
                service: "x".into(),
                state: ListenerState::Canary,
                detail: String::new(),
            }],
            vec![probe(0, Some("aa"), Observed::WrongHost)],
            saw("aa"),
        );
        web.probes[0].detail = "answered by the agent of web, not db".into();
        let db = up(vec![mysql(ListenerState::Canary)], vec![], vec![]);
        let round = RoundEvidence {
            started_at: SystemTime::UNIX_EPOCH,
            finished_at: SystemTime::UNIX_EPOCH,
            agents: [("web".to_string(), web), ("db".to_string(), db)].into(),
        };
        let r = join(&p, &round);
        let p = &r.paths[0];
        assert_eq!(p.observed, Some(Observed::WrongHost));
        assert!(
            p.detail.contains("our nonce arrived at web from 127.0.9.1"),
            "{}",
            p.detail
        );
    }

    /// The target's handshake trace is matched to a path by the source's
    /// address of the path's family only: the IPv4 path's connection is no
    /// evidence that the IPv6 path's SYN arrived.
    #[test]
    fn handshakes_count_only_for_the_paths_own_family() {
        let p = Plan::parse(
            r#"
name = "dual"
[defaults]
timeout_ms = 500
retries = 0
[[hosts]]
name = "web"
address = ["198.18.1.20", "2001:2:0:1::20"]
[[hosts]]
name = "db"
address = ["198.18.3.40", "2001:2:0:3::40"]
roles = ["mysql"]
[[flows]]
from = "host:web"
to = "host:db"
ports = ["mysql"]
"#,
            "dual.toml",
        )
        .unwrap();
        assert_eq!(p.paths.len(), 2);
        let v6 = p
            .paths
            .iter()
            .position(|x| x.address.to_string().contains(':'))
            .unwrap();
        let v4 = 1 - v6;
        let mut silent = probe(v6, Some("bb"), Observed::Timeout);
        silent.source = None;
        let mut open = probe(v4, Some("aa"), Observed::Open);
        open.source = Some("198.18.1.20:40000".parse().unwrap());
        let web = up(vec![], vec![silent, open], vec![]);
        let mut db = up(
            vec![mysql(ListenerState::Canary)],
            vec![],
            vec![Sighting {
                nonce: "aa".into(),
                source: "198.18.1.20:40000".parse().unwrap(),
                datagrams: 0,
                samples: 0,
            }],
        );
        db.handshakes = Some(vec![Handshake {
            port: 3306,
            source: "198.18.1.20".parse().unwrap(),
            stage: HandshakeStage::Connected,
        }]);
        let round = RoundEvidence {
            started_at: SystemTime::UNIX_EPOCH,
            finished_at: SystemTime::UNIX_EPOCH,
            agents: [("web".to_string(), web), ("db".to_string(), db)].into(),
        };
        let r = join(&p, &round);
        assert_eq!(r.paths[v4].target_stage, Some(TargetStage::Nonce));
        assert_eq!(r.paths[v6].target_stage, Some(TargetStage::Nothing));
        let blame = r.paths[v6].blame.as_ref().unwrap();
        assert_eq!(blame.cause, crate::report::Cause::Drop, "{blame:?}");
    }

    #[test]
    fn verdicts_follow_the_table() {
        use crate::plan::Expect::{Blocked, Open};
        use Observed::{LocalError, Refused, Timeout, TlsError, Unreachable, WrongHost};
        let cases = [
            (Open, Some(Observed::Open), Verdict::Ok),
            (Blocked, Some(Observed::Open), Verdict::Violation),
            (Blocked, Some(Timeout), Verdict::Ok),
            (Blocked, Some(Unreachable), Verdict::Ok),
            (Blocked, Some(Refused), Verdict::Ok),
            (Open, Some(Timeout), Verdict::Violation),
            (Open, Some(WrongHost), Verdict::Violation),
            (Blocked, Some(WrongHost), Verdict::Violation),
            (Blocked, Some(TlsError), Verdict::Violation),
            (Open, Some(LocalError), Verdict::Error),
            (Blocked, None, Verdict::Error),
            (Open, Some(Observed::Lossy), Verdict::Error),
            (Blocked, Some(Observed::Lossy), Verdict::Error),
        ];
        for (e, o, v) in cases {
            assert_eq!(Verdict::decide(e, o, TargetEnd::Canary), v, "{e:?} {o:?}");
        }
        // Without a canary a refusal proves nothing either way.
        for e in [Open, Blocked] {
            assert_eq!(
                Verdict::decide(e, Some(Refused), TargetEnd::Live),
                Verdict::Error
            );
        }
    }

    #[test]
    fn a_dial_to_where_nothing_listens_is_refused_with_both_ports_named() {
        let plan = Plan::parse(
            r#"
name = "dial"
[[hosts]]
name = "gw"
address = "127.0.9.1"
roles = ["client"]
port_offset = 2
[[hosts]]
name = "km"
address = "127.0.9.2"
roles = ["server"]
[roles.client]
dials = [{ name = "thrift", to = "server", port = 7000 }]
[roles.server]
ports = [{ name = "thrift", port = 7000, offset = false }]
[[flows]]
from = "host:gw"
to = "host:km"
ports = ["thrift"]
"#,
            "dial.toml",
        )
        .unwrap();
        let gw = up(
            vec![],
            vec![probe(0, Some("aa"), Observed::Refused)],
            vec![],
        );
        let km = up(
            vec![ListenerReport {
                elsewhere: Vec::new(),
                port: 7000,
                protocol: Protocol::Tcp,
                service: "thrift".into(),
                state: ListenerState::Canary,
                detail: String::new(),
            }],
            vec![],
            vec![],
        );
        let round = RoundEvidence {
            started_at: SystemTime::UNIX_EPOCH,
            finished_at: SystemTime::UNIX_EPOCH,
            agents: [("gw".to_string(), gw), ("km".to_string(), km)].into(),
        };
        let r = join(&plan, &round);
        let p = &r.paths[0];
        assert_eq!((p.port, p.server_port), (7002, Some(7000)));
        assert_eq!(
            (p.observed, p.verdict),
            (Some(Observed::Refused), Verdict::Violation)
        );
        assert_eq!(
            p.detail,
            "refused: gw dials 7002; km's thrift listens on 7000, and nothing listens on 7002"
        );
    }

    #[test]
    fn the_streamed_json_report_is_the_joined_one_byte_for_byte() {
        let p = plan();
        // A probe a stranger agent claims for web's path must not count,
        // streamed or not.
        let mut stranger = up(
            vec![],
            vec![probe(0, Some("zz"), Observed::Refused)],
            vec![],
        );
        stranger.outcome = AgentOutcome::Up;
        let web = up(
            vec![],
            vec![
                probe(0, Some("aa"), Observed::Open),
                probe(1, None, Observed::Refused),
            ],
            vec![],
        );
        let db = up(
            vec![mysql(ListenerState::Canary)],
            vec![probe(2, None, Observed::Timeout)],
            saw("aa"),
        );
        let round = RoundEvidence {
            started_at: SystemTime::UNIX_EPOCH,
            finished_at: SystemTime::UNIX_EPOCH,
            agents: [
                ("web".to_string(), web),
                ("db".to_string(), db),
                ("stranger".to_string(), stranger),
            ]
            .into(),
        };
        for only in [None, Some(vec![2, 0]), Some(vec![])] {
            let whole = match &only {
                None => join(&p, &round),
                Some(o) => join_paths(&p, &round, o),
            };
            let streamed = join_streamed(&p, &round, only.as_deref());
            assert_eq!(streamed.report.summary, whole.summary, "{only:?}");
            assert!(streamed.report.paths.is_empty());
            let (mut a, mut b) = (Vec::new(), Vec::new());
            crate::report::json::write(&whole, &mut a).unwrap();
            streamed.write_json(&mut b).unwrap();
            assert_eq!(
                String::from_utf8(b).unwrap(),
                String::from_utf8(a.clone()).unwrap(),
                "{only:?}"
            );
            // Judged once, by one to four threads, one path or several per
            // chunk, in memory or spilled to a file: the same bytes and
            // summary.
            for (threads, chunk, memory) in [(1, 256, 1 << 20), (2, 1, 0), (3, 1, 1), (4, 2, 0)] {
                let mut once = join_deferred(&p, &round, only.as_deref());
                assert_eq!(once.report.summary, Summary::default());
                let mut c = Vec::new();
                let pass = OnePass {
                    threads,
                    chunk,
                    memory,
                };
                once.write_json_with(&mut c, pass).unwrap();
                assert_eq!(once.report.summary, whole.summary, "{only:?} {pass:?}");
                assert_eq!(
                    String::from_utf8(c).unwrap(),
                    String::from_utf8(a.clone()).unwrap(),
                    "{only:?} {pass:?}"
                );
            }
        }
        let r = join(&p, &round);
        assert_eq!(r.paths[0].verdict, Verdict::Ok);
    }

    /// A dual-stack web whose plan address is IPv4 reaches an IPv6-only db
    /// from an address the plan never names, and db's `table ip6` drops
    /// it; a second path to db fails neighbour discovery.
    fn v6_only_target() -> Plan {
        Plan::parse(
            r#"
name = "v6"
[defaults]
timeout_ms = 500
retries = 0
[[hosts]]
name = "web"
address = "198.18.1.20"
[[hosts]]
name = "db"
address = "2001:2:0:3::40"
roles = ["mysql"]
[[flows]]
from = "host:web"
to = "host:db"
ports = ["mysql"]
"#,
            "v6.toml",
        )
        .unwrap()
    }

    fn v6_round(web: AgentEvidence, db: AgentEvidence) -> RoundEvidence {
        RoundEvidence {
            started_at: SystemTime::UNIX_EPOCH,
            finished_at: SystemTime::UNIX_EPOCH,
            agents: [("web".to_string(), web), ("db".to_string(), db)].into(),
        }
    }

    /// Regression (issue 26): the drop in the target's `table ip6` was
    /// blamed on the network because the source's IPv6 address, absent
    /// from the plan, was not among the addresses the trace is read for.
    #[test]
    fn a_drop_traced_from_an_address_only_the_agent_reported_names_the_targets_rule() {
        use crate::control::{TraceDirection, TraceEvidence, TraceState, TraceStop, TracedFlow};
        let p = v6_only_target();
        assert_eq!(p.paths.len(), 1);
        let mut silent = probe(0, Some("bb"), Observed::Timeout);
        silent.source = None;
        let mut web = up(vec![], vec![silent], vec![]);
        web.addresses = vec![
            "198.18.1.20".parse().unwrap(),
            "2001:2:0:1::20".parse().unwrap(),
        ];
        let mut db = up(vec![mysql(ListenerState::Canary)], vec![], vec![]);
        db.trace = Some(TraceEvidence {
            state: TraceState::Traced,
            reason: None,
            flows: vec![TracedFlow {
                direction: TraceDirection::In,
                source: "2001:2:0:1::20".parse().unwrap(),
                dest: "2001:2:0:3::40".parse().unwrap(),
                port: 3306,
                packets: 2,
                stop: Some(TraceStop {
                    table: "ip6 filter".into(),
                    chain: "input".into(),
                    handle: Some(5),
                    text: Some("tcp dport 3306 drop".into()),
                    policy: None,
                }),
            }],
        });
        let r = join(&p, &v6_round(web.clone(), db.clone()));
        let b = r.paths[0].blame.as_ref().unwrap();
        assert_eq!(b.at, blame::Where::Target, "{b:?}");
        let rule = b.rule.as_ref().unwrap();
        assert_eq!((rule.table.as_str(), rule.handle), ("ip6 filter", Some(5)));
        // Without the agent's list the same trace says nothing of this
        // source: the target never saw it, the network is blamed.
        web.addresses.clear();
        let r = join(&p, &v6_round(web, db));
        assert_eq!(r.paths[0].blame.as_ref().unwrap().at, blame::Where::Network);
    }

    /// Regression (issue 26): an "unreachable" the source's own kernel
    /// sent (neighbour discovery failed) was reported as "rejected by
    /// <the source's address>, a device on the way".
    #[test]
    fn a_failed_neighbour_discovery_is_said_and_never_blamed_on_a_device() {
        let p = v6_only_target();
        let mut failed = probe(0, Some("bb"), Observed::Unreachable);
        failed.source = None;
        failed.errno = Some(libc::EHOSTUNREACH);
        failed.icmp = Some(Box::new(crate::probe::IcmpEvidence {
            kind: "address-unreachable".into(),
            code: 3,
            from: "2001:2:0:1::20".into(),
        }));
        failed.neighbour = Some(Box::new(crate::control::NeighbourFailure {
            address: "2001:2:0:3::40".parse().unwrap(),
            state: "failed".into(),
        }));
        let mut web = up(vec![], vec![failed.clone()], vec![]);
        web.addresses = vec!["2001:2:0:1::20".parse().unwrap()];
        let db = up(vec![mysql(ListenerState::Canary)], vec![], vec![]);
        let r = join(&p, &v6_round(web.clone(), db.clone()));
        let path = &r.paths[0];
        let b = path.blame.as_ref().unwrap();
        assert_eq!(
            (b.at, b.cause, b.hop.as_deref()),
            (
                blame::Where::Target,
                blame::Cause::NeighbourUnresolved,
                Some("2001:2:0:3::40")
            ),
            "{path:#?}"
        );
        assert!(
            path.detail.contains("neighbour discovery failed"),
            "{}",
            path.detail
        );
        assert!(
            !path.detail.contains("a device on the way"),
            "{}",
            path.detail
        );
        let why = b.sentence(&path.to, path.icmp.as_ref());
        assert!(why.contains("may drop neighbour discovery"), "{why}");
        // The neighbour table unread: still the source's own word, never
        // a device's.
        failed.neighbour = None;
        web.probes = vec![failed];
        let r = join(&p, &v6_round(web, db));
        let b = r.paths[0].blame.as_ref().unwrap();
        assert_eq!(
            (b.at, b.cause),
            (blame::Where::Unknown, blame::Cause::NeighbourUnresolved)
        );
        assert!(!r.paths[0].detail.contains("a device on the way"));
    }

    /// web (ops) reaches db (data) through fw, a plan host that routes
    /// between the zones with its own agent; fw's forward chain stops the
    /// path.
    fn routed_through_fw() -> Plan {
        Plan::parse(
            r#"
name = "routed"
[defaults]
timeout_ms = 500
retries = 0
[roles.gate]
ports = [{ name = "mgmt", port = 7200 }]
[[hosts]]
name = "web"
address = "198.18.1.20"
[[hosts]]
name = "fw"
address = "198.18.1.254"
roles = ["gate"]
[[hosts]]
name = "db"
address = "198.18.2.40"
roles = ["mysql"]
[[flows]]
from = "host:web"
to = "host:db"
ports = ["mysql"]
[[flows]]
from = "host:web"
to = "host:fw"
ports = ["mgmt"]
"#,
            "routed.toml",
        )
        .unwrap()
    }

    fn traced(flows: Vec<crate::control::TracedFlow>) -> Option<crate::control::TraceEvidence> {
        Some(crate::control::TraceEvidence {
            state: crate::control::TraceState::Traced,
            reason: None,
            flows,
        })
    }

    fn forward_flow(
        direction: crate::control::TraceDirection,
        port: u16,
        stop: Option<crate::control::TraceStop>,
    ) -> crate::control::TracedFlow {
        crate::control::TracedFlow {
            direction,
            source: "198.18.1.20".parse().unwrap(),
            dest: "198.18.2.40".parse().unwrap(),
            port,
            packets: 1,
            stop,
        }
    }

    /// Regression: a path stopped in the forward chain of a plan host
    /// routing between the zones was blamed on the network at the
    /// router's address without the rule, although the router's agent
    /// traced it. Its forward trace names the rule, on fw; the target's
    /// own trace (never arrived) and a path the router did not stop
    /// keep saying what they said.
    #[test]
    fn a_forwarding_plan_hosts_trace_names_the_forward_rule_that_stopped_a_path() {
        use crate::control::{TraceDirection, TraceStop};
        let p = routed_through_fw();
        let db_path = p.paths.iter().position(|x| x.to == "db").unwrap();
        let mut rejected = probe(db_path, Some("bb"), Observed::Unreachable);
        rejected.source = Some("198.18.1.20:40000".parse().unwrap());
        rejected.icmp = Some(Box::new(crate::probe::IcmpEvidence {
            kind: "admin-prohibited".into(),
            code: 13,
            from: "198.18.1.254".into(),
        }));
        let web = up(vec![], vec![rejected], vec![]);
        let mut db = up(vec![mysql(ListenerState::Canary)], vec![], vec![]);
        db.trace = traced(vec![]);
        let stop = TraceStop {
            table: "inet fw".into(),
            chain: "forward".into(),
            handle: Some(9),
            text: Some("tcp dport 3306 reject with icmpx admin-prohibited".into()),
            policy: None,
        };
        let mut fw = up(vec![], vec![], vec![]);
        fw.trace = traced(vec![forward_flow(
            TraceDirection::Forward,
            3306,
            Some(stop.clone()),
        )]);
        let round = |web: &AgentEvidence, fw: &AgentEvidence, db: &AgentEvidence| RoundEvidence {
            started_at: SystemTime::UNIX_EPOCH,
            finished_at: SystemTime::UNIX_EPOCH,
            agents: [
                ("web".to_string(), web.clone()),
                ("fw".to_string(), fw.clone()),
                ("db".to_string(), db.clone()),
            ]
            .into(),
        };
        let r = join(&p, &round(&web, &fw, &db));
        let path = &r.paths[db_path];
        let b = path.blame.as_ref().unwrap();
        assert_eq!(
            (b.at, b.cause, b.hop.as_deref()),
            (
                blame::Where::Network,
                blame::Cause::IcmpReject,
                Some("198.18.1.254")
            ),
            "{path:#?}"
        );
        let rule = b.rule.as_ref().expect("fw's forward rule");
        assert_eq!(
            (
                rule.host.as_str(),
                rule.table.as_str(),
                rule.chain.as_str(),
                rule.handle
            ),
            ("fw", "inet fw", "forward", Some(9))
        );
        // The same stop seen arriving (fw as a target), or on another
        // port, or on a flow that passed, names nothing.
        for other in [
            forward_flow(TraceDirection::In, 3306, Some(stop.clone())),
            forward_flow(TraceDirection::Forward, 3307, Some(stop.clone())),
            forward_flow(TraceDirection::Forward, 3306, None),
        ] {
            let mut fw = fw.clone();
            fw.trace = traced(vec![other.clone()]);
            let b = join(&p, &round(&web, &fw, &db)).paths[db_path]
                .blame
                .clone()
                .unwrap();
            assert_eq!((b.at, b.rule), (blame::Where::Network, None), "{other:?}");
        }
        // The target's own rule comes first: it saw the SYN and dropped it.
        let mut db_drops = db.clone();
        db_drops.trace = traced(vec![forward_flow(
            TraceDirection::In,
            3306,
            Some(TraceStop {
                chain: "input".into(),
                table: "inet filter".into(),
                ..stop.clone()
            }),
        )]);
        let b = join(&p, &round(&web, &fw, &db_drops)).paths[db_path]
            .blame
            .clone()
            .unwrap();
        assert_eq!(b.rule.unwrap().host, "db");
        // A target that does not trace: the router's trace still names it.
        let mut untraced = db.clone();
        untraced.trace = None;
        let b = join(&p, &round(&web, &fw, &untraced)).paths[db_path]
            .blame
            .clone()
            .unwrap();
        assert_eq!(b.rule.unwrap().chain, "forward");
    }
}
