//! `portcall report`: re-renders a saved JSON report in any report format,
//! so a round run once (`check --format json --out`) can be published as
//! HTML, JUnit, Markdown, a table or Prometheus metrics later.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;

use crate::check_cmd::{OutputArgs, emit};

#[derive(Args, Debug)]
#[command(after_help = "\
The report is portcall.report/v1 JSON as `check --format json --out FILE` or
`demo --format json` writes it; it is rendered exactly as `check` would have
rendered it in the chosen format.

Exit status: 0 the report was rendered; 2 bad input (unreadable file, not a
report, --out not writable).")]
pub struct ReportArgs {
    /// The report (portcall.report/v1 JSON).
    report: PathBuf,
    #[command(flatten)]
    output: OutputArgs,
}

pub fn report(args: ReportArgs) -> anyhow::Result<ExitCode> {
    let report = crate::diff_cmd::read_report(&args.report)?;
    emit(&report, &args.output, &[])?;
    Ok(ExitCode::SUCCESS)
}
