//! What every attempt of a prober shares, in a file of its own so that the
//! engine's steps (attempt, TLS phase, scheduler) name it without importing
//! the engine's front (`mod.rs`), which imports them.

use std::sync::Arc;

use super::config::ProbeConfig;
use crate::probe::exchange::Exchange;
use crate::probe::tls::TlsClient;
use crate::probe::udp_service::UdpOptions;

/// What every attempt of a prober shares.
pub(super) struct Shared {
    pub(super) config: ProbeConfig,
    pub(super) tls: TlsClient,
    pub(super) exchange: Option<Arc<dyn Exchange>>,
    pub(super) udp: UdpOptions,
}
