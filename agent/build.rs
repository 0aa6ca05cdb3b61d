//! Stamps the binary with the commit it was built from and the build date,
//! so `portcall --version` and `portcall version --json` tell an inventory
//! tool exactly which build runs on a host.
//!
//! The commit comes from `git rev-parse --short HEAD` ("unknown" outside a
//! checkout or without git); the date is `SOURCE_DATE_EPOCH` when set
//! (reproducible builds, Debian's convention), else the time of the build,
//! as a UTC calendar date. The script reruns only when HEAD moves (a
//! commit, a checkout) or `SOURCE_DATE_EPOCH` changes, never on every cargo
//! invocation.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{SystemTime, UNIX_EPOCH};

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=SOURCE_DATE_EPOCH");
    let commit = git(&["rev-parse", "--short", "HEAD"]).unwrap_or_else(|| "unknown".to_string());
    // Watch the files that change when HEAD moves. A path that does not
    // exist would make cargo rerun the script every time, so only existing
    // ones are named.
    for file in head_files() {
        if file.exists() {
            println!("cargo:rerun-if-changed={}", file.display());
        }
    }
    let epoch = std::env::var("SOURCE_DATE_EPOCH")
        .ok()
        .and_then(|s| s.trim().parse::<i64>().ok())
        .unwrap_or_else(|| {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(0))
        });
    println!("cargo:rustc-env=PORTCALL_GIT_COMMIT={commit}");
    println!("cargo:rustc-env=PORTCALL_BUILD_DATE={}", utc_date(epoch));
}

/// Runs git in the package's directory; `None` when git is missing, this is
/// not a checkout, or git says nothing.
fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    if !out.status.success() {
        return None;
    }
    let s = String::from_utf8(out.stdout).ok()?.trim().to_string();
    (!s.is_empty()).then_some(s)
}

/// HEAD, the ref it points to (in the common directory of a worktree) and
/// packed-refs, where `git gc` moves that ref.
fn head_files() -> Vec<PathBuf> {
    let mut files = Vec::new();
    let path = |p: &str| git(&["rev-parse", "--path-format=absolute", "--git-path", p]);
    if let Some(head) = path("HEAD") {
        files.push(PathBuf::from(head));
    }
    if let Some(name) = git(&["symbolic-ref", "-q", "HEAD"])
        && let Some(reference) = path(&name)
    {
        files.push(PathBuf::from(reference));
    }
    if let Some(packed) = path("packed-refs") {
        files.push(Path::new(&packed).to_path_buf());
    }
    files
}

/// `YYYY-MM-DD` of a Unix time, in UTC (Howard Hinnant's civil-from-days).
fn utc_date(epoch: i64) -> String {
    let days = epoch.div_euclid(86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}")
}
