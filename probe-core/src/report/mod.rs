//! The result of a round as plain data: the `portcall.report/v1` model, the
//! join that turns both sides' evidence into verdicts, and the renderers.
//! Every output format (table and JSON here; junit, markdown, html,
//! Prometheus beside them) reads a [`Report`], never the round itself, so
//! they all agree.

mod atomic;
pub mod blame;
pub mod diff;
mod evidence;
mod format;
pub mod html;
mod html_grid;
mod html_quality;
mod join;
pub mod json;
pub mod junit;
pub mod markdown;
pub(crate) mod markup;
pub mod prometheus;
pub mod quality;
pub mod suggest;
pub mod table;
mod text;
pub mod udp;

use std::time::SystemTime;

use serde::{Deserialize, Serialize};

pub use atomic::{WriteError, check_writable, write_atomically, write_atomically_with};
pub use blame::{Blame, BlameRule, Cause, TargetStage, Where};
pub use evidence::{AgentEvidence, AgentOutcome, RoundEvidence};
pub use format::{RenderOptions, ReportFormat, UnknownFormat, render};
pub use join::{OnePass, StreamedReport, join, join_deferred, join_paths, join_streamed};
pub use text::{PortLabels, unix_seconds};

use crate::control::{ListenerState, ListeningSocket};
use crate::plan::{Expect, Family};
use crate::port::Protocol;
use crate::probe::{CertFacts, IcmpEvidence, Observed};

/// The `schema` value of a report.
pub const SCHEMA: &str = "portcall.report/v1";

/// A round's report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// [`SCHEMA`].
    pub schema: String,
    /// The plan's name.
    pub plan: String,
    /// When the round started (RFC 3339, UTC).
    pub started_at: String,
    /// When the round finished (RFC 3339, UTC).
    pub finished_at: String,
    /// Counts by verdict.
    pub summary: Summary,
    /// Every host of the plan.
    pub hosts: Vec<HostReport>,
    /// Every path of the plan, in plan order.
    pub paths: Vec<PathReport>,
    /// Notes about how the round ran that a reader needs to interpret it
    /// (the demo's: why must-be-blocked paths are violations on loopback);
    /// every format carries them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
}

/// Counts by verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Summary {
    /// Paths in the plan.
    pub paths: usize,
    /// Expectation met.
    pub ok: usize,
    /// Expectation not met.
    pub violations: usize,
    /// Not measured, or not measurable.
    pub errors: usize,
}

/// A host and its agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostReport {
    /// The host's name.
    pub name: String,
    /// Its address as the round used it.
    pub address: String,
    /// Whether its agent took part.
    pub agent: AgentState,
    /// Planned ports that got no canary: held by a real service (probed
    /// live) or impossible to open.
    pub conflicts: Vec<Conflict>,
    /// Why the agent was unreachable. Not part of the JSON contract.
    #[serde(skip)]
    pub agent_detail: Option<String>,
    /// When the agent holds another plan (`agent` is `plan-mismatch`):
    /// both sides' digests and files. Absent otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plan_mismatch: Option<PlanMismatch>,
    /// Every plan address of a host with several (dual stack), primary
    /// first; absent (empty) when it has one, which is `address`.
    #[serde(default, skip_serializing_if = "several_not")]
    pub addresses: Vec<String>,
    /// The host's zone in the plan, `null` without one. Added to v1 so
    /// that `suggest` can say which addresses a zone selector covers
    /// without the plan file.
    #[serde(default)]
    pub zone: Option<String>,
    /// Whether the host's agent could trace its firewall to name the rule
    /// that stops a path, and why not; `null` when it did not try (the
    /// demo's agents, `--no-rule-trace`). Added to v1.
    #[serde(default)]
    pub rule_trace: Option<RuleTrace>,
}

fn several_not(v: &[String]) -> bool {
    v.len() < 2
}

/// Whether an agent traced its host's firewall in the round.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuleTrace {
    /// `traced` or `unavailable`.
    pub state: crate::control::TraceState,
    /// Why tracing was not possible (not permitted, no nftables), or what
    /// it could not see (legacy iptables).
    pub reason: Option<String>,
}

