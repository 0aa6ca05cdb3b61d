//! The state shared while validating a plan: where we are and what we
//! found so far.

use std::sync::Arc;

use super::diag::{Diagnostic, LineStarts, Location, Problem, Severity};

/// Shared state while validating: where we are and what we found.
pub(super) struct Cx<'a> {
    pub file: &'a Arc<str>,
    pub src: &'a str,
    pub diags: Vec<Diagnostic>,
    /// Role names whose failure is already reported (see [`analyze`]).
    pub broken_roles: std::collections::BTreeSet<String>,
    /// Where `src`'s lines start: every host is located, and scanning
    /// from the top for each made analysis quadratic in the host count.
    pub lines: LineStarts,
}

impl Cx<'_> {
    pub fn error_count(&self) -> usize {
        self.diags
            .iter()
            .filter(|d| d.severity == Severity::Error)
            .count()
    }

    pub fn loc(&self, span: std::ops::Range<usize>) -> Location {
        self.lines.locate(self.file, self.src, span.start)
    }

    pub fn push_at(&mut self, location: Location, problem: Problem) {
        self.diags.push(Diagnostic {
            severity: problem.severity(),
            location: Some(location),
            problem,
        });
    }

    pub fn push(&mut self, span: std::ops::Range<usize>, problem: Problem) {
        let location = Some(self.loc(span));
        self.diags.push(Diagnostic {
            severity: problem.severity(),
            location,
            problem,
        });
    }
}
