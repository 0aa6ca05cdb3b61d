//! `portcall whatif`: a firewall change tested before it is applied. The
//! deployment's state is rebuilt in network namespaces on this machine,
//! the ordinary round runs through it on the base rulesets and again with
//! the candidates loaded, and the paths the change breaks, opens or fixes
//! are listed; exit 1 when it breaks or opens a planned path.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use clap::builder::{PossibleValuesParser, TypedValueParser};
use probe_core::plan::{PathScope, Plan};
use probe_core::report::Report;
use probe_core::round::RoundConfig;
use probe_core::twin::{
    self, Change, State, TwinConfig, TwinError, WhatIf, WhatIfFormat, WhatIfRenderOptions,
};
use tokio_util::sync::CancellationToken;

/// `--format`: the names of [`WhatIfFormat::ALL`], parsed by probe-core.
fn whatif_format() -> impl TypedValueParser<Value = WhatIfFormat> {
    PossibleValuesParser::new(WhatIfFormat::ALL.map(WhatIfFormat::as_str))
        .try_map(|s| s.parse::<WhatIfFormat>())
}

#[derive(Args, Debug)]
#[command(after_help = "\
STATE is a directory with one subdirectory per host holding net.toml
(interfaces, addresses, routes, forwarding) and ruleset.nft or ruleset.json
(`nft list ruleset` or `nft -j list ruleset`); docs/whatif.md describes it.
A --change FILE is an nft ruleset (JSON, or text with `flush ruleset`:
it replaces the host's ruleset), nft commands applied on top of the base
(any other nft text), shell lines that are all nft / iptables / ip6tables
commands (a `portcall suggest` section: run with sh -e in the host's
namespace), or an iptables-save / ip6tables-save dump (loaded with
iptables-nft-restore inside the host's namespace). All changes are loaded
together for the candidate round. `portcall state collect` writes STATE from
the running agents.

Needs root (CAP_NET_ADMIN and CAP_SYS_ADMIN): the twin is one network
namespace per host, named pctw<pid>-…, removed on exit, Ctrl-C and
failure, and reaped by the next run if this one was killed. Nothing is
attached to this machine's own network.

Exit status: 0 the change breaks and opens nothing; 1 it breaks a
must-be-open path or opens a must-be-blocked one; 2 bad input or no
privileges; 130 interrupted.")]
pub struct WhatIfArgs {
    /// The plan.
    #[arg(long)]
    plan: PathBuf,
    /// The state directory.
    #[arg(long, value_name = "DIR")]
    state: PathBuf,
    /// A candidate for one host, HOST=FILE; repeatable.
    #[arg(long = "change", value_name = "HOST=FILE")]
    changes: Vec<String>,
    /// The last live report (JSON): list the paths where the twin's base
    /// differs from it, and mark paths decided by a device outside the
    /// twin.
    #[arg(long, value_name = "REPORT")]
    live: Option<PathBuf>,
    /// Output format: table (the paths that change, then the counts), json
    /// (portcall.whatif/v1, every path), markdown (a pull request
    /// comment), html (self-contained page), junit (breaks and opens fail)
    /// or prometheus (textfile collector).
    #[arg(long, default_value = "table", value_parser = whatif_format())]
    format: WhatIfFormat,
    /// Every path in the table, Markdown and HTML, unchanged ones too.
    #[arg(long)]
    all: bool,
    /// Write the answer to FILE (atomically) instead of standard output.
    #[arg(long, value_name = "FILE")]
    out: Option<PathBuf>,
}

pub fn whatif(args: WhatIfArgs) -> anyhow::Result<ExitCode> {
    crate::agent_cmd::init_logging("warn");
    refuse_without_privileges()?;
    let changes = args
        .changes
        .iter()
        .map(|c| Change::parse(c))
        .collect::<Result<Vec<_>, _>>()?;
    let live = match &args.live {
        None => None,
        Some(p) => Some(crate::diff_cmd::read_report(p)?),
    };
    let Some(answer) = predict(&args.plan, &args.state, &changes, live.as_ref())? else {
        return Ok(ExitCode::from(crate::INTERRUPTED));
    };
    let mut bytes = Vec::new();
    let options = WhatIfRenderOptions { all: args.all };
    twin::render(&answer, args.format, options, &mut bytes)?;
    crate::diff_cmd::write_output(args.out.as_deref(), &bytes)?;
    Ok(ExitCode::from(answer.exit_code()))
}

/// Refuses, before any work, a process that cannot build namespaces.
pub fn refuse_without_privileges() -> anyhow::Result<()> {
    if let Some(why) = twin::privileges_missing() {
        anyhow::bail!(
            "whatif needs root, or CAP_NET_ADMIN and CAP_SYS_ADMIN, to build the twin's network namespaces: {why}"
        );
    }
    Ok(())
}

/// Builds the twin of `state` for `plan`, runs the base and candidate
/// rounds and compares them (with `live`, when given); `None` when
/// interrupted (the namespaces are gone either way).
pub fn predict(
    plan_path: &Path,
    state_dir: &Path,
    changes: &[Change],
    live: Option<&Report>,
) -> anyhow::Result<Option<WhatIf>> {
    let text = std::fs::read_to_string(plan_path)
        .with_context(|| format!("read plan {}", plan_path.display()))?;
    let plan = Plan::parse_scoped(&text, &plan_path.display().to_string(), &PathScope::Lazy)?;
    let state = State::load(state_dir).context("read the state directory")?;
    let config = TwinConfig {
        agent_exe: std::env::current_exe().context("find the running portcall")?,
        round: RoundConfig::default(),
        setup_timeout: Duration::from_secs(20),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("start the async runtime")?;
    let cancel = CancellationToken::new();
    let rounds = runtime.block_on(async {
        crate::schedule_cmd::stop_on_signal(cancel.clone())?;
        anyhow::Ok(twin::whatif(&plan, &text, &state, changes, &config, &cancel).await)
    })?;
    let rounds = match rounds {
        Err(TwinError::Cancelled) => {
            eprintln!("portcall: interrupted; the twin's namespaces are removed");
            return Ok(None);
        }
        other => other?,
    };
    let addresses: Vec<String> = state
        .hosts
        .values()
        .flat_map(|h| h.addresses().map(|a| a.addr.to_string()))
        .collect();
    Ok(Some(twin::compare(
        &rounds.base,
        rounds.candidate.as_ref(),
        live,
        changes,
        &state_dir.display().to_string(),
        &addresses,
    )))
}