impl HostReport {
    /// Every plan address of the host: `addresses`, or `address` alone
    /// when it has one (and in reports written before the list existed).
    pub fn plan_addresses(&self) -> Vec<&str> {
        if self.addresses.is_empty() {
            vec![self.address.as_str()]
        } else {
            self.addresses.iter().map(String::as_str).collect()
        }
    }

    /// Its plan address of `family`: from `addresses`, or `address` when
    /// that is the only one and of that family.
    pub fn address_of(&self, family: crate::plan::Family) -> Option<&str> {
        let of = |a: &&String| {
            a.parse::<std::net::IpAddr>()
                .is_ok_and(|ip| crate::plan::Family::of(ip) == family)
        };
        match self.addresses.as_slice() {
            [] => Some(&self.address).filter(of).map(String::as_str),
            all => all.iter().find(of).map(String::as_str),
        }
    }
}

/// The coordinator and an agent hold different plans.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlanMismatch {
    /// The coordinator's plan digest.
    pub coordinator_digest: String,
    /// The plan file the coordinator loaded.
    pub coordinator_file: String,
    /// The agent's plan digest.
    pub agent_digest: String,
    /// The plan file the agent loaded; `null` when it did not say.
    pub agent_file: Option<String>,
}

impl std::fmt::Display for PlanMismatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "the agent holds another plan: digest {} from {}, the coordinator's is {} from {}; give both the same plan file",
            self.agent_digest,
            self.agent_file.as_deref().unwrap_or("an unnamed file"),
            self.coordinator_digest,
            self.coordinator_file
        )
    }
}

/// Whether a host's agent took part in the round.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AgentState {
    /// It answered and did its part.
    Up,
    /// It could not be reached, or refused the round.
    Unreachable,
    /// The host is in no path, so its agent was not asked.
    None,
    /// The round was cancelled (Ctrl-C, SIGTERM) before the agent finished
    /// its part; the coordinator tore the round down on it.
    Cancelled,
    /// The agent holds another plan than the coordinator
    /// ([`HostReport::plan_mismatch`] says which).
    #[serde(rename = "plan-mismatch")]
    PlanMismatch,
}

impl AgentState {
    /// `up`, `unreachable`, `none`, `cancelled` or `plan-mismatch`.
    pub const fn as_str(self) -> &'static str {
        match self {
            AgentState::Up => "up",
            AgentState::Unreachable => "unreachable",
            AgentState::None => "none",
            AgentState::Cancelled => "cancelled",
            AgentState::PlanMismatch => "plan-mismatch",
        }
    }

    /// Whether the agent was asked and did not do its part (the renderers
    /// list these hosts with the reason).
    pub const fn is_problem(self) -> bool {
        matches!(
            self,
            AgentState::Unreachable | AgentState::Cancelled | AgentState::PlanMismatch
        )
    }
}

/// A planned port without a canary.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Conflict {
    /// The port.
    pub port: u16,
    /// Its name.
    pub service: String,
    /// `held` or `failed`.
    pub state: ListenerState,
    /// Why.
    pub detail: String,
}

impl std::fmt::Display for Conflict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "port {} ({}) {}: {}",
            self.port,
            self.service,
            self.state.as_str(),
            self.detail
        )
    }
}

/// A path's verdict against its expectation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    /// Expectation met.
    Ok,
    /// Expectation not met.
    Violation,
    /// Not measured, or the measurement cannot tell; never counts as open
    /// or blocked.
    Error,
}

/// What held the target end of a measured path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TargetEnd {
    /// Our canary listened on the port (a `check` round).
    Canary,
    /// No canary: a real service holds the port, the port is not a planned
    /// one, or the probe ran against the live services (schedule mode).
    Live,
    /// No canary, because the port's service listens only at other
    /// addresses than the path's (the target's socket table says so):
    /// nothing listens where clients connect, so a refusal is what they
    /// will get.
    Elsewhere,
}

