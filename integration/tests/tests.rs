//! End-to-end tests; one module per topic.

mod closed_loop;
mod dials_lab;
mod probe_lab;
mod prometheus;
mod suggest_validate;
mod wso2_lab;
