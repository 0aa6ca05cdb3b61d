//! Renderers: every output portcall produces is written to an `impl Write`
//! here, never printed, so the binary decides where it goes.

pub mod plan;
mod table;

pub use table::Table;

/// Output formats for plans and the catalog.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PlanFormat {
    /// Aligned columns for a terminal.
    #[default]
    Table,
    /// Machine-readable JSON with a `schema` key.
    Json,
}
