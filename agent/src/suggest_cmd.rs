//! `portcall suggest`: the firewall commands that would fix a report's
//! violations, as a script per host.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Args;
use clap::builder::{PossibleValuesParser, TypedValueParser};
use probe_core::render::count;
use probe_core::report::suggest::{self, FirewallFormat, SuggestOptions};

/// `--format`: the names of [`FirewallFormat::ALL`], parsed by probe-core.
fn firewall_format() -> impl TypedValueParser<Value = FirewallFormat> {
    PossibleValuesParser::new(FirewallFormat::ALL.map(FirewallFormat::as_str))
        .try_map(|s| s.parse::<FirewallFormat>())
}

#[derive(Args, Debug)]
#[command(after_help = "\
For each violation the rule goes on the path's target host: a source-restricted
accept for a must-be-open path, inserted ahead of the chain's drops and rejects.
A must-be-blocked path that was open gets a default deny of its port, closed for
everyone the plan does not allow and not only for the host that probed: a drop
of the port, with accepts ahead of it for each must-be-open source of that port
(its plan addresses and every address the target saw it arrive from in the
round); with no must-be-open source the port is dropped for all. The report
carries all of this (the plan's must-be-open paths, host zones and addresses,
the flows' source selectors), so no plan file is needed. The source address is
the one the target saw when it saw the connection (after any NAT), else the
source host's plan address.

The rule follows the report's `blame`: a path blamed on the target gets the
accept in the table and chain of the traced rule it overrides (named, by
handle); one blamed on the source (its own output chain) an output accept on the
source; one blamed on the network no host rule but a paragraph for the network
team (hop, zones, addresses, port), or with --router HOST a forward-chain accept
on that host; where blame is unknown the script says so.

Violations no rule can fix (a NAT or redirect answering from the wrong host, a
TLS failure, a service that is down, paths not measured) are explained in
`# NO RULE HERE` comments.

Without --host every host's commands are printed, each after a `# host NAME`
line; run each section on its host with sh. With --out FILE the script is
written atomically to FILE, as `check --out` does.

With --whatif --plan PLAN --state DIR the suggestion is run through the twin
first (see `portcall whatif`; needs root): each host's section runs with sh in
that host's namespace, and the predicted diff follows the script as comments.

Exit status: 0 the script was written (with --whatif: and it breaks and opens
nothing); 1 with --whatif, the suggestion breaks or opens a planned path; 2 bad input (unreadable file, not a
report, an unknown host, a bad table, chain or zone, --out not writable).")]
pub struct SuggestArgs {
    /// The report (portcall.report/v1 JSON).
    report: PathBuf,
    /// The firewall to write commands for.
    #[arg(long, value_parser = firewall_format())]
    format: FirewallFormat,
    /// Only the commands for this host.
    #[arg(long, value_name = "NAME")]
    host: Option<String>,
    /// nft: the table, as "FAMILY NAME" (default "inet filter").
    #[arg(long, value_name = "FAMILY NAME")]
    table: Option<String>,
    /// nft and iptables: the chain (default input for nft, INPUT for iptables).
    #[arg(long, value_name = "NAME")]
    chain: Option<String>,
    /// firewalld: the zone (default: firewalld's default zone).
    #[arg(long, value_name = "NAME")]
    zone: Option<String>,
    /// nft and iptables: a plan host that routes between the zones; a path
    /// blamed on the network gets a forward-chain accept on it.
    #[arg(long, value_name = "HOST")]
    router: Option<String>,
    /// Write the script to FILE (atomically, as `check --out`) instead of
    /// standard output.
    #[arg(long, value_name = "FILE")]
    out: Option<PathBuf>,
    /// Run the suggestion through the twin first (`portcall whatif`, needs
    /// root): each host's section runs with sh in that host's namespace,
    /// and the predicted diff follows the script as `#` comments.
    #[arg(long, requires_all = ["plan", "state"])]
    whatif: bool,
    /// The plan, for --whatif.
    #[arg(long, requires = "whatif")]
    plan: Option<PathBuf>,
    /// The state directory, for --whatif.
    #[arg(long, value_name = "DIR", requires = "whatif")]
    state: Option<PathBuf>,
}

pub fn suggest(args: SuggestArgs) -> anyhow::Result<ExitCode> {
    if args.whatif {
        anyhow::ensure!(
            args.format != FirewallFormat::Firewalld,
            "--whatif runs nft or iptables suggestions; firewall-cmd needs a running firewalld, which the twin does not have"
        );
        crate::whatif_cmd::refuse_without_privileges()?;
    }
    let report = crate::diff_cmd::read_report(&args.report)?;
    let options = SuggestOptions {
        format: args.format,
        host: args.host,
        table: args.table,
        chain: args.chain,
        zone: args.zone,
        router: args.router,
    };
    let s = suggest::suggest(&report, &options)
        .with_context(|| format!("suggest for report {}", args.report.display()))?;
    let mut bytes = Vec::new();
    s.write(&mut bytes)?;
    let mut code = ExitCode::SUCCESS;
    if let (true, Some(plan), Some(state)) = (args.whatif, &args.plan, &args.state) {
        let dir = tempfile::tempdir().context("a directory for the twin's scripts")?;
        let changes =
            probe_core::twin::suggest::changes(&String::from_utf8_lossy(&bytes), dir.path())
                .context("write the suggestion's sections")?;
        let Some(answer) = crate::whatif_cmd::predict(plan, state, &changes, Some(&report))? else {
            return Ok(ExitCode::from(crate::INTERRUPTED));
        };
        let mut table = Vec::new();
        probe_core::twin::diff::write_table(&mut table, &answer, false)?;
        bytes.extend_from_slice(b"\n# predicted by the twin (portcall whatif):\n");
        for line in String::from_utf8_lossy(&table).lines() {
            bytes.extend_from_slice(format!("# {line}").trim_end().as_bytes());
            bytes.push(b'\n');
        }
        code = ExitCode::from(answer.exit_code());
    }
    crate::diff_cmd::write_output(args.out.as_deref(), &bytes)?;
    eprintln!("{}", summary(s.rules(), s.manual(), &bytes));
    Ok(code)
}

/// `4 fixes in 7 commands, 1 path explained without a rule`: the fixes
/// (paths a rule fixes, a default deny with its keep-open accepts being
/// one), and the commands as printed, counted in the script itself.
fn summary(fixes: usize, manual: usize, script: &[u8]) -> String {
    let commands = String::from_utf8_lossy(script)
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
        .count();
    let fixes = match fixes {
        1 => "1 fix".to_string(),
        n => format!("{n} fixes"),
    };
    format!(
        "{fixes} in {}, {} explained without a rule",
        count(commands, "command"),
        count(manual, "path")
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn suggest_summary_counts_the_commands_printed() {
        let script = b"# host db\n# a -> db:22\nnft insert rule a\nnft insert rule b\n\n  nft insert rule c\n# note\nfirewall-cmd --reload\n";
        assert_eq!(
            super::summary(2, 1, script),
            "2 fixes in 4 commands, 1 path explained without a rule"
        );
        assert_eq!(
            super::summary(1, 0, b"nft x\n"),
            "1 fix in 1 command, 0 paths explained without a rule"
        );
    }
}
