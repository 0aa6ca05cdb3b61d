//! `portcall demo`: the bundled WSO2 plan played on loopback by in-process
//! agents, through the same round and report as `portcall check`.

use std::process::ExitCode;

use anyhow::Context;
use clap::Args;

use crate::check_cmd::{OutputArgs, emit};

#[derive(Args, Debug)]
pub struct DemoArgs {
    #[command(flatten)]
    output: OutputArgs,
}

/// Exit code: 0 when the demo worked (its only violations are the
/// must-be-blocked paths that loopback cannot block), 1 for any other
/// violation, 3 when a path could not be measured.
pub fn demo(args: DemoArgs) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("start the async runtime")?;
    let run = runtime.block_on(probe_core::demo::run_wso2())?;
    emit(&run.report, &args.output, &run.notes)?;
    Ok(ExitCode::from(run.exit_code()))
}
