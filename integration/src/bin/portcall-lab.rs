//! `portcall-lab`: the test lab for trying portcall by hand, driven by
//! `scripts/lab.sh`. It builds the same namespaces, firewalls and agents as
//! the end-to-end tests ([`integration::PlanLab`]) and keeps them until told
//! to go.
//!
//! - `portcall-lab rules PLAN COORDINATOR OUTDIR` writes the correct
//!   firewall of every host as `OUTDIR/HOST.nft`, a starting point to edit.
//! - `portcall-lab up PLAN RULES_DIR STATE_DIR` builds the lab, loads
//!   `RULES_DIR/HOST.nft` where present, starts the agents, writes
//!   `STATE_DIR/hosts` (`NAME NETNS ADDRESS` lines) and `STATE_DIR/env`,
//!   then waits until `STATE_DIR/down` exists and tears everything down.
//! - `portcall-lab up-routed PLAN RULES_DIR STATE_DIR` does the same in
//!   the routed lab (a bridge per plan zone behind a router namespace,
//!   zone `n` being 198.18.n.0/24 and 2001:2:0:n::/64), also loading
//!   `RULES_DIR/router.nft` into the router, which `hosts` lists as
//!   `router`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use integration::routed::ROUTER;
use integration::{LabNet, PlanLab, firewall, lab_missing};

fn main() -> std::process::ExitCode {
    match run() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("portcall-lab: {e:#}");
            std::process::ExitCode::from(2)
        }
    }
}

fn run() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.iter().map(String::as_str).collect::<Vec<_>>()[..] {
        ["rules", plan, coordinator, out] => rules(Path::new(plan), coordinator, Path::new(out)),
        ["up", plan, rules, state] => {
            up(Path::new(plan), Path::new(rules), Path::new(state), false)
        }
        ["up-routed", plan, rules, state] => {
            up(Path::new(plan), Path::new(rules), Path::new(state), true)
        }
        _ => bail!(
            "usage: portcall-lab rules PLAN COORDINATOR OUTDIR | portcall-lab up|up-routed PLAN RULES_DIR STATE_DIR"
        ),
    }
}

fn rules(plan: &Path, coordinator: &str, out: &Path) -> anyhow::Result<()> {
    let plan = probe_core::plan::Plan::load(plan).map_err(|e| anyhow::anyhow!("{e}"))?;
    if plan.host(coordinator).is_none() {
        bail!("no host `{coordinator}` in plan {}", plan.name);
    }
    std::fs::create_dir_all(out).with_context(|| format!("create {}", out.display()))?;
    for (host, r) in firewall::correct(&plan, coordinator) {
        let file = out.join(format!("{host}.nft"));
        std::fs::write(&file, r.render()).with_context(|| format!("write {}", file.display()))?;
    }
    println!(
        "wrote the correct firewall of each host to {}",
        out.display()
    );
    Ok(())
}

fn up(plan: &Path, rules: &Path, state: &Path, routed: bool) -> anyhow::Result<()> {
    if let Some(reason) = lab_missing() {
        bail!("the lab cannot run here: {reason}");
    }
    std::fs::create_dir_all(state).with_context(|| format!("create {}", state.display()))?;
    let down = state.join("down");
    let _ = std::fs::remove_file(&down);
    if routed {
        let lab = PlanLab::routed(plan, &[])?;
        let file = rules.join(format!("{ROUTER}.nft"));
        if file.is_file() {
            let text = std::fs::read_to_string(&file)?;
            lab.lab
                .nft(ROUTER, &text)
                .with_context(|| format!("load {}", file.display()))?;
        }
        let router = format!("{ROUTER} {} -\n", lab.lab.router_netns());
        hold(lab, rules, state, &router)
    } else {
        hold(PlanLab::new(plan)?, rules, state, "")
    }
}

/// Loads the hosts' rules, starts the agents, writes the state files and
/// keeps the lab until `STATE_DIR/down` appears.
fn hold<N: LabNet>(lab: PlanLab<N>, rules: &Path, state: &Path, extra: &str) -> anyhow::Result<()> {
    let down = state.join("down");
    for h in &lab.plan.hosts {
        let file = rules.join(format!("{}.nft", h.name));
        if file.is_file() {
            let text = std::fs::read_to_string(&file)?;
            lab.lab
                .nft(&h.name, &text)
                .with_context(|| format!("load {}", file.display()))?;
        }
    }
    lab.start_agents()?;
    let mut hosts = String::new();
    for h in &lab.plan.hosts {
        let addresses: Vec<String> = h.addresses.iter().map(ToString::to_string).collect();
        hosts.push_str(&format!(
            "{} {} {}\n",
            h.name,
            lab.lab.netns(&h.name),
            addresses.join(",")
        ));
    }
    hosts.push_str(extra);
    std::fs::write(state.join("hosts"), hosts)?;
    let bin: PathBuf = integration::portcall_bin()?;
    std::fs::write(
        state.join("env"),
        format!(
            "PLAN='{}'\nPKI='{}'\nPORTCALL='{}'\nLOGS='{}'\n",
            lab.plan_path().display(),
            lab.pki().display(),
            bin.display(),
            lab.dir.path().display()
        ),
    )?;
    println!("ready");
    // Hold the lab until `lab.sh down` asks for teardown (Drop does it).
    while !down.exists() {
        std::thread::sleep(Duration::from_millis(200));
    }
    drop(lab);
    let _ = std::fs::remove_file(state.join("hosts"));
    let _ = std::fs::remove_file(state.join("env"));
    let _ = std::fs::remove_file(&down);
    Ok(())
}
