//! The `portcall` binary: parse arguments, call into `probe-core`, render,
//! map to an exit code. No logic lives here.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod agent_cmd;
mod check_cmd;
mod demo_cmd;
mod diff_cmd;
mod meta_cmd;
mod pki_cmd;
mod plan_cmd;
mod probe_cmd;
mod progress;
mod report_cmd;
mod schedule_cmd;
mod state_cmd;
mod suggest_cmd;
mod whatif_cmd;
mod wso2_cmd;

/// portcall — prove which network paths of a distributed deployment are open,
/// which are blocked, and by what.
#[derive(Parser, Debug)]
#[command(
    name = "portcall",
    version = meta_cmd::VERSION_LINE,
    about,
    propagate_version = true
)]
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
    /// Create the control channel's CA (`init`) and certificates (`issue`).
    #[command(subcommand)]
    Pki(pki_cmd::PkiCommand),
    /// Run one host's agent: canaries, probes and the control endpoint.
    Agent(agent_cmd::AgentArgs),
    /// Coordinate a round through every agent of a plan and report.
    Check(check_cmd::CheckArgs),
    /// Play the bundled WSO2 plan on loopback, no root and no setup.
    Demo(demo_cmd::DemoArgs),
    /// Probe targets directly, without agents: exact TCP/TLS outcomes.
    Probe(probe_cmd::ProbeArgs),
    /// Compare two reports of one plan: fixed, regressed and changed paths.
    Diff(diff_cmd::DiffArgs),
    /// Print the firewall commands that would fix a report's violations.
    Suggest(suggest_cmd::SuggestArgs),
    /// Read WSO2 installations: offsets, ports, dials, client/server mismatches.
    #[command(subcommand)]
    Wso2(wso2_cmd::Wso2Command),
    /// Re-render a saved JSON report: html, markdown, junit, table,
    /// prometheus or json.
    Report(report_cmd::ReportArgs),
    /// Test a firewall change before it is applied: the deployment's twin
    /// in network namespaces, the real round on the base and candidate
    /// rulesets, and the paths that change.
    Whatif(whatif_cmd::WhatIfArgs),
    /// The deployment's network state for `whatif`: `state collect`.
    #[command(subcommand)]
    State(state_cmd::StateCommand),
    /// Print shell completions (bash, zsh, fish, elvish, powershell).
    Completions(meta_cmd::CompletionsArgs),
    /// Print the man page (roff), or write every page into a directory.
    Man(meta_cmd::ManArgs),
    /// Print the version, commit, build date and control protocol.
    Version(meta_cmd::VersionArgs),
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
        Command::Pki(cmd) => pki_cmd::pki(cmd),
        Command::Agent(args) => agent_cmd::agent(args),
        Command::Check(args) => check_cmd::check(args),
        Command::Demo(args) => demo_cmd::demo(args),
        Command::Probe(args) => probe_cmd::probe(args),
        Command::Diff(args) => diff_cmd::diff(args),
        Command::Suggest(args) => suggest_cmd::suggest(args),
        Command::Wso2(cmd) => wso2_cmd::wso2(cmd),
        Command::Report(args) => report_cmd::report(args),
        Command::Whatif(args) => whatif_cmd::whatif(args),
        Command::State(cmd) => state_cmd::state(cmd),
        Command::Completions(args) => meta_cmd::completions(&args),
        Command::Man(args) => meta_cmd::man(&args),
        Command::Version(args) => meta_cmd::version(&args),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("portcall: {e:#}");
            ExitCode::from(2)
        }
    }
}

/// The exit status of a command interrupted by SIGINT or SIGTERM (the
/// shell's 128 + SIGINT).
pub const INTERRUPTED: u8 = 130;

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
