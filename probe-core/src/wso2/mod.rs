//! Reads real WSO2 installations — `carbon.xml`, `api-manager.xml`,
//! `axis2.xml`, `master-datasources.xml`, `deployment.toml`,
//! `bin/wso2server.sh`, the analytics worker's `conf/worker/deployment.yaml`
//! — to find each one's port offset, the host names it answers to, the
//! ports it will open and the endpoints it will dial, with the `file:line`
//! of every setting. Its findings become plans and client/server
//! mismatches; the probe engine never imports this module.
//!
//! XML goes through `quick-xml`, TOML through `toml` and YAML through
//! `yaml-rust2`'s event parser, never through regular expressions, so
//! comments and layout cannot fool the reader. The files are untrusted
//! input: only regular files are read, each up to [`MAX_FILE_BYTES`], XML
//! nests at most [`MAX_XML_DEPTH`] deep, YAML at most [`MAX_YAML_DEPTH`]
//! (its aliases never expanded), and every position is computed in one pass
//! over the text.
//!
//! This file is the module's façade: its declarations and re-exports only.
//! The pieces build on each other in one direction, leaves first:
//! `source` < `error` < `locator` < `files`, `values` < `xml`, `yaml` <
//! the file readers (`carbon`, `apim`, `datasource`, `deployment`, `esb`,
//! `sp`) < `model` (the scan's findings) < `install` < `matching` <
//! `plan_out` < `scan`; `fuzz` drives the readers.

mod apim;
mod carbon;
mod datasource;
mod deployment;
mod error;
mod esb;
mod files;
mod fuzz;
mod install;
mod locator;
mod matching;
mod model;
mod plan_out;
pub mod scan;
mod source;
mod sp;
mod values;
mod xml;
mod yaml;

pub use error::ScanError;
pub use files::MAX_FILE_BYTES;
pub use fuzz::fuzz_one;
pub use model::{DialFinding, Difference, Install, Mismatch, Outside, PortFinding, SCHEMA, Scan};
pub use scan::{ScanFormat, render, scan};
pub use source::{Setting, Source};
pub use xml::{MAX_XML_DEPTH, MAX_XML_ELEMENTS};
pub use yaml::{MAX_YAML_DEPTH, MAX_YAML_NODES};
