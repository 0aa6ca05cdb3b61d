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
//! - `portcall-lab ssh-bench PLAN COORDINATOR RUNS` times the same round
//!   through mutual TLS (agents on the control port) and through `check
//!   --ssh` (sshd in every host, no control port allowed), alternating, and
//!   prints each run and the medians (`scripts/bench/ssh_round.sh`).

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
        ["ssh-bench", plan, coordinator, runs] => {
            ssh_bench(Path::new(plan), coordinator, runs.parse().context("RUNS")?)
        }
        _ => bail!(
            "usage: portcall-lab rules PLAN COORDINATOR OUTDIR | portcall-lab up|up-routed PLAN RULES_DIR STATE_DIR | portcall-lab ssh-bench PLAN COORDINATOR RUNS"
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

fn ssh_bench(plan: &Path, coordinator: &str, runs: usize) -> anyhow::Result<()> {
    use integration::sshd::{SshLab, Sshd};
    use std::time::Instant;
    if let Some(reason) = lab_missing().or_else(integration::sshd::ssh_missing) {
        bail!("the lab cannot run here: {reason}");
    }
    let lab = PlanLab::new(plan)?;
    // Both transports' ports are open: each round uses only its own.
    let control = lab.plan.defaults.control_port.get();
    let mut rules = firewall::correct(&lab.plan, coordinator);
    let coord = lab.addr(coordinator).to_string();
    for r in rules.values_mut() {
        r.input_accepts.push(firewall::accept(&coord, 22));
    }
    for (host, r) in &rules {
        lab.firewall(host, r)?;
    }
    lab.start_agents()?;
    let ssh = SshLab::new(lab.dir.path())?;
    for h in &lab.plan.hosts {
        ssh.start(&lab.lab, &h.name, &Sshd::default())?;
    }
    let pki = lab.pki().display().to_string();
    let cfg = ssh.config().display().to_string();
    let bin = lab.bin().display().to_string();
    let mtls_args = ["--pki", pki.as_str()];
    let ssh_args = ["--ssh", "--ssh-config", &cfg, "--remote-path", &bin];
    let push_args = ["--ssh", "--ssh-config", &cfg, "--push"];
    let mut times: [Vec<f64>; 3] = Default::default();
    let mut notes = Vec::new();
    println!(
        "plan {} ({} hosts, {} paths), control port {control}",
        lab.plan.name,
        lab.plan.hosts.len(),
        lab.plan.paths.len()
    );
    println!(
        "{:>4}  {:>8}  {:>8}  {:>11}",
        "run", "mtls_s", "ssh_s", "ssh_push_s"
    );
    for i in 1..=runs {
        let mut row = Vec::new();
        for (k, args) in [&mtls_args[..], &ssh_args[..], &push_args[..]]
            .iter()
            .enumerate()
        {
            let t = Instant::now();
            let run = lab.check_with(coordinator, args)?;
            let s = t.elapsed().as_secs_f64();
            times[k].push(s);
            row.push(format!("{s:.3}{}", if run.code == 0 { "" } else { "*" }));
            if run.code != 0 {
                notes.push(format!(
                    "run {i} {args:?} exited {}: {}",
                    run.code,
                    run.stderr.trim()
                ));
            }
        }
        println!("{i:>4}  {:>8}  {:>8}  {:>11}", row[0], row[1], row[2]);
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let [m, s, p] = times.each_mut().map(median);
    println!("median  {m:>6.3}  {s:>8.3}  {p:>11.3}");
    println!(
        "ssh - mtls: {:+.3} s (goal: within 1 s); ssh --push - mtls: {:+.3} s",
        s - m,
        p - m
    );
    for n in notes {
        println!("* {n}");
    }
    Ok(())
}
