//! A lab built from a plan: one namespace per plan host at its plan address,
//! a CA and certificates for every agent and the coordinator, a real
//! `portcall agent` process per host, and `portcall check` run from a chosen
//! host, exactly as an operator would deploy them.

use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, bail, ensure};
use probe_core::plan::{Address, Plan};
use probe_core::report::Report;

use crate::firewall::HostRules;
use crate::routed::zone_index_of;
use crate::{Lab, LabNet, RoutedLab};

/// A lab playing every host of a plan: on one flat bridge ([`Lab`], the
/// default) or zone by zone behind a router ([`RoutedLab`]).
pub struct PlanLab<N: LabNet = Lab> {
    /// The namespaces.
    pub lab: N,
    /// The plan, as the agents read it.
    pub plan: Plan,
    /// Where the plan file, certificates, logs and reports live.
    pub dir: tempfile::TempDir,
    bin: PathBuf,
}

/// The result of one `portcall check`.
#[derive(Debug)]
pub struct CheckRun {
    /// The exit code.
    pub code: i32,
    /// The JSON report it wrote.
    pub report: Report,
    /// Where that report is.
    pub path: PathBuf,
    /// Its standard error (notes and warnings).
    pub stderr: String,
}

impl PlanLab<Lab> {
    /// Builds the namespaces for `plan_file`'s hosts on one bridge and
    /// issues the certificates; agents are not started yet (load firewalls
    /// first with [`PlanLab::firewall`], then [`PlanLab::start_agents`]).
    pub fn new(plan_file: &Path) -> anyhow::Result<PlanLab> {
        PlanLab::on(plan_file, |plan| {
            let mut hosts = Vec::new();
            for h in &plan.hosts {
                let Address::Ip(IpAddr::V4(v4)) = h.address else {
                    bail!("lab host {}: {} is not an IPv4 literal", h.name, h.address);
                };
                hosts.push((h.name.clone(), v4));
            }
            Lab::with_hosts(&hosts)
        })
    }

    /// The address of plan host `name`.
    pub fn addr(&self, name: &str) -> Ipv4Addr {
        self.lab.host(name).addr
    }
}

impl PlanLab<RoutedLab> {
    /// Builds a routed lab for `plan_file`: one zone per plan zone, its
    /// index taken from its hosts' addresses (198.18.n.x, 2001:2:0:n::x),
    /// every host at its plan addresses plus any of `extra` (host, address)
    /// the plan does not list (a host the OS gives both families while the
    /// plan names one), then issues the certificates. A plan host whose
    /// addresses are all the router's (`.254`, `::254`) is the router
    /// itself: a plan host routing between the zones, with its own agent.
    pub fn routed(plan_file: &Path, extra: &[(&str, &str)]) -> anyhow::Result<PlanLab<RoutedLab>> {
        PlanLab::on(plan_file, |plan| {
            let mut zones: Vec<(String, u8)> = Vec::new();
            let mut builder = RoutedLab::builder();
            let mut hosts = Vec::new();
            let mut router_host: Option<String> = None;
            for h in &plan.hosts {
                let zone = h.zone.clone().with_context(|| {
                    format!(
                        "lab host {}: a routed lab needs every host in a zone",
                        h.name
                    )
                })?;
                // A host the plan names by DNS takes its addresses from
                // `extra` (the test resolves the name, see `HostsFile`).
                let mut addrs: Vec<IpAddr> = h
                    .addresses
                    .iter()
                    .filter_map(|a| match a {
                        Address::Ip(ip) => Some(*ip),
                        Address::Dns(_) => None,
                    })
                    .collect();
                for (_, a) in extra.iter().filter(|(n, _)| *n == h.name) {
                    let a: IpAddr = a.parse().with_context(|| format!("extra address {a}"))?;
                    if !addrs.contains(&a) {
                        addrs.push(a);
                    }
                }
                let Some(&ip) = addrs.first() else {
                    bail!(
                        "lab host {}: {} is not an IP literal and no extra address gives it one",
                        h.name,
                        h.address
                    );
                };
                let index = zone_index_of(ip).with_context(|| {
                    format!(
                        "lab host {}: {ip} is outside 198.18.0.0/16 and 2001:2::/48",
                        h.name
                    )
                })?;
                if addrs.iter().all(|a| is_router_address(*a)) {
                    ensure!(
                        router_host.replace(h.name.clone()).is_none(),
                        "lab host {}: a second host at the router's addresses",
                        h.name
                    );
                }
                match zones.iter().find(|(z, _)| *z == zone) {
                    Some((_, i)) => ensure!(
                        *i == index,
                        "lab host {}: {ip} puts zone {zone} at index {index}, another host at {i}",
                        h.name
                    ),
                    None => zones.push((zone.clone(), index)),
                }
                if router_host.as_deref() != Some(h.name.as_str()) {
                    hosts.push((h.name.clone(), zone, addrs));
                }
            }
            if let Some(r) = &router_host {
                builder = builder.router_host(r);
            }
            for (name, _) in extra {
                ensure!(
                    plan.host(name).is_some(),
                    "extra address for {name}, which is not a plan host"
                );
            }
            for (zone, index) in zones {
                builder = builder.zone(&zone, index);
            }
            for (name, zone, addrs) in hosts {
                builder = builder.host_addrs(&name, &zone, addrs);
            }
            builder.build()
        })
    }
}

