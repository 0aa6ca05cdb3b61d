//! WSO2's own Thrift example in the lab: a gateway at offset 2 and a key
//! manager at offset 5, both with the Thrift ports left at their default,
//! each with a real agent. The check must probe the port the gateway will
//! dial (10399), find it refused while the key manager listens on 10402,
//! and say so; with the gateway's ThriftClientPort set to 10402
//! (`dial_overrides`), the same path is ok.

use std::path::Path;

use integration::{PlanLab, lab_available};
use probe_core::probe::Observed;
use probe_core::report::Verdict;

fn example(name: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("../examples/{name}"))
}

#[test]
fn thrift_client_server_mismatch_is_refused_with_the_dial_explained_then_ok_after_the_override() {
    if !lab_available() {
        return;
    }
    {
        let lab = PlanLab::new(&example("wso2-thrift-offsets.toml")).unwrap();
        lab.start_agents().unwrap();
        let run = lab.check("operator").unwrap();
        let thrift = run
            .report
            .paths
            .iter()
            .find(|p| p.from == "gw-1" && p.service == "thrift-km")
            .unwrap_or_else(|| panic!("no thrift-km path: {:#?}", run.report.paths));
        assert_eq!(
            (thrift.port, thrift.server_port),
            (10399, Some(10402)),
            "the path probes the dialled port and records the listening one"
        );
        assert_eq!(
            (thrift.verdict, thrift.observed),
            (Verdict::Violation, Some(Observed::Refused)),
            "{}\n{}",
            thrift.detail,
            lab.logs()
        );
        assert!(
            thrift
                .detail
                .contains("gw-1 dials 10399; keymanager's thrift-km listens on 10402"),
            "{}",
            thrift.detail
        );
        let servlet = run
            .report
            .paths
            .iter()
            .find(|p| p.service == "https-servlet")
            .unwrap();
        assert_eq!(
            (servlet.port, servlet.verdict, servlet.server_port),
            (9448, Verdict::Ok, None),
            "{}",
            servlet.detail
        );
        assert_eq!(run.code, 1, "a refused dial is a violation: {}", run.stderr);
        // The saved report carries server_port where it differs, and only there.
        let json = std::fs::read_to_string(&run.path).unwrap();
        assert_eq!(json.matches("\"server_port\"").count(), 1, "{json}");
    }
    let lab = PlanLab::new(&example("wso2-thrift-offsets-agree.toml")).unwrap();
    lab.start_agents().unwrap();
    let run = lab.check("operator").unwrap();
    let thrift = run
        .report
        .paths
        .iter()
        .find(|p| p.from == "gw-1" && p.service == "thrift-km")
        .unwrap();
    assert_eq!(
        (thrift.port, thrift.server_port, thrift.verdict),
        (10402, None, Verdict::Ok),
        "{}\n{}",
        thrift.detail,
        lab.logs()
    );
    assert_eq!(thrift.target_saw, Some(true));
    assert_eq!(run.code, 0, "{}", run.stderr);
}
