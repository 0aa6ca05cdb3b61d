//! The malformed-plan corpus: every file in `tests/bad-plans/` must be
//! rejected with exactly the diagnostics in its `.expected` file (file, line,
//! column and message), and never with a panic.
//!
//! `UPDATE_EXPECT=1 cargo test -p probe-core --test bad_plans` rewrites the
//! `.expected` files; review the diff before committing.

use std::path::Path;

use probe_core::plan::Catalog;
use probe_core::plan::analyze;

#[test]
fn every_bad_plan_is_rejected_with_its_expected_message() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/bad-plans");
    let update = std::env::var_os("UPDATE_EXPECT").is_some();
    let mut cases: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    cases.sort();
    assert!(
        cases.len() >= 20,
        "the corpus shrank to {} plans",
        cases.len()
    );
    let mut failures = Vec::new();
    for case in &cases {
        let src = String::from_utf8_lossy(&std::fs::read(case).unwrap()).into_owned();
        let name = format!("bad-plans/{}", case.file_name().unwrap().to_string_lossy());
        let analysis = analyze(&src, &name, Catalog::builtin());
        if analysis.plan.is_some() {
            failures.push(format!("{name}: accepted, but it is in the bad corpus"));
            continue;
        }
        let got = format!("{}\n", analysis.diagnostics);
        let expected_path = case.with_extension("expected");
        if update {
            std::fs::write(&expected_path, &got).unwrap();
            continue;
        }
        match std::fs::read_to_string(&expected_path) {
            Ok(want) if want == got => {}
            Ok(want) => failures.push(format!("{name}:\n  want: {want}  got:  {got}")),
            Err(_) => failures.push(format!("{name}: no .expected file; got:\n{got}")),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
