//! `portcall demo`: the bundled WSO2 plan played on loopback by in-process
//! agents, through the same round and report as `portcall check`.

use std::process::ExitCode;

use anyhow::Context;
use clap::Args;
use probe_core::report::ReportFormat;

use crate::check_cmd::{OutputArgs, emit};

#[derive(Args, Debug)]
#[command(after_help = "\
Every host of examples/wso2-distributed.toml becomes an in-process agent on its own
127.0.x.y address (the last two octets of its plan address), with a throwaway CA
for the mutual-TLS control channel, and one round runs through the same code as
`portcall check`.

Loopback differs from a real network in two ways, and the output says so:
  - nothing filters loopback traffic, so every must-be-blocked path is observed
    open and reported as a violation: what a missing firewall rule looks like;
  - ports below 1024 need privileges, so they are played 10000 higher
    (lb http 80 -> 10080, https 443 -> 10443).

Exit status: 0 when the demo worked, that is when its only violations are
must-be-blocked paths observed open (which loopback cannot avoid); 1 for any
other violation (a must-be-open path failed: something on this machine holds
or blocks a demo port), even when other paths could not be measured; 3 when
there is no such violation but a path could not be measured; 2 on bad usage.")]
pub struct DemoArgs {
    #[command(flatten)]
    output: OutputArgs,
}

/// Exit code: 0 when the demo worked (its only violations are the
/// must-be-blocked paths that loopback cannot block), 1 for any other
/// violation, 3 when a path could not be measured.
pub fn demo(args: DemoArgs) -> anyhow::Result<ExitCode> {
    crate::check_cmd::check_out(&args.output)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("start the async runtime")?;
    let run = runtime.block_on(probe_core::demo::run_wso2())?;
    // The notes travel inside the report, so every format carries them but
    // the metrics, which get them on standard error.
    let notes: &[String] = if args.output.format == ReportFormat::Prometheus {
        &run.notes
    } else {
        &[]
    };
    emit(&run.report, &args.output, notes)?;
    Ok(ExitCode::from(run.exit_code()))
}
