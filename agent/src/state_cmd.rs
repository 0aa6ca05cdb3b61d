//! `portcall state collect`: every plan host's network state (ruleset,
//! addresses, routes, forwarding, listening planned ports), asked of its
//! agent with the read-only `state` request through mTLS (the coordinator's
//! certificate) or ssh, written as the state directory `whatif` reads.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Subcommand};
use probe_core::control::{ClientSecurity, SshTransport};
use probe_core::pki::{COORDINATOR, TlsIdentity};
use probe_core::plan::{PathScope, Plan};
use probe_core::twin;

use crate::check_cmd::SshArgs;

#[derive(Subcommand, Debug)]
pub enum StateCommand {
    /// Collect every plan host's state into a state directory (read-only on
    /// the hosts; only the coordinator's certificate may ask).
    Collect(CollectArgs),
}

#[derive(Args, Debug)]
#[command(after_help = "\
Each agent answers the read-only `state` request: `nft -j list ruleset`, its
addresses per interface (`ip -j addr`), its routes (`ip -j route`), whether it
forwards, and which of its planned ports something listens on. Nothing is
changed on the hosts. Agents act only for the coordinator's certificate (or,
with --ssh, for the ssh session that started them), as for `check`.

OUT gets one directory per host (net.toml, ruleset.json), the format
docs/whatif.md describes. Exit status: 0 every host answered; 3 some host did
not (the others are written, and each failure is printed); 2 bad input.")]
pub struct CollectArgs {
    /// The plan.
    #[arg(long)]
    plan: PathBuf,
    /// Directory with ca.pem, coordinator.pem and coordinator-key.pem.
    #[arg(long, required_unless_present_any = ["insecure", "ssh"])]
    pki: Option<PathBuf>,
    /// Plain TCP to agents on loopback (as `check --insecure`).
    #[arg(long, conflicts_with_all = ["pki", "ssh"])]
    insecure: bool,
    // --ssh and its settings (--ssh-config, --remote-path, --push, ...),
    // those of `check --ssh`.
    #[command(flatten)]
    ssh: SshArgs,
    /// The state directory to write.
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
}

pub fn state(cmd: StateCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        StateCommand::Collect(args) => collect(&args),
    }
}

fn collect(args: &CollectArgs) -> anyhow::Result<ExitCode> {
    crate::agent_cmd::init_logging("warn");
    let text = std::fs::read_to_string(&args.plan)
        .with_context(|| format!("read plan {}", args.plan.display()))?;
    let plan = Plan::parse_scoped(&text, &args.plan.display().to_string(), &PathScope::Lazy)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("start the async runtime")?;
    let timeout = Duration::from_secs(20);
    let collected = if args.ssh.enabled() {
        let transport = SshTransport::new(&plan, &text, args.ssh.options()?)?;
        runtime.block_on(twin::collect::collect(&plan, &transport, timeout))
    } else {
        let security = match &args.pki {
            Some(dir) => ClientSecurity::Mtls(
                TlsIdentity::load(dir, COORDINATOR)
                    .context("load the coordinator's certificate")?,
            ),
            None => ClientSecurity::Insecure,
        };
        runtime.block_on(twin::collect::collect(&plan, &security, timeout))
    };
    let failed = collected.iter().filter(|c| c.reply.is_err()).count();
    let notes = twin::collect::write(&collected, &args.out).context("write the state directory")?;
    for n in &notes {
        eprintln!("portcall: {n}");
    }
    eprintln!(
        "wrote {}: {} of {} hosts",
        args.out.display(),
        collected.len() - failed,
        collected.len()
    );
    Ok(ExitCode::from(if failed > 0 { 3 } else { 0 }))
}
