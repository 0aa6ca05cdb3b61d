//! One agent's part of a round ([`Session`]) and what a broken control
//! connection looks like ([`died`]), in a file of their own so that the
//! round's phases and its loss-resilient requests share them without
//! importing each other.

use crate::control::{self, ControlError, ControlStream};
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
