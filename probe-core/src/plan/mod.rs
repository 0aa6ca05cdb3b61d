//! The plan: hosts, the roles they serve, zones, and the flows that must or
//! must not pass, parsed from TOML into a validated model and expanded into
//! the concrete paths a check measures.
//!
//! Parsing never stops at the first problem: [`analyze`] returns every
//! diagnostic it can find, each with its file, line and column, so that
//! `plan lint` can show them all at once.

mod analyze;
pub mod catalog;
mod collisions;
mod cx;
mod defaults;
mod diag;
mod digest;
mod flows;
mod host;
mod hosts;
mod instance;
mod load;
mod model;
mod only;
mod path;
pub(crate) mod raw;
pub(crate) mod roles;
mod selectors;
mod service;
mod ssh;
mod ssh_targets;
mod syntax;

pub use analyze::{Analysis, analyze, analyze_scoped};
pub use catalog::Catalog;
pub use defaults::{
    DEFAULT_MAX_PATHS, Defaults, MAX_PATHS_CEILING, MAX_SAMPLES, check_snmp_community,
};
pub use diag::{
    CollisionFix, Diagnostic, Diagnostics, DialFix, Location, Problem, Severity, Suggestion,
    escape_controls, is_control,
};
pub use host::{Address, EffectiveDial, EffectivePort, Family, FamilyFilter, Host, PortShift};
pub use instance::RoleInstance;
pub use load::PlanError;
pub use model::{PathScope, Plan};
pub use only::{Only, OnlyError};
pub use path::{Expect, Flow, Path, PathView, PortRef, Selector};
pub use roles::{DialDef, PortDef, Role, RoleOrigin};
pub use service::ServiceKind;
pub use ssh::{SshTarget, SshTargetError};
