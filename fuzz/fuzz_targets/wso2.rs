//! Fuzzes `probe_core::wso2::fuzz_one`: every WSO2 configuration reader
//! (carbon.xml, axis2.xml, api-manager.xml, master-datasources.xml,
//! deployment.toml, start scripts, endpoint URLs, JDBC URLs) over the same
//! bytes; the stable replay is probe-core/tests/wso2_scan.rs.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| probe_core::wso2::fuzz_one(data));
