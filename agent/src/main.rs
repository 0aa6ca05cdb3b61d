//! The `portcall` binary: parse arguments, call into `probe-core`, render,
//! map to an exit code. No logic lives here.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// portcall — prove which network paths of a distributed deployment are open,
/// which are blocked, and by what.
#[derive(Parser, Debug)]
#[command(name = "portcall", version, about, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::from(2)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    match cli.command {}
}
