//! Fuzzes `probe_core::fuzzing::report` (the same entry point the stable
//! corpus replay test drives).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| probe_core::fuzzing::report(data));