impl Verdict {
    /// The verdict of a measured path against its expectation: the one
    /// rule for `check` and schedule mode.
    ///
    /// - open and blocked meet or miss their expectation;
    /// - a connection to the wrong party, or a failed TLS handshake after
    ///   TCP got through, is neither, so it misses both;
    /// - `refused` where no canary listened cannot tell a firewall's reset
    ///   from a stopped (or never started) service, so it proves neither
    ///   open nor blocked: `error`, whatever the expectation; except where
    ///   the service listens only elsewhere ([`TargetEnd::Elsewhere`]): a
    ///   must-be-open path is then refused as its clients are, a
    ///   violation;
    /// - `local-error` (or no measurement) is never open nor blocked.
    pub fn decide(expect: Expect, observed: Option<Observed>, end: TargetEnd) -> Verdict {
        match (observed, expect, end) {
            // Attempts that disagreed measured neither open nor blocked.
            (None | Some(Observed::LocalError | Observed::Lossy), _, _) => Verdict::Error,
            (Some(Observed::Refused), _, TargetEnd::Live) => Verdict::Error,
            // Nothing listens on the path's address: a must-be-open path
            // is refused as its clients will be; for a must-be-blocked one
            // a refusal cannot tell a firewall's reset from the kernel's.
            (Some(Observed::Refused), Expect::Blocked, TargetEnd::Elsewhere) => Verdict::Error,
            (Some(Observed::Open), Expect::Open, _) => Verdict::Ok,
            (
                Some(Observed::Refused | Observed::Timeout | Observed::Unreachable),
                Expect::Blocked,
                _,
            ) => Verdict::Ok,
            _ => Verdict::Violation,
        }
    }

    /// `ok`, `violation` or `error`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Verdict::Ok => "ok",
            Verdict::Violation => "violation",
            Verdict::Error => "error",
        }
    }
}

/// One path's measurement and verdict.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PathReport {
    /// Source host.
    pub from: String,
    /// Target host.
    pub to: String,
    /// Target address.
    pub address: String,
    /// Target port.
    pub port: u16,
    /// The port's name on the target.
    pub service: String,
    /// TCP or TLS.
    pub protocol: Protocol,
    /// What the plan wants.
    pub expect: Expect,
    /// What was observed, joined with the target's evidence; `null` when
    /// the path was not probed.
    pub observed: Option<Observed>,
    /// Against the expectation.
    pub verdict: Verdict,
    /// Why, in words.
    pub detail: String,
    /// The final attempt's TCP connect round trip (SYN to SYN-ACK) in
    /// milliseconds, without the TLS handshake or the nonce exchange;
    /// `null` when the path never connected.
    pub latency_ms: Option<f64>,
    /// Attempts that reached the network.
    pub attempts: u32,
    /// Whether the target's canary saw our nonce; `null` without a canary.
    pub target_saw: Option<bool>,
    /// The source address the canary saw.
    pub seen_source: Option<String>,
    /// The address family the path runs over (`ipv4`, `ipv6`): a
    /// dual-stack pair has one path per family. `null` in reports written
    /// before families existed, and for a DNS target never probed.
    #[serde(default)]
    pub family: Option<Family>,
    /// The ICMP error that came back for the probe, with its sender.
    #[serde(default)]
    pub icmp: Option<IcmpEvidence>,
    /// How far our connection got at the target, by the target agent's
    /// evidence; `null` without it.
    #[serde(default)]
    pub target_stage: Option<TargetStage>,
    /// Where and why the path is blocked or failing; `null` for open paths
    /// and for paths not measured.
    #[serde(default)]
    pub blame: Option<Blame>,
    /// Labels of the flows that produce the path, for grouping. Not part
    /// of the JSON contract (empty when read back from JSON).
    #[serde(skip)]
    pub flows: Vec<String>,
    /// The source selectors (`zone:NAME`, `role:NAME`, `host:NAME`, `all`)
    /// of the flows that produce the path. Added to v1 so that `suggest`
    /// can name what a must-be-blocked flow covers; empty in older reports.
    #[serde(default)]
    pub flow_from: Vec<String>,
    /// Where the target listens, present only when it differs from the
    /// dialled `port` (a client/server port mismatch in the plan).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_port: Option<u16>,
    /// The final attempt's TLS handshake in milliseconds; `null` for TCP
    /// paths and when no handshake completed.
    #[serde(default)]
    pub tls_ms: Option<f64>,
    /// The flow the path came from: its `name`, or `from -> to` as the
    /// flow wrote them (the first flow, when several merged into the path).
    #[serde(default)]
    pub flow: String,
    /// The target role that serves the port, when the port is planned.
    #[serde(default)]
    pub role: Option<String>,
    /// The server certificate's facts, where a TLS handshake saw one.
    #[serde(default)]
    pub cert: Option<CertFacts>,
    /// What a service that speaks first said (e.g. `MySQL 10.11.6-MariaDB`):
    /// evidence that a real service answered, not just a port.
    #[serde(default)]
    pub service_banner: Option<String>,
    /// For a UDP path with a canary: how many of the `attempts` datagrams
    /// the target's canary recorded; absent otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arrived: Option<u32>,
    /// The errno (`EPERM`, `EACCES`) with which the source's own kernel
    /// refused to send, when it did and no ICMP error explains it (see
    /// [`crate::probe::classify::is_local_denial`]); absent otherwise.
    /// Added to v1 so that `suggest` decides on the fact, never on the
    /// detail's words.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local_denial: Option<i32>,
    /// Where the port's service listens instead, when it listens only at
    /// addresses the path does not reach (loopback, another interface,
    /// the other family), with the process holding each socket
    /// (`process` absent when it could not be named): read from the
    /// target's socket table, so the target held no canary and the path
    /// was measured as the service's clients find it. Absent otherwise.
    /// Added to v1.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub listening_elsewhere: Vec<ListeningSocket>,
    /// How far the path proved the planned service, on every path that
    /// connected: `l4` (the connection completed), `identified` (the
    /// planned protocol answered), `healthy` (its own "ready" answer was
    /// read); absent where nothing connected. Added to v1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proof: Option<crate::probe::service::Proof>,
    /// What answered the protocol probe of a live service, where anything
    /// did (also what answered instead, on a `wrong-service` path). Added
    /// to v1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_answer: Option<crate::probe::service::ServiceAnswer>,
    /// For a `lossy` path: how many of the `attempts` got an answer from
    /// the target (a completed handshake, a reset or an ICMP error), the
    /// others silent or stalled; absent otherwise. Added to v1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub answered: Option<u32>,
    /// Path quality (`check --samples N`, N > 1): loss per direction,
    /// round trips and jitter of the path's samples
    /// ([`quality::Quality`]); `null` on a path the round could not sample
    /// (it did not open); absent when the round took no samples. Added to
    /// v1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quality: Option<Option<quality::Quality>>,
}

