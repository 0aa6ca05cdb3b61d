//! The entry points of the fuzz targets in `fuzz/`, shared with the stable
//! corpus replay test (`tests/fuzz_corpus.rs`), so that what nightly fuzzing
//! found is replayed by `cargo test` through exactly the same code. Each
//! takes arbitrary bytes and must never panic, hang or allocate without
//! bound.

use crate::control::{Request, Response};
use crate::plan::Catalog;
use crate::report::{self, RenderOptions, ReportFormat};

/// The plan analyzer: parse, validate and expand a plan, then render what
/// `plan show` would print and every diagnostic.
pub fn plan(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let analysis = crate::plan::analyze(text, "fuzz.toml", Catalog::builtin());
    let _ = analysis.diagnostics.to_string();
    if let Some(plan) = analysis.plan {
        let mut out = Vec::new();
        let _ = crate::render::plan::plan_table(&plan, &mut out);
        let _ = crate::render::plan::plan_json(&plan, &mut out);
        let _ = crate::control::plan_digest(&plan);
    }
}

/// Control frames and messages as an agent and a coordinator read them:
/// each line as a request and as a reply, and as the canary exchange's
/// lines.
pub fn control(data: &[u8]) {
    for line in data.split(|&b| b == b'\n') {
        if line.len() > crate::control::MAX_REQUEST_BYTES {
            continue;
        }
        if let Ok(r) = serde_json::from_slice::<Request>(line) {
            let _ = serde_json::to_vec(&r);
        }
        if let Ok(r) = serde_json::from_slice::<Response>(line) {
            let _ = serde_json::to_vec(&r);
        }
        if let Ok(s) = std::str::from_utf8(line) {
            let _ = crate::probe::canary_line::parse_probe_line(s);
            let _ = crate::probe::canary_line::parse_answer(s);
        }
    }
}

/// The `portcall probe` target grammar: the whole input as a target list,
/// and each line as one specification.
pub fn target(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    // Ranges expand to at most 65,535 targets each; keep inputs short so
    // one input cannot ask for millions.
    if text.len() > 4096 {
        return;
    }
    let _ = crate::probe::parse_target_list(text);
    for line in text.lines() {
        let _ = crate::probe::parse_target(line);
    }
}

/// The report JSON reader, and every renderer and `diff` over what it
/// read (reports read back are input, not our own writing).
pub fn report(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(report) = report::json::read(text) else {
        return;
    };
    for format in ReportFormat::ALL {
        let mut out = Vec::new();
        let _ = report::render(&report, format, RenderOptions::default(), &mut out);
    }
    if let Ok(d) = report::diff::diff(&report, &report) {
        let _ = format!("{d:?}");
    }
}
