//! The result of a round as plain data: the `portcall.report/v1` model, the
//! join that turns both sides' evidence into verdicts, and the renderers.
//! Every output format (table and JSON here; junit, markdown, html,
//! Prometheus beside them) reads a [`Report`], never the round itself, so
//! they all agree.

pub mod diff;
mod format;
pub mod html;
mod join;
pub mod json;
pub mod junit;
pub mod markdown;
pub(crate) mod markup;
pub mod prometheus;
pub mod suggest;
pub mod table;

use std::path::Path;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

pub use format::{RenderOptions, ReportFormat, UnknownFormat, render};
pub use join::{AgentEvidence, AgentOutcome, RoundEvidence, join};

use crate::control::ListenerState;
use crate::plan::{Expect, Family};
use crate::port::Protocol;
use crate::probe::Observed;

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
    /// Every plan address of a host with several (dual stack), primary
    /// first; absent (empty) when it has one, which is `address`.
    #[serde(default, skip_serializing_if = "several_not")]
    pub addresses: Vec<String>,
}

fn several_not(v: &[String]) -> bool {
    v.len() < 2
}

impl HostReport {
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
}

impl AgentState {
    /// `up`, `unreachable` or `none`.
    pub const fn as_str(self) -> &'static str {
        match self {
            AgentState::Up => "up",
            AgentState::Unreachable => "unreachable",
            AgentState::None => "none",
        }
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

impl Verdict {
    /// The verdict of a measured path against its expectation, shared by
    /// `check` and schedule mode: open and blocked meet or miss their
    /// expectation; a connection to the wrong party, or a failed TLS
    /// handshake after TCP got through, is neither, so it misses both;
    /// `local-error` (or no measurement) is never open nor blocked.
    pub fn judge(expect: Expect, observed: Option<Observed>) -> Verdict {
        match (observed, expect) {
            (None | Some(Observed::LocalError), _) => Verdict::Error,
            (Some(Observed::Open), Expect::Open) => Verdict::Ok,
            (
                Some(Observed::Refused | Observed::Timeout | Observed::Unreachable),
                Expect::Blocked,
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
    /// Duration of the final attempt; `null` when not probed.
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
    /// Labels of the flows that produce the path, for grouping. Not part
    /// of the JSON contract (empty when read back from JSON).
    #[serde(skip)]
    pub flows: Vec<String>,
    /// Where the target listens, present only when it differs from the
    /// dialled `port` (a client/server port mismatch in the plan).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_port: Option<u16>,
}

impl Report {
    /// The process exit code the report calls for: 3 when some path could
    /// not be measured (the check did not complete), else 1 when an
    /// expectation failed, else 0.
    pub fn exit_code(&self) -> u8 {
        if self.summary.errors > 0 {
            3
        } else if self.summary.violations > 0 {
            1
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

/// Writes `bytes` to `path` atomically: a temporary file in the same
/// directory, synced, then renamed over the target, so a reader never sees
/// half a report.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let name = path
        .file_name()
        .map_or_else(|| "report".into(), |n| n.to_string_lossy().into_owned());
    let tmp = dir.join(format!(
        ".{name}.{}.{}.tmp",
        std::process::id(),
        crate::control::random_id(4)
    ));
    let result = (|| {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::UNIX_EPOCH;

    #[test]
    fn timestamps_are_rfc3339_utc_with_millis() {
        let t = UNIX_EPOCH + std::time::Duration::from_millis(951_782_400_123);
        assert_eq!(rfc3339(t), "2000-02-29T00:00:00.123Z");
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
    }

    #[test]
    fn atomic_write_replaces_whole_files_and_leaves_no_temporaries() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("r.json");
        write_atomically(&p, b"one").unwrap();
        write_atomically(&p, b"two").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"two");
        let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(names.len(), 1);
        let err = write_atomically(&dir.path().join("missing/r.json"), b"x");
        assert!(err.is_err());
    }
}