impl std::fmt::Display for Summary {
    /// `83 paths, 70 ok, 1 violation, 0 errors`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        use crate::render::count;
        write!(
            f,
            "{}, {} ok, {}, {}",
            count(self.paths, "path"),
            self.ok,
            count(self.violations, "violation"),
            count(self.errors, "error")
        )
    }
}

impl PathReport {
    /// The label of the flow the path came from: the in-memory flow labels
    /// of a fresh report, `flow` of one read back from JSON, else
    /// `from -> to`.
    pub fn flow_label(&self) -> String {
        self.flows
            .first()
            .cloned()
            .filter(|l| !l.is_empty())
            .or_else(|| (!self.flow.is_empty()).then(|| self.flow.clone()))
            .unwrap_or_else(|| format!("{} -> {}", self.from, self.to))
    }
}

impl Report {
    /// The process exit code the report calls for: 1 when any path is a
    /// violation (a definite failure, even if other paths could not be
    /// measured), else 3 when some path could not be measured (the check
    /// did not complete), else 0.
    pub fn exit_code(&self) -> u8 {
        if self.summary.violations > 0 {
            1
        } else if self.summary.errors > 0 {
            3
        } else {
            0
        }
    }

    /// Recounts [`Report::summary`] from the paths.
    pub fn recount(&mut self) {
        let mut s = Summary {
            paths: self.paths.len(),
            ..Summary::default()
        };
        for p in &self.paths {
            match p.verdict {
                Verdict::Ok => s.ok += 1,
                Verdict::Violation => s.violations += 1,
                Verdict::Error => s.errors += 1,
            }
        }
        self.summary = s;
    }
}