impl<N: LabNet> PlanLab<N> {
    /// Loads `plan_file`, builds its namespaces with `build` and issues a
    /// certificate for every host (with every address the lab gives it)
    /// and for the coordinator.
    pub fn on(
        plan_file: &Path,
        build: impl FnOnce(&Plan) -> anyhow::Result<N>,
    ) -> anyhow::Result<PlanLab<N>> {
        let bin = crate::portcall_bin()?;
        let plan = Plan::load(plan_file).map_err(|e| anyhow::anyhow!("{e}"))?;
        let lab = build(&plan)?;
        let dir = tempfile::tempdir().context("temp dir")?;
        std::fs::copy(plan_file, dir.path().join("plan.toml")).context("copy the plan")?;
        let me = PlanLab {
            lab,
            plan,
            dir,
            bin,
        };
        let pki = me.pki().to_string_lossy().into_owned();
        me.portcall_ok(&["pki", "init", "--dir", &pki])?;
        for h in &me.plan.hosts {
            let mut args = vec![
                "pki",
                "issue",
                "--dir",
                pki.as_str(),
                "--name",
                h.name.as_str(),
            ];
            let ips: Vec<(bool, String)> = h
                .addresses
                .iter()
                .map(|a| (matches!(a, Address::Dns(_)), a.to_string()))
                .collect();
            for (dns, ip) in &ips {
                args.extend([if *dns { "--dns" } else { "--ip" }, ip.as_str()]);
            }
            me.portcall_ok(&args)?;
        }
        me.portcall_ok(&["pki", "issue", "--dir", &pki, "--name", "coordinator"])?;
        Ok(me)
    }

    /// The plan file the agents and coordinator use.
    pub fn plan_path(&self) -> PathBuf {
        self.dir.path().join("plan.toml")
    }

    /// The portcall binary the lab runs.
    pub fn bin(&self) -> &Path {
        &self.bin
    }

    /// The certificate directory.
    pub fn pki(&self) -> PathBuf {
        self.dir.path().join("pki")
    }

    /// Replaces `host`'s whole nftables ruleset.
    pub fn firewall(&self, host: &str, rules: &HostRules) -> anyhow::Result<()> {
        self.lab
            .nft(host, &rules.render())
            .with_context(|| format!("firewall of {host}:\n{}", rules.render()))
    }

