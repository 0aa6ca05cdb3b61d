//! One agent's part of a round ([`Session`]), what a broken control
//! connection looks like ([`died`]) and the probe request the sessions'
//! listeners make ([`probe_request`]), in a file of their own so that the
//! round's phases and its loss-resilient requests share them without
//! importing each other.

use crate::control::{self, ControlError, ControlStream, HostPort, ListenerState, ProbeRequest};
use crate::report::{AgentEvidence, AgentOutcome};

/// One agent's part of the round, moved into each phase's task and back.
pub(super) struct Session {
    pub(super) host: String,
    pub(super) conn: Option<ControlStream>,
    pub(super) evidence: AgentEvidence,
}

impl Session {
    pub(super) fn up(&self) -> bool {
        self.conn.is_some() && self.evidence.outcome == AgentOutcome::Up
    }

    pub(super) fn lost(&mut self, why: String) {
        self.conn = None;
        self.evidence.outcome = AgentOutcome::Unreachable(why);
    }
}

/// Whether the agent's end of the connection is gone (closed or reset): an
/// agent that died after `prepare` is unreachable, with the phase, not up.
pub(super) fn died(e: &ControlError) -> bool {
    matches!(
        e,
        ControlError::Frame {
            source: control::FrameError::Closed
                | control::FrameError::Truncated
                | control::FrameError::Io(_),
            ..
        } | ControlError::Transport { .. }
    )
}

/// The `probe` request every source gets: which target ports are probed
/// live (a service holds them), which are skipped (no canary could open)
/// and which hosts are down; `samples` quality samples per open path.
pub(super) fn probe_request(
    sessions: &[Session],
    round: &str,
    only: Option<Vec<usize>>,
    samples: u32,
) -> ProbeRequest {
    let mut live = Vec::new();
    let mut elsewhere = Vec::new();
    let mut skip = Vec::new();
    let mut skip_hosts = Vec::new();
    for s in sessions {
        if !s.up() {
            skip_hosts.push(s.host.clone());
            continue;
        }
        for l in &s.evidence.listeners {
            let hp = HostPort {
                host: s.host.clone(),
                port: l.port,
                transport: l.protocol.into(),
            };
            match l.state {
                ListenerState::Canary => {}
                ListenerState::Held => live.push(hp),
                // No canary because the service listens only elsewhere:
                // probed as its clients connect, to meet what they meet.
                ListenerState::Failed if !l.elsewhere.is_empty() => {
                    elsewhere.push(hp.clone());
                    live.push(hp);
                }
                ListenerState::Failed => skip.push(hp),
            }
        }
    }
    ProbeRequest {
        round: round.to_owned(),
        live,
        skip,
        skip_hosts,
        only,
        elsewhere,
        samples,
    }
}
