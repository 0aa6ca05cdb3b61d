//! Replays every file of the fuzz corpora (`fuzz/corpus/<target>/`) through
//! the same entry points the cargo-fuzz targets drive
//! (`probe_core::fuzzing`), on the stable toolchain: an input that once
//! crashed, hung or exhausted memory under the fuzzer is checked in the
//! corpus and stays fixed in CI without nightly.

use std::path::PathBuf;
use std::time::{Duration, Instant};

fn corpus(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/corpus")
        .join(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|p| {
            let bytes = std::fs::read(&p).unwrap();
            (p, bytes)
        })
        .collect()
}

fn replay(target: &str, run: fn(&[u8])) {
    let files = corpus(target);
    assert!(
        !files.is_empty(),
        "fuzz/corpus/{target} has no seed: the replay would prove nothing"
    );
    for (path, bytes) in files {
        let started = Instant::now();
        run(&bytes);
        // A generous bound: an input that takes this long under a debug
        // build is a hang the fuzzer would report as a timeout.
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "{} took {:?}",
            path.display(),
            started.elapsed()
        );
    }
}

#[test]
fn plan_corpus_replays_without_panics() {
    replay("plan", probe_core::fuzzing::plan);
}

#[test]
fn control_corpus_replays_without_panics() {
    replay("control", probe_core::fuzzing::control);
}

#[test]
fn target_corpus_replays_without_panics() {
    replay("target", probe_core::fuzzing::target);
}

#[test]
fn report_corpus_replays_without_panics() {
    replay("report", probe_core::fuzzing::report);
}
