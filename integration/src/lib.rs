//! The lab builder: network namespaces joined by veth pairs to a bridge in a
//! dedicated namespace, nftables rules per host, torn down on drop; and, in
//! [`routed`], zones on their own bridges behind a router namespace.
//!
//! Tests that cross a network build their own hosts here, so that real
//! firewalls (drop, ICMP reject, TCP reset) shape real packets without
//! touching the machine's own network: every interface lives inside a
//! namespace this process created, addresses come from 198.18.0.0/15, and
//! nothing is attached to the root namespace.
//!
//! Architecture invariant: only this crate needs root, and it checks for it
//! at run time ([`lab_available`]) instead of hiding tests behind an
//! ignore attribute.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, ensure};

pub mod firewall;
pub mod netns;
pub mod plan_lab;
pub mod routed;
pub mod sshd;

pub use netns::LabNet;
pub use plan_lab::{CheckRun, PlanLab};
pub use routed::{RoutedLab, RouterRules};

/// Set to `1` to make a missing lab prerequisite (root, `ip`, `nft`) a test
/// failure instead of a skip; CI sets it.
pub const REQUIRE_LAB_ENV: &str = "PORTCALL_REQUIRE_LAB";

/// The subnet every lab uses. Labs are isolated from each other by their own
/// bridge namespace, so they can all use the same addresses.
pub const LAB_NET: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 0);

/// Why the lab cannot run here, or `None` when it can.
pub fn lab_missing() -> Option<String> {
    if !is_root() {
        return Some("needs root (network namespaces and nftables)".to_string());
    }
    for tool in ["ip", "nft"] {
        if find_tool(tool).is_none() {
            return Some(format!(
                "needs `{tool}` (Debian packages iproute2 and nftables)"
            ));
        }
    }
    None
}

/// True when lab tests can run. Otherwise prints `skipped: <reason>` and
/// returns false, or panics when [`REQUIRE_LAB_ENV`] is `1`.
pub fn lab_available() -> bool {
    match lab_missing() {
        None => true,
        Some(reason) => {
            if std::env::var(REQUIRE_LAB_ENV).as_deref() == Ok("1") {
                panic!("{REQUIRE_LAB_ENV}=1 but the lab cannot run: {reason}");
            }
            eprintln!("skipped: {reason}");
            false
        }
    }
}

/// Whether `addr` is in 198.18.0.0/15, the benchmarking range labs use.
pub fn in_lab_net(addr: Ipv4Addr) -> bool {
    let [a, b, ..] = addr.octets();
    a == 198 && (b == 18 || b == 19)
}

fn is_root() -> bool {
    // /proc/self/status has "Uid: real effective saved fs".
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|u| u == "0"))
        })
        .unwrap_or(false)
}

