//! Reading a plan file or text against the built-in catalog: the plan, or
//! the errors that block it ([`PlanError`]).

use super::analyze::analyze_scoped;
use super::catalog::Catalog;
use super::diag::{Diagnostics, Severity};
use super::model::{PathScope, Plan};

/// Why a plan could not be loaded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PlanError {
    /// The file could not be read.
    #[error("read plan {path}")]
    Io {
        /// The path as given.
        path: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The plan has errors; every one is listed.
    #[error("{0}")]
    Invalid(Diagnostics),
}

impl Plan {
    /// Reads and validates a plan file against the built-in catalog.
    /// Warnings are dropped; use [`analyze`] to see them.
    pub fn load(path: &std::path::Path) -> Result<Plan, PlanError> {
        let src = std::fs::read_to_string(path).map_err(|source| PlanError::Io {
            path: path.display().to_string(),
            source,
        })?;
        Plan::parse(&src, &path.display().to_string())
    }

    /// Reads and validates a plan file, keeping the paths `scope` says.
    pub fn load_scoped(path: &std::path::Path, scope: &PathScope) -> Result<Plan, PlanError> {
        let src = std::fs::read_to_string(path).map_err(|source| PlanError::Io {
            path: path.display().to_string(),
            source,
        })?;
        Plan::parse_scoped(&src, &path.display().to_string(), scope)
    }

    /// Validates plan text; `file` names it in diagnostics.
    pub fn parse(src: &str, file: &str) -> Result<Plan, PlanError> {
        Plan::parse_scoped(src, file, &PathScope::All)
    }

    /// Validates plan text, keeping the paths `scope` says.
    pub fn parse_scoped(src: &str, file: &str, scope: &PathScope) -> Result<Plan, PlanError> {
        let a = analyze_scoped(src, file, Catalog::builtin(), scope);
        match a.plan {
            Some(p) => Ok(p),
            None => Err(PlanError::Invalid(Diagnostics(
                a.diagnostics
                    .0
                    .into_iter()
                    .filter(|d| d.severity == Severity::Error && d.problem.blocks_plan())
                    .collect(),
            ))),
        }
    }
}
