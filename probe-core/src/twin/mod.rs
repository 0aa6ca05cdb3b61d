//! The twin: a deployment rebuilt in network namespaces from its state
//! (rulesets, addresses, routes), where the Linux kernel evaluates the
//! candidate rulesets and the ordinary round runs through them, so a
//! firewall change is tested before it is applied (`portcall whatif`).
//!
//! `state` reads and writes the state directory, `netns` builds the
//! namespaces, `run` runs the real agents and round through them, `diff`
//! compares the rounds, `render` writes the answer in every format. The
//! files import one way: `state` < `netns` < `run` < `diff` < `render`,
//! `suggest`.

pub mod collect;
pub mod diff;
pub mod netns;
pub mod render;
pub mod run;
pub mod state;
pub mod suggest;

pub use diff::{PathChange, SCHEMA, WhatIf, compare};
pub use netns::{NetnsError, TwinNet, privileges_missing, reap_stale};
pub use render::{UnknownWhatIfFormat, WhatIfFormat, WhatIfRenderOptions, render};
pub use run::{Change, ChangeKind, TwinConfig, TwinError, whatif};
pub use state::{HostState, State, StateError};