/// `YYYY-MM-DDTHH:MM:SS.mmmZ` for an instant.
pub fn rfc3339(t: SystemTime) -> String {
    crate::time::rfc3339_millis(t)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::UNIX_EPOCH;

    fn with(violations: usize, errors: usize) -> Report {
        Report {
            schema: SCHEMA.into(),
            plan: "p".into(),
            started_at: String::new(),
            finished_at: String::new(),
            summary: Summary {
                paths: 10,
                ok: 10 - violations - errors,
                violations,
                errors,
            },
            hosts: vec![],
            paths: vec![],
            notes: vec![],
        }
    }

    #[test]
    fn a_violation_exits_1_even_when_other_paths_are_errors() {
        // Regression: 3 used to win, so CI keyed on 1 missed violations.
        assert_eq!(with(4, 2).exit_code(), 1);
        assert_eq!(with(1, 0).exit_code(), 1);
        assert_eq!(with(0, 2).exit_code(), 3);
        assert_eq!(with(0, 0).exit_code(), 0);
    }

    #[test]
    fn timestamps_are_rfc3339_utc_with_millis() {
        let t = UNIX_EPOCH + std::time::Duration::from_millis(951_782_400_123);
        assert_eq!(rfc3339(t), "2000-02-29T00:00:00.123Z");
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
    }

    #[test]
    fn notes_appear_in_every_format_but_the_metrics() {
        let mut r = crate::report::table::tests::sample();
        r.notes = vec!["nothing filters loopback & so on".into()];
        for format in ReportFormat::ALL {
            let mut out = Vec::new();
            render(&r, format, RenderOptions::default(), &mut out).unwrap();
            let text = String::from_utf8(out).unwrap();
            let want = match format {
                // Metrics carry numbers, not prose.
                ReportFormat::Prometheus => continue,
                ReportFormat::Json => {
                    r#""notes": [
    "nothing filters loopback & so on"
  ]"#
                }
                ReportFormat::Table => "note: nothing filters loopback & so on",
                ReportFormat::Markdown => "> **Note:** nothing filters loopback &amp; so on",
                ReportFormat::Html => "<strong>Note:</strong> nothing filters loopback &amp; so on",
                ReportFormat::Junit => {
                    r#"<property name="note.1" value="nothing filters loopback &amp; so on"/>"#
                }
            };
            assert!(text.contains(want), "{format}:\n{text}");
        }
        let back: Report = serde_json::from_str(&serde_json::to_string(&r).unwrap()).unwrap();
        assert_eq!(back.notes, r.notes);
    }

    #[test]
    fn a_port_name_two_roles_of_the_target_define_shows_its_role() {
        let mut r = crate::report::table::tests::sample();
        r.paths[0].service = "https-servlet".into();
        r.paths[0].role = Some("wso2-apim-publisher".into());
        r.paths[1].service = "https-servlet".into();
        r.paths[1].role = Some("wso2-apim-store".into());
        r.paths[2].service = "https-servlet".into();
        r.paths[2].role = Some("wso2-apim-store".into());
        let labels = PortLabels::new(&r);
        // Same host `db`, two roles: told apart.
        assert_eq!(
            labels.port(&r.paths[0]),
            "3306/tcp (https-servlet, wso2-apim-publisher)"
        );
        assert_eq!(
            labels.service(&r.paths[1]),
            "https-servlet, wso2-apim-store"
        );
        // Another host with one role of that name: just the name.
        assert_eq!(r.paths[2].to, "cache");
        assert_eq!(labels.port(&r.paths[2]), "6379/tcp (https-servlet)");
        let mut table = Vec::new();
        table::write(&r, table::ReportTableOptions::default(), &mut table).unwrap();
        let table = String::from_utf8(table).unwrap();
        assert!(
            table.contains("(https-servlet, wso2-apim-store)"),
            "{table}"
        );
    }

    #[test]
    fn a_path_carries_its_flow_in_json_and_back() {
        let r = crate::report::table::tests::sample();
        let v: serde_json::Value = serde_json::to_value(&r).unwrap();
        assert_eq!(v["paths"][0]["flow"], "app tier");
        let mut back: Report = serde_json::from_value(v).unwrap();
        assert_eq!(back.paths[0].flow, "app tier");
        // Read back, the table still groups by flow.
        back.paths.iter_mut().for_each(|p| p.flows.clear());
        assert_eq!(back.paths[0].flow_label(), "app tier");
        // A report from before `flow` existed still reads.
        let mut old = serde_json::to_value(&r).unwrap();
        for p in old["paths"].as_array_mut().unwrap() {
            let p = p.as_object_mut().unwrap();
            for k in ["flow", "role", "cert", "service_banner"] {
                p.remove(k);
            }
        }
        let old: Report = serde_json::from_value(old).unwrap();
        assert_eq!(old.paths[0].flow_label(), "web -> db");
    }
}
