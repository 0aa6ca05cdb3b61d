//! `portcall diff`: what changed between two reports of one plan, for the
//! network team checking a firewall change; exit 1 when a path got worse.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, ValueEnum};
use probe_core::report::{self, Report};

/// Output format of a diff.
#[derive(Debug, Clone, Copy, ValueEnum, Default, PartialEq, Eq)]
pub enum DiffFormat {
    /// Regressed, fixed and changed-reason paths as tables.
    #[default]
    Table,
    /// `portcall.diff/v1` JSON.
    Json,
}

#[derive(Args, Debug)]
#[command(after_help = "\
Both files are portcall.report/v1 JSON (`portcall check --format json --out FILE`)
of the same plan. Paths are matched by (from, to, port); a path in only one
report (the plan was edited between the runs) is listed as only in old or only
in new, with `null` on the other side in JSON. Paths that are a violation or an
error in both reports are listed as STILL FAILING (`still_failing` in JSON),
whether they fail the same way or not, so that a partial fix is not read as done.
With --out FILE the diff is written atomically to FILE, as `check --out` does.

Exit status: 0 no path got worse; 1 a path that was ok is now a violation or an
error; 2 bad input (unreadable file, not a report, reports of different plans, --out
not writable).")]
pub struct DiffArgs {
    /// The earlier report (JSON).
    old: PathBuf,
    /// The later report (JSON).
    new: PathBuf,
    /// Output format.
    #[arg(long, value_enum, default_value_t)]
    format: DiffFormat,
    /// Write the diff to FILE (atomically, as `check --out`) instead of
    /// standard output.
    #[arg(long, value_name = "FILE")]
    out: Option<PathBuf>,
}

pub fn diff(args: DiffArgs) -> anyhow::Result<ExitCode> {
    let old = read_report(&args.old)?;
    let new = read_report(&args.new)?;
    let d = report::diff::diff(&old, &new)
        .with_context(|| format!("compare {} with {}", args.old.display(), args.new.display()))?;
    let mut bytes = Vec::new();
    match args.format {
        DiffFormat::Table => d.write_table(&mut bytes)?,
        DiffFormat::Json => d.write_json(&mut bytes)?,
    }
    write_output(args.out.as_deref(), &bytes)?;
    Ok(ExitCode::from(d.exit_code()))
}

/// Writes rendered output to standard output, or to `out` through the
/// project's atomic writer (`report::write_atomically`: no reader sees half
/// a file, symbolic links followed, mode and owner kept, a directory
/// refused).
pub fn write_output(out: Option<&Path>, bytes: &[u8]) -> anyhow::Result<()> {
    match out {
        None => crate::write_stdout(bytes),
        Some(path) => {
            report::write_atomically(path, bytes).context("write the output")?;
            eprintln!("wrote {}", path.display());
            Ok(())
        }
    }
}

/// Reads a `portcall.report/v1` file; errors name the file.
pub fn read_report(path: &Path) -> anyhow::Result<Report> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("read report {}", path.display()))?;
    report::json::read(&text).with_context(|| format!("report {}", path.display()))
}