/// `name` on `PATH` or in the usual system directories.
pub fn find_tool(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/bin", "/bin"].map(PathBuf::from))
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// The arguments of a `dnsmasq` run inside a lab host: a test-generated
/// configuration only (no system config, resolv.conf, hosts file or pid
/// file), in the foreground, logging to standard error, answering DNS on
/// port 53 of `address` alone, authoritative for `.` with `ns1.lab.test`
/// at `address`.
pub fn dnsmasq_args(address: &str) -> Vec<String> {
    [
        "--keep-in-foreground",
        "--conf-file=/dev/null",
        "--no-resolv",
        "--no-hosts",
        "--pid-file=",
        "--user=root",
        "--log-facility=-",
        "--port=53",
        &format!("--listen-address={address}"),
        "--bind-interfaces",
        "--auth-server=ns1.lab.test,eth0",
        "--auth-zone=.",
        &format!("--host-record=ns1.lab.test,{address}"),
    ]
    .map(str::to_string)
    .to_vec()
}

/// One host of a lab: a network namespace with `eth0` on the lab bridge.
#[derive(Debug, Clone)]
pub struct LabHost {
    /// The name the test gave it.
    pub name: String,
    /// The namespace's name (unique per lab).
    pub netns: String,
    /// Its address on the lab bridge.
    pub addr: Ipv4Addr,
}

/// A running lab. Dropping it kills the processes it started and deletes its
/// namespaces (which deletes their interfaces), also when a test panics.
#[derive(Debug)]
pub struct Lab {
    bridge: String,
    hosts: Vec<LabHost>,
    children: Mutex<Vec<Child>>,
    ip: PathBuf,
}

static LAB_SEQ: AtomicUsize = AtomicUsize::new(0);

/// A namespace-name prefix no other lab uses: `pc<pid>-<seq>`, which
/// [`reap_stale_namespaces`] recognises once the pid is gone.
pub(crate) fn lab_prefix() -> String {
    format!(
        "pc{}-{}",
        std::process::id(),
        LAB_SEQ.fetch_add(1, Ordering::SeqCst)
    )
}

impl Lab {
    /// Builds a lab with one host per name, addressed 198.18.0.10,
    /// 198.18.0.11, … in order, all on one bridge.
    pub fn new(names: &[&str]) -> anyhow::Result<Lab> {
        let hosts = names
            .iter()
            .enumerate()
            .map(|(i, name)| {
                let octet = u8::try_from(10 + i).context("too many lab hosts")?;
                Ok(((*name).to_string(), Ipv4Addr::new(198, 18, 0, octet)))
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        Lab::with_hosts(&hosts)
    }

    /// Builds a lab with the given hosts and addresses, all on one bridge
    /// and one /15 subnet. Every address must be in 198.18.0.0/15: the lab
    /// never uses any other range.
    pub fn with_hosts(hosts: &[(String, Ipv4Addr)]) -> anyhow::Result<Lab> {
        for (name, addr) in hosts {
            ensure!(
                in_lab_net(*addr),
                "lab host {name}: {addr} is outside 198.18.0.0/15, the only range the lab uses"
            );
        }
        reap_stale_namespaces();
        let ip = find_tool("ip").context("`ip` (iproute2) not found")?;
        let prefix = lab_prefix();
        let mut lab = Lab {
            bridge: format!("{prefix}-br"),
            hosts: Vec::new(),
            children: Mutex::new(Vec::new()),
            ip,
        };
        // From here on, an early return drops `lab`, which deletes whatever
        // was created so far.
        lab.run_ip(&["netns", "add", &lab.bridge.clone()])?;
        let br = lab.bridge.clone();
        lab.run_ip(&["-n", &br, "link", "set", "lo", "up"])?;
        lab.run_ip(&["-n", &br, "link", "add", "br0", "type", "bridge"])?;
        lab.run_ip(&["-n", &br, "link", "set", "br0", "up"])?;
        for (i, (name, addr)) in hosts.iter().enumerate() {
            let host = LabHost {
                name: name.clone(),
                netns: format!("{prefix}-h{i}"),
                addr: *addr,
            };
            let ns = host.netns.clone();
            lab.run_ip(&["netns", "add", &ns])?;
            lab.hosts.push(host.clone());
            let port = format!("p{i}");
            // The pair is created inside the bridge namespace and one end
            // moved straight into the host's: the root namespace never
            // holds either end.
            lab.run_ip(&[
                "-n", &br, "link", "add", &port, "type", "veth", "peer", "name", "eth0", "netns",
                &ns,
            ])?;
            lab.run_ip(&["-n", &br, "link", "set", &port, "master", "br0", "up"])?;
            lab.run_ip(&["-n", &ns, "link", "set", "lo", "up"])?;
            lab.run_ip(&[
                "-n",
                &ns,
                "addr",
                "add",
                &format!("{}/15", host.addr),
                "dev",
                "eth0",
            ])?;
            lab.run_ip(&["-n", &ns, "link", "set", "eth0", "up"])?;
        }
        lab.wait_ready()?;
        Ok(lab)
    }

    /// The host the test named `name`.
    pub fn host(&self, name: &str) -> &LabHost {
        self.hosts
            .iter()
            .find(|h| h.name == name)
            .unwrap_or_else(|| panic!("no lab host named {name}"))
    }

    /// The lab's hosts.
    pub fn hosts(&self) -> &[LabHost] {
        &self.hosts
    }

    /// Kills every process the lab started so far (agents, servers) and
    /// waits for them; the namespaces stay.
    pub fn stop_processes(&self) {
        let mut children = self.children.lock().unwrap_or_else(|e| e.into_inner());
        for child in children.iter_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
        children.clear();
    }

    /// A command that runs `program` inside `host`'s namespace.
    pub fn command(&self, host: &str, program: impl AsRef<std::ffi::OsStr>) -> Command {
        LabNet::command(self, host, program)
    }

    /// Runs `program args` inside `host` and returns its output, whatever
    /// its exit status.
    pub fn output(
        &self,
        host: &str,
        program: impl AsRef<std::ffi::OsStr>,
        args: &[&str],
    ) -> anyhow::Result<Output> {
        LabNet::output(self, host, program, args)
    }

    /// Loads an nftables ruleset (nft syntax) inside `host`.
    pub fn nft(&self, host: &str, ruleset: &str) -> anyhow::Result<()> {
        LabNet::nft(self, host, ruleset)
    }

    /// Packets counted so far by the named counter `name` of the inet
    /// table `table` inside `host` (`nft -j list counter`).
    pub fn nft_counter(&self, host: &str, table: &str, name: &str) -> anyhow::Result<u64> {
        let out = self.output(host, "nft", &["-j", "list", "counter", "inet", table, name])?;
        ensure!(
            out.status.success(),
            "nft list counter {table} {name} in {host}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).context("nft -j")?;
        v["nftables"]
            .as_array()
            .and_then(|a| a.iter().find_map(|o| o["counter"]["packets"].as_u64()))
            .with_context(|| format!("no counter {name} in {v}"))
    }

    /// Sets a sysctl inside `host`'s namespace (only per-namespace keys,
    /// such as `net.ipv4.icmp_ratelimit`, stay inside it).
    pub fn sysctl(&self, host: &str, key: &str, value: &str) -> anyhow::Result<()> {
        LabNet::sysctl(self, host, key, value)
    }

    /// Starts `program args` inside `host`, waits until it prints a line
    /// `ready` on stdout (up to 20 s), and keeps it running until the lab is
    /// dropped.
    pub fn spawn_ready(
        &self,
        host: &str,
        program: impl AsRef<std::ffi::OsStr>,
        args: &[&str],
    ) -> anyhow::Result<()> {
        LabNet::spawn_ready(self, host, program, args)
    }

    /// Starts `program args` inside `host` with stdout and stderr appended
    /// to `log`, and keeps it running until the lab is dropped.
    pub fn spawn_logged(
        &self,
        host: &str,
        program: impl AsRef<std::ffi::OsStr>,
        args: &[&str],
        log: &Path,
    ) -> anyhow::Result<()> {
        LabNet::spawn_logged(self, host, program, args, log)
    }

    /// Waits (up to `within`) until something listens on TCP `port` inside
    /// `host`, asking `ss` in that namespace rather than connecting, so that
    /// nothing in the root namespace touches the lab.
    pub fn wait_listening(&self, host: &str, port: u16, within: Duration) -> anyhow::Result<()> {
        LabNet::wait_listening(self, host, port, within)
    }

    fn run_ip(&self, args: &[&str]) -> anyhow::Result<()> {
        netns::run_ip(&self.ip, args)
    }

    /// Waits until every host's `eth0` (and its bridge port) reports
    /// carrier, so the first probe does not race the link coming up.
    fn wait_ready(&self) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(10);
        for h in &self.hosts {
            loop {
                let out = Command::new(&self.ip)
                    .args(["-n", &h.netns, "-o", "link", "show", "eth0"])
                    .stdin(Stdio::null())
                    .output()
                    .context("run ip")?;
                if String::from_utf8_lossy(&out.stdout).contains("state UP") {
                    break;
                }
                ensure!(
                    Instant::now() < deadline,
                    "lab host {}: eth0 not up within 10 s",
                    h.name
                );
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        Ok(())
    }
}

impl LabNet for Lab {
    fn netns(&self, host: &str) -> &str {
        &self.host(host).netns
    }

    fn ip_tool(&self) -> &Path {
        &self.ip
    }

    fn children(&self) -> &Mutex<Vec<Child>> {
        &self.children
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        netns::kill_children(&self.children);
        // Deleting a namespace deletes the interfaces in it; the bridge
        // namespace goes last.
        for h in &self.hosts {
            delete_netns(&self.ip, &h.netns);
        }
        delete_netns(&self.ip, &self.bridge);
    }
}

pub(crate) fn delete_netns(ip: &Path, name: &str) {
    let _ = Command::new(ip)
        .args(["netns", "del", name])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// Deletes namespaces left by lab processes that died without running their
/// destructors (SIGKILL, power loss): names are `pc<pid>-…` and a dead pid
/// means nobody owns them.
pub(crate) fn reap_stale_namespaces() {
    let Some(ip) = find_tool("ip") else { return };
    let Ok(entries) = std::fs::read_dir("/run/netns") else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().to_string();
        let Some(pid) = name
            .strip_prefix("pc")
            .and_then(|r| r.split('-').next())
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if !Path::new(&format!("/proc/{pid}")).exists() {
            delete_netns(&ip, &name);
        }
    }
}

/// The `portcall` binary the lab tests run: `$PORTCALL_BIN` when set, else
/// `target/<profile>/portcall` next to the running test executable
/// (`target/<profile>/deps/…`). Fails when it is missing or older than the
/// sources of `agent` and `probe-core`, so that a stale build is never what
/// gets tested: run `cargo build -p portcall` (or `cargo test --workspace`,
/// which builds it for the `portcall` package's own CLI tests) first.
pub fn portcall_bin() -> anyhow::Result<PathBuf> {
    if let Some(p) = std::env::var_os("PORTCALL_BIN") {
        return Ok(PathBuf::from(p));
    }
    let exe = std::env::current_exe().context("find the test executable")?;
    // Test executables live in target/<profile>/deps, binaries (such as
    // portcall-lab) in target/<profile>.
    let bin = exe
        .ancestors()
        .skip(1)
        .take(2)
        .map(|d| d.join("portcall"))
        .find(|p| p.is_file())
        .context("portcall not found next to this executable: run `cargo build -p portcall` first (or set PORTCALL_BIN)")?;
    let built = std::fs::metadata(&bin)?.modified()?;
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .context("workspace root")?;
    let newest = ["agent/src", "probe-core/src"]
        .iter()
        .filter_map(|d| newest_mtime(&workspace.join(d)))
        .max();
    if let Some(newest) = newest {
        ensure!(
            newest <= built,
            "{} is older than the sources: run `cargo build -p portcall` first",
            bin.display()
        );
    }
    Ok(bin)
}

fn newest_mtime(dir: &Path) -> Option<SystemTime> {
    let mut newest = None;
    for e in std::fs::read_dir(dir).ok()?.flatten() {
        let path = e.path();
        let t = if path.is_dir() {
            newest_mtime(&path)
        } else {
            e.metadata().ok().and_then(|m| m.modified().ok())
        };
        newest = newest.max(t);
    }
    newest
}
