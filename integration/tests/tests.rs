//! End-to-end tests; one module per topic.

mod abuse_lab;
mod blame_lab;
mod closed_loop;
mod dials_lab;
mod dual_stack;
mod elsewhere_lab;
mod flaps_lab;
mod forward_trace;
mod loss_lab;
mod packets_lab;
mod probe_lab;
mod prometheus;
mod quality_lab;
mod routed_faults;
mod routed_lab;
mod rule_trace;
mod service_lab;
mod ssh_lab;
mod suggest_validate;
mod teardown_lab;
mod timing_lab;
mod udp_lab;
mod udp_probe_lab;
mod whatif_lab;
mod whatif_router_lab;
mod wso2_lab;
