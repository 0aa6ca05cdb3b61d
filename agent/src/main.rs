//! The `portcall` binary: parse arguments, call into `probe-core`, render,
//! map to an exit code. No logic lives here.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod plan_cmd;

/// portcall — prove which network paths of a distributed deployment are open,
/// which are blocked, and by what.
#[derive(Parser, Debug)]
#[command(name = "portcall", version, about, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Inspect a plan: `show` its expanded ports and paths, `lint` it.
    #[command(subcommand)]
    Plan(plan_cmd::PlanCommand),
    /// List the built-in catalog of product roles and their ports.
    Catalog(plan_cmd::CatalogArgs),
}

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
    let result = match cli.command {
        Command::Plan(cmd) => plan_cmd::plan(cmd),
        Command::Catalog(args) => plan_cmd::catalog(args),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("portcall: {e:#}");
            ExitCode::from(2)
        }
    }
}

/// Writes rendered output to stdout; a closed pipe (`| head`) is not an
/// error worth reporting.
fn write_stdout(bytes: &[u8]) -> anyhow::Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    match out.write_all(bytes).and_then(|()| out.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.into()),
        _ => Ok(()),
    }
}
