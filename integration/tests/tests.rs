//! End-to-end tests; one module per topic.

mod abuse_lab;
mod closed_loop;
mod probe_lab;
mod prometheus;
mod suggest_validate;
mod wso2_lab;
