//! portcall's logic: the plan model and catalog, the probe engine, canary
//! listeners, the agents' control protocol and the report renderers. The
//! `portcall` binary is thin glue over this crate.
#![warn(missing_docs, clippy::print_stdout, clippy::print_stderr)]

pub mod port;

pub use port::{Port, PortRange, Protocol};
pub mod agent;
pub mod control;
pub mod demo;
mod errors;
pub use errors::error_chain;
#[doc(hidden)]
pub mod fuzzing;
pub mod pki;
pub mod plan;
pub mod probe;
pub mod render;
pub mod report;
pub mod round;
pub mod schedule;
mod time;
pub mod twin;
pub mod wso2;
