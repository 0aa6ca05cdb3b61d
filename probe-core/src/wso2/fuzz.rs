//! The fuzzing entry point of the WSO2 readers (`fuzz/fuzz_targets/wso2.rs`
//! and the corpus replay in `tests/wso2_scan.rs`).

use std::path::Path;

use super::{apim, carbon, datasource, deployment, esb, sp, values};

/// The fuzzing entry point: every reader over arbitrary bytes, which must
/// return a value or an error and never panic, hang or overflow the stack.
#[doc(hidden)]
pub fn fuzz_one(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let f = Path::new("fuzz");
    let vars = values::Vars::default();
    let _ = carbon::read_carbon(f, text, &vars);
    let _ = carbon::read_axis2(f, text, &vars);
    let _ = carbon::read_start_script(f, text);
    let _ = apim::read_api_manager(f, text, &vars);
    let _ = datasource::read_datasources(f, text, &vars);
    let _ = deployment::read_deployment(f, text, &vars);
    let _ = esb::read_event_publisher(f, text);
    let _ = sp::read_sp_worker(f, text, &vars);
    let _ = values::endpoints(text, &vars);
    let _ = datasource::jdbc(text);
}
