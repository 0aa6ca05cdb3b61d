//! Why schedule mode could not start, in a file of its own so that the
//! round driver (`live`) names it without importing the module's front.

use std::net::SocketAddr;
use std::time::Duration;

use crate::agent::AgentError;
use crate::plan::PlanError;
use crate::probe::ProbeError;

/// Why schedule mode could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ScheduleError {
    /// The plan could not be read or is invalid.
    #[error(transparent)]
    Plan(#[from] PlanError),
    /// The host is not in the plan, or could not be found among this
    /// machine's addresses.
    #[error(transparent)]
    Host(#[from] AgentError),
    /// The probe engine could not be configured.
    #[error("set up the prober")]
    Probe(#[from] ProbeError),
    /// `--every` is shorter than [`super::MIN_EVERY`].
    #[error("--every {every:?} is too short: rounds run at most once a second")]
    EveryTooShort {
        /// The period asked for.
        every: Duration,
    },
    /// The metrics endpoint could not be bound.
    #[error("listen for /metrics on {addr}")]
    BindMetrics {
        /// The address asked for.
        addr: SocketAddr,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}
