//! The probe engine: exact TCP, TLS and UDP outcomes for many targets at once.
//! Every feature that touches the network (`portcall probe`, the agents'
//! probes) goes through here, so classification lives in one place.
//!
//! Build a [`Prober`] from a [`ProbeConfig`], hand it [`Target`]s, get one
//! [`ProbeResult`] per target back. Outcomes are data ([`Observed`]), never
//! errors; [`render`] writes them as a table or `portcall.probe/v1` JSON.

pub mod canary_line;
pub mod classify;
mod engine;
mod error;
pub mod errqueue;
mod eta;
mod exchange;
mod greeting;
pub mod live_samples;
mod outcome;
pub mod render;
pub mod resolve;
pub mod rtt;
pub mod samples;
pub mod service;
pub(crate) mod sock_diag;
pub mod spread;
mod target;
mod tls;
pub mod ttl_walk;
pub mod udp;
pub mod udp_service;

pub use engine::{
    DEFAULT_PER_HOST, ProbeConfig, Prober, ROUND_LOSS_RETRIES, SweepLimits, SweepResults,
    WALK_BUDGET,
};
pub use error::ProbeError;
pub use errqueue::IcmpEvidence;
pub use eta::SweepEta;
pub use exchange::{Exchange, ExchangeContext, ExchangeFuture, ExchangeOutcome, ProbeStream};
pub use greeting::{Greeting, GreetingExchange, mysql_banner, read_and_close};
pub use outcome::{CertFacts, Observed, ProbeResult, Silence};
pub use target::{Host, Target, TargetError, TargetListError, parse_target, parse_target_list};
pub use tls::{TlsOptions, TrustRoots};
pub use ttl_walk::{Hop, Walk, WalkConfig};
pub use udp::{UdpRequest, UdpResult};
pub use udp_service::{ServiceRequest, UdpOptions, UdpService};