    /// Starts `portcall agent` in every host's namespace and waits until
    /// each serves its control port.
    pub fn start_agents(&self) -> anyhow::Result<()> {
        let plan = self.plan_path().to_string_lossy().into_owned();
        let pki = self.pki().to_string_lossy().into_owned();
        for h in &self.plan.hosts {
            self.lab.spawn_logged(
                &h.name,
                &self.bin,
                &["agent", "--plan", &plan, "--host", &h.name, "--pki", &pki],
                &self.log(&h.name),
            )?;
        }
        let port = self.plan.defaults.control_port.get();
        for h in &self.plan.hosts {
            self.lab
                .wait_listening(&h.name, port, Duration::from_secs(20))
                .with_context(|| self.logs())?;
        }
        Ok(())
    }

    /// Runs `portcall check` inside host `from` and reads its JSON report.
    pub fn check(&self, from: &str) -> anyhow::Result<CheckRun> {
        let pki = self.pki().to_string_lossy().into_owned();
        self.check_with(from, &["--pki", &pki])
    }

    /// Runs `portcall check --plan PLAN --format json --out FILE ARGS`
    /// inside host `from` (ARGS choose the transport) and reads its report.
    pub fn check_with(&self, from: &str, args: &[&str]) -> anyhow::Result<CheckRun> {
        self.check_with_bin(from, &self.bin, args)
    }

    /// [`PlanLab::check_with`] running the coordinator from `bin` (a
    /// stripped copy, say, for `--push`, which copies the running binary).
    pub fn check_with_bin(
        &self,
        from: &str,
        bin: &Path,
        args: &[&str],
    ) -> anyhow::Result<CheckRun> {
        let out_file = self.dir.path().join(format!("report-{}.json", unique()));
        let plan = self.plan_path().to_string_lossy().into_owned();
        let out = self
            .lab
            .command(from, bin)
            .args(["check", "--plan", &plan, "--format", "json"])
            .args(args)
            .arg("--out")
            .arg(&out_file)
            .stdin(Stdio::null())
            .output()
            .context("run portcall check")?;
        let code = out.status.code().unwrap_or(-1);
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        let text = std::fs::read_to_string(&out_file).with_context(|| {
            format!(
                "check exited {code} without a report: {stderr}\n{}",
                self.logs()
            )
        })?;
        let report = probe_core::report::json::read(&text).context("read the report")?;
        Ok(CheckRun {
            code,
            report,
            path: out_file,
            stderr,
        })
    }

    /// Runs `portcall ARGS` in the root namespace (certificates, suggest,
    /// diff: nothing that touches the network) and fails on a non-zero exit.
    pub fn portcall_ok(&self, args: &[&str]) -> anyhow::Result<String> {
        let out = std::process::Command::new(&self.bin)
            .args(args)
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .output()
            .context("run portcall")?;
        ensure!(
            out.status.success(),
            "portcall {} exited {:?}: {}",
            args.join(" "),
            out.status.code(),
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Where host `name`'s agent logs.
    pub fn log(&self, name: &str) -> PathBuf {
        self.dir.path().join(format!("agent-{name}.log"))
    }

    /// Every agent's log, for failure messages.
    pub fn logs(&self) -> String {
        let mut s = String::new();
        for h in &self.plan.hosts {
            if let Ok(text) = std::fs::read_to_string(self.log(&h.name)) {
                if !text.trim().is_empty() {
                    s.push_str(&format!("--- agent {} ---\n{}\n", h.name, text.trim_end()));
                }
            }
        }
        s
    }
}

/// Whether `addr` is the router's on its zone (198.18.n.254, 2001:2:0:n::254).
fn is_router_address(addr: IpAddr) -> bool {
    match addr {
        IpAddr::V4(v4) => v4.octets()[3] == 254,
        IpAddr::V6(v6) => v6.segments()[4..] == [0, 0, 0, 0x254],
    }
}

fn unique() -> usize {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static N: AtomicUsize = AtomicUsize::new(0);
    N.fetch_add(1, Ordering::SeqCst)
}
