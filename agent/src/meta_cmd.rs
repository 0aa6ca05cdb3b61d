//! `portcall completions`, `portcall man` and `portcall version`: what the
//! binary says about itself, generated from its own clap definitions so a
//! completion or a man page never drifts from the options it describes.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, CommandFactory};

use crate::Cli;

/// The commit this binary was built from (`build.rs`), or "unknown".
pub const COMMIT: &str = env!("PORTCALL_GIT_COMMIT");
/// The UTC date of the build (`SOURCE_DATE_EPOCH` when set).
pub const BUILD_DATE: &str = env!("PORTCALL_BUILD_DATE");
/// What `--version` prints after the name.
pub const VERSION_LINE: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("PORTCALL_GIT_COMMIT"),
    ", built ",
    env!("PORTCALL_BUILD_DATE"),
    ")"
);

/// The DESCRIPTION of portcall(1).
const DESCRIPTION: &str = "\
portcall proves which network paths of a distributed deployment are open, which \
are blocked and by what (dropped, rejected, reset), and which answered from the \
wrong host: agents on every host hold canaries on the ports they serve and probe \
the ports they need, and a coordinator joins both ends' evidence into a verdict \
per path.

Each subcommand has its own page, e.g. portcall-check(1), and `portcall help \
SUBCOMMAND` prints the same text. The plan grammar, the outcomes and the report \
formats are described in the documentation shipped with the package \
(/usr/share/doc/portcall/docs) and in the repository's docs/.";

#[derive(Args, Debug)]
#[command(after_help = "\
Install them where your shell looks, e.g.
  portcall completions bash > /usr/share/bash-completion/completions/portcall
  portcall completions zsh  > /usr/share/zsh/vendor-completions/_portcall
  portcall completions fish > /usr/share/fish/vendor_completions.d/portcall.fish
The Debian package installs all three.")]
pub struct CompletionsArgs {
    /// The shell to complete for.
    shell: clap_complete::Shell,
}

#[derive(Args, Debug)]
#[command(after_help = "\
Without --dir, prints portcall(1) to standard output (`portcall man | man -l -`).
With --dir, writes portcall.1 and one page per subcommand (portcall-check.1,
portcall-plan-lint.1, ...) into DIR, which must exist.")]
pub struct ManArgs {
    /// Write every page into this directory instead of printing portcall(1).
    #[arg(long, value_name = "DIR")]
    dir: Option<PathBuf>,
}

#[derive(Args, Debug)]
#[command(after_help = "\
--json prints one object for inventory tools:
  {\"version\": \"0.1.0\", \"commit\": \"1a2b3c4\", \"build_date\": \"2026-12-07\",
   \"control_protocol\": 2}
control_protocol is the version of the agents' control protocol this binary
speaks; a coordinator and its agents must agree on it.")]
pub struct VersionArgs {
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
}

pub fn completions(args: &CompletionsArgs) -> anyhow::Result<ExitCode> {
    let mut buf = Vec::new();
    clap_complete::generate(args.shell, &mut Cli::command(), "portcall", &mut buf);
    crate::write_stdout(&buf)?;
    Ok(ExitCode::SUCCESS)
}

pub fn man(args: &ManArgs) -> anyhow::Result<ExitCode> {
    let mut cmd = Cli::command()
        .disable_help_subcommand(true)
        .about("prove which network paths of a deployment are open, blocked, and by what")
        .long_about(DESCRIPTION);
    cmd.build();
    match &args.dir {
        None => {
            let mut buf = Vec::new();
            page(&cmd).render(&mut buf)?;
            crate::write_stdout(&buf)?;
        }
        Some(dir) => {
            if !dir.is_dir() {
                anyhow::bail!("man --dir {}: not a directory", dir.display());
            }
            write_pages(&cmd, dir)?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub fn version(args: &VersionArgs) -> anyhow::Result<ExitCode> {
    let protocol = probe_core::control::PROTOCOL_VERSION;
    let text = if args.json {
        // In the documented key order (a json! map would sort the keys).
        let s = |v: &str| serde_json::Value::from(v).to_string();
        format!(
            "{{\"version\":{},\"commit\":{},\"build_date\":{},\"control_protocol\":{protocol}}}\n",
            s(env!("CARGO_PKG_VERSION")),
            s(COMMIT),
            s(BUILD_DATE)
        )
    } else {
        format!(
            "portcall {}\ncommit: {COMMIT}\nbuild date: {BUILD_DATE}\ncontrol protocol: {protocol}\n",
            env!("CARGO_PKG_VERSION")
        )
    };
    crate::write_stdout(text.as_bytes())?;
    Ok(ExitCode::SUCCESS)
}

/// One man page, dated with the build date so the same commit renders the
/// same page.
fn page(cmd: &clap::Command) -> clap_mangen::Man {
    clap_mangen::Man::new(cmd.clone())
        .date(BUILD_DATE)
        .source(format!("portcall {}", env!("CARGO_PKG_VERSION")))
        .manual("portcall manual")
}

/// Writes the page of `cmd` and of every visible subcommand, each atomically
/// (a temporary file renamed into place).
fn write_pages(cmd: &clap::Command, dir: &Path) -> anyhow::Result<()> {
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        write_pages(sub, dir)?;
    }
    let man = page(cmd);
    let path = dir.join(man.get_filename());
    let tmp = dir.join(format!(".{}.tmp", man.get_filename()));
    let mut buf = Vec::new();
    man.render(&mut buf)?;
    std::fs::write(&tmp, &buf).with_context(|| format!("write {}", tmp.display()))?;
    std::fs::rename(&tmp, &path).with_context(|| format!("write {}", path.display()))?;
    Ok(())
}
