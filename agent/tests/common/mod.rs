//! Helpers the CLI test files share: the binary, its output as text, the
//! skip-or-fail rule for optional tools, and a Python with junitparser.
#![allow(dead_code)] // each test file uses its own subset

use std::process::{Command, Output, Stdio};

pub fn portcall(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_portcall"))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run portcall")
}

pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// True when the tool is usable; otherwise prints `skipped` and returns
/// false, or panics under `PORTCALL_REQUIRE_LAB=1`.
pub fn available(reason: Option<String>) -> bool {
    match reason {
        None => true,
        Some(why) => {
            if std::env::var("PORTCALL_REQUIRE_LAB").as_deref() == Ok("1") {
                panic!("PORTCALL_REQUIRE_LAB=1 but {why}");
            }
            eprintln!("skipped: {why}");
            false
        }
    }
}

/// A Python that can import junitparser, if any.
pub fn junit_python() -> Result<String, String> {
    for py in ["python3", "/usr/bin/python3"] {
        let ok = Command::new(py)
            .args(["-c", "import junitparser"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if ok {
            return Ok(py.to_string());
        }
    }
    Err(
        "no python3 with junitparser (Debian python3-junitparser, or pip install junitparser)"
            .into(),
    )
}
