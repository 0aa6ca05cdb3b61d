//! The twin's namespaces: one network namespace per host of a [`State`],
//! with the host's interface names, addresses, routes and forwarding, and
//! its ruleset loaded, joined by bridges (one per shared network) inside a
//! switch namespace; next hops that are no host of the state become one
//! rule-less router namespace holding those addresses.
//!
//! Nothing here touches the machine's own network: every interface is
//! created inside a namespace this run created (veth pairs are made in the
//! switch namespace and one end moved straight into the host's), and all
//! of them carry a per-run prefix `pctw<pid>-<seq>`, so a run killed before
//! its destructor is recognised by its dead pid and reaped by the next
//! ([`reap_stale`]).

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};

use super::state::{Cidr, RouteTo, Ruleset, RulesetSyntax, State};

/// Every twin namespace's name starts with this, then the pid of the run
/// that made it.
pub const NETNS_PREFIX: &str = "pctw";

/// Why the twin could not be built or changed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NetnsError {
    /// The process lacks the privileges namespaces need.
    #[error(
        "the twin needs root, or CAP_NET_ADMIN and CAP_SYS_ADMIN, to build network namespaces: {0}"
    )]
    Privileges(String),
    /// A tool is missing.
    #[error(
        "`{0}` not found (Debian packages iproute2, nftables and iptables provide the twin's tools)"
    )]
    Tool(&'static str),
    /// A command failed.
    #[error("{what}: {message}")]
    Command {
        /// What was being done, naming the host.
        what: String,
        /// The command's last words.
        message: String,
    },
    /// A ruleset did not load; `message` is nft's own, which names the
    /// file, line and column.
    #[error("load {file} on {host}: {message}")]
    Ruleset {
        /// The host.
        host: String,
        /// The ruleset file.
        file: String,
        /// What the loader said.
        message: String,
    },
}

/// Capability bits of `/proc/self/status`'s `CapEff`.
const CAP_NET_ADMIN: u32 = 12;
const CAP_SYS_ADMIN: u32 = 21;

/// Why this process cannot build the twin (no CAP_NET_ADMIN or
/// CAP_SYS_ADMIN in its effective set), or `None` when it can.
pub fn privileges_missing() -> Option<String> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let eff = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .unwrap_or(0);
    let missing: Vec<&str> = [
        (CAP_NET_ADMIN, "CAP_NET_ADMIN"),
        (CAP_SYS_ADMIN, "CAP_SYS_ADMIN"),
    ]
    .into_iter()
    .filter(|(bit, _)| eff & (1 << bit) == 0)
    .map(|(_, name)| name)
    .collect();
    (!missing.is_empty()).then(|| {
        format!(
            "this process lacks {} (run it as root, e.g. with sudo)",
            missing.join(" and ")
        )
    })
}

/// `name` on `PATH` or in the usual system directories.
pub fn find_tool(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/bin", "/bin"].map(PathBuf::from))
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

fn tool(name: &'static str) -> Result<PathBuf, NetnsError> {
    find_tool(name).ok_or(NetnsError::Tool(name))
}

/// Runs `program args`, failing with its standard error.
fn run(program: &Path, args: &[&str], what: impl Fn() -> String) -> Result<(), NetnsError> {
    let out = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| NetnsError::Command {
            what: what(),
            message: format!("start {}: {e}", program.display()),
        })?;
    if out.status.success() {
        return Ok(());
    }
    Err(NetnsError::Command {
        what: what(),
        message: last_words(&out.stderr),
    })
}

fn last_words(stderr: &[u8]) -> String {
    let text = String::from_utf8_lossy(stderr);
    let text = text.trim();
    if text.is_empty() {
        "failed without a message".into()
    } else {
        text.to_string()
    }
}

/// The namespaces named `pctw<pid>-…` (see [`NETNS_PREFIX`]) whose pid is
/// gone, with every process still inside them killed first. Returns the
/// names deleted.
pub fn reap_stale() -> Vec<String> {
    let Some(ip) = find_tool("ip") else {
        return Vec::new();
    };
    let Ok(entries) = std::fs::read_dir("/run/netns") else {
        return Vec::new();
    };
    let mut reaped = Vec::new();
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(pid) = name
            .strip_prefix(NETNS_PREFIX)
            .and_then(|r| r.split('-').next())
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if Path::new(&format!("/proc/{pid}")).exists() {
            continue;
        }
        kill_inside(&ip, &name);
        delete_netns(&ip, &name);
        reaped.push(name);
    }
    reaped
}

/// Kills every process living in namespace `name`.
fn kill_inside(ip: &Path, name: &str) {
    let Ok(out) = Command::new(ip)
        .args(["netns", "pids", name])
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
    else {
        return;
    };
    for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
        if let Ok(pid) = pid.parse::<i32>() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

fn delete_netns(ip: &Path, name: &str) {
    let _ = Command::new(ip)
        .args(["netns", "del", name])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

static SEQ: AtomicUsize = AtomicUsize::new(0);

/// A built twin. Dropping it kills what runs inside and deletes every
/// namespace it made.
#[derive(Debug)]
pub struct TwinNet {
    ip: PathBuf,
    nft: PathBuf,
    prefix: String,
    /// Host name → its namespace.
    hosts: BTreeMap<String, String>,
    /// Every namespace made, in creation order (switch first).
    made: Vec<String>,
    /// The next hops that are no host of the state, by address.
    gateways: Vec<IpAddr>,
}

/// A network segment: interfaces joined because they share a network.
struct Segments {
    /// (host, interface name) → segment number.
    of: BTreeMap<(String, String), usize>,
    count: usize,
}

/// Joins interfaces that share a network into segments (union-find over
/// the networks of their addresses).
fn segments(state: &State) -> Segments {
    let mut keys: Vec<(String, String)> = Vec::new();
    let mut parent: Vec<usize> = Vec::new();
    let mut by_net: BTreeMap<Cidr, usize> = BTreeMap::new();
    fn find(parent: &mut [usize], mut i: usize) -> usize {
        while parent[i] != i {
            parent[i] = parent[parent[i]];
            i = parent[i];
        }
        i
    }
    for (host, h) in &state.hosts {
        for i in &h.interfaces {
            let me = keys.len();
            keys.push((host.clone(), i.name.clone()));
            parent.push(me);
            for a in &i.addresses {
                // Link-local networks are on every link: they join nothing.
                if matches!(a.addr, IpAddr::V6(v) if v.is_unicast_link_local()) {
                    continue;
                }
                match by_net.get(&a.network()) {
                    Some(&other) => {
                        let (x, y) = (find(&mut parent, me), find(&mut parent, other));
                        parent[x] = y;
                    }
                    None => {
                        by_net.insert(a.network(), me);
                    }
                }
            }
        }
    }
    let mut number: BTreeMap<usize, usize> = BTreeMap::new();
    let mut of = BTreeMap::new();
    for (i, key) in keys.into_iter().enumerate() {
        let root = find(&mut parent, i);
        let next = number.len();
        let n = *number.entry(root).or_insert(next);
        of.insert(key, n);
    }
    Segments {
        of,
        count: number.len(),
    }
}

impl TwinNet {
    /// Builds the twin of `state`: refuses without privileges, reaps what
    /// killed runs left, then makes the namespaces. Rulesets are not
    /// loaded yet ([`TwinNet::load_base`]).
    pub fn build(state: &State) -> Result<TwinNet, NetnsError> {
        if let Some(why) = privileges_missing() {
            return Err(NetnsError::Privileges(why));
        }
        let ip = tool("ip")?;
        let nft = tool("nft")?;
        tool("sysctl")?;
        reap_stale();
        let prefix = format!(
            "{NETNS_PREFIX}{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::SeqCst)
        );
        let mut net = TwinNet {
            ip,
            nft,
            prefix,
            hosts: BTreeMap::new(),
            made: Vec::new(),
            gateways: Vec::new(),
        };
        // From here on an early return drops `net`, which deletes whatever
        // was made so far.
        net.build_inner(state)?;
        Ok(net)
    }

    fn build_inner(&mut self, state: &State) -> Result<(), NetnsError> {
        // Every name is recorded before it is made, so a failure half way
        // deletes what exists (deleting a missing namespace is harmless).
        let sw = format!("{}-sw", self.prefix);
        self.made.push(sw.clone());
        for (i, host) in state.hosts.keys().enumerate() {
            let ns = format!("{}-h{i}", self.prefix);
            self.made.push(ns.clone());
            self.hosts.insert(host.clone(), ns);
        }
        // Namespaces are made and deleted at the kernel's pace (RCU
        // grace periods), not the CPU's: all at once.
        let forwarding = |host: Option<&str>| {
            host.and_then(|h| state.hosts.get(h))
                .is_some_and(|h| h.forwarding)
        };
        let mut jobs: Vec<(String, bool)> = vec![(sw.clone(), false)];
        jobs.extend(
            self.hosts
                .iter()
                .map(|(h, ns)| (ns.clone(), forwarding(Some(h)))),
        );
        self.parallel(
            jobs.iter()
                .map(|(ns, fwd)| move |me: &TwinNet| me.init_netns(ns, *fwd)),
        )?;
        let segs = segments(state);
        let mut switch: Vec<String> = Vec::new();
        for s in 0..segs.count {
            switch.push(format!("link add br{s} type bridge"));
            switch.push(format!("link set br{s} up"));
        }
        let mut port = 0usize;
        for (host, h) in &state.hosts {
            let ns = &self.hosts[host];
            for iface in &h.interfaces {
                let seg = segs.of[&(host.clone(), iface.name.clone())];
                // The pair is made in the switch namespace and one end
                // moved straight into the host's.
                switch.push(format!(
                    "link add p{port} type veth peer name {} netns {ns}",
                    iface.name
                ));
                switch.push(format!("link set p{port} master br{seg} up"));
                port += 1;
            }
        }
        self.ip_batch(&sw, &switch, "the twin's switch")?;
        let batches: Vec<(String, String, Vec<String>)> = state
            .hosts
            .iter()
            .map(|(host, h)| (host.clone(), self.hosts[host].clone(), host_batch(h)))
            .collect();
        self.parallel(
            batches
                .iter()
                .map(|(host, ns, lines)| move |me: &TwinNet| me.ip_batch(ns, lines, host)),
        )?;
        self.build_gateways(state, &segs, &sw)
    }

    /// Runs `jobs` on threads of their own, returning the first failure.
    fn parallel<F>(&self, jobs: impl Iterator<Item = F>) -> Result<(), NetnsError>
    where
        F: FnOnce(&TwinNet) -> Result<(), NetnsError> + Send,
    {
        std::thread::scope(|scope| {
            let handles: Vec<_> = jobs.map(|job| scope.spawn(move || job(self))).collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join().unwrap_or_else(|_| {
                        Err(NetnsError::Command {
                            what: "twin".into(),
                            message: "a builder thread panicked".into(),
                        })
                    })
                })
                .collect::<Result<Vec<()>, NetnsError>>()
                .map(|_| ())
        })
    }

    /// Makes namespace `ns`: loopback up, no duplicate address detection
    /// (addresses are usable at once, as on a host that has been up for a
    /// while), forwarding as the state says.
    fn init_netns(&self, ns: &str, forwarding: bool) -> Result<(), NetnsError> {
        self.ip_ok(&["netns", "add", ns], "twin")?;
        self.ip_ok(&["-n", ns, "link", "set", "lo", "up"], "twin")?;
        let f = if forwarding { "1" } else { "0" };
        let keys = [
            "net.ipv6.conf.all.accept_dad=0".to_string(),
            "net.ipv6.conf.default.accept_dad=0".to_string(),
            format!("net.ipv4.ip_forward={f}"),
            format!("net.ipv6.conf.all.forwarding={f}"),
        ];
        let mut args = vec!["netns", "exec", ns, "sysctl", "-qw"];
        args.extend(keys.iter().map(String::as_str));
        run(&self.ip, &args, || format!("twin namespace {ns}: sysctl"))
    }

    /// Runs `lines` as one `ip -n NS -batch -`.
    fn ip_batch(&self, ns: &str, lines: &[String], host: &str) -> Result<(), NetnsError> {
        use std::io::Write as _;
        if lines.is_empty() {
            return Ok(());
        }
        let what = || format!("twin of {host}: ip -n {ns} -batch");
        let mut child = Command::new(&self.ip)
            .args(["-n", ns, "-batch", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| NetnsError::Command {
                what: what(),
                message: format!("start {}: {e}", self.ip.display()),
            })?;
        if let Some(mut stdin) = child.stdin.take() {
            let _ = stdin.write_all(lines.join("\n").as_bytes());
            let _ = stdin.write_all(b"\n");
        }
        let out = child.wait_with_output().map_err(|e| NetnsError::Command {
            what: what(),
            message: e.to_string(),
        })?;
        if out.status.success() {
            Ok(())
        } else {
            Err(NetnsError::Command {
                what: what(),
                message: last_words(&out.stderr),
            })
        }
    }

    /// A rule-less router holding every next hop that is no host of the
    /// state, with a leg on each segment and a host route to every host
    /// address there.
    fn build_gateways(
        &mut self,
        state: &State,
        segs: &Segments,
        sw: &str,
    ) -> Result<(), NetnsError> {
        // Gateway address → the segments it must answer on.
        let mut gws: BTreeMap<IpAddr, Vec<usize>> = BTreeMap::new();
        for (host, h) in &state.hosts {
            for r in &h.routes {
                let Some(v) = r.via else { continue };
                if state.host_of(v).is_some() {
                    continue;
                }
                let dev =
                    r.dev.clone().or_else(|| route_dev(h, v)).or_else(|| {
                        (h.interfaces.len() == 1).then(|| h.interfaces[0].name.clone())
                    });
                if let Some(d) = dev {
                    let seg = segs.of[&(host.clone(), d)];
                    let e = gws.entry(v).or_default();
                    if !e.contains(&seg) {
                        e.push(seg);
                    }
                }
            }
        }
        if gws.is_empty() {
            return Ok(());
        }
        let gw = self.add_netns("gw")?;
        self.sysctl(&gw, "net.ipv4.ip_forward", "1")?;
        self.sysctl(&gw, "net.ipv6.conf.all.forwarding", "1")?;
        for s in 0..segs.count {
            let leg = format!("g{s}");
            self.veth(sw, &format!("q{s}"), &gw, &leg, s, "the gateway")?;
            for (addr, on) in &gws {
                if on.contains(&s) {
                    let prefix = if addr.is_ipv4() { 32 } else { 128 };
                    self.add_addr(
                        &gw,
                        &Cidr {
                            addr: *addr,
                            prefix,
                        },
                        &leg,
                        "the gateway",
                    )?;
                }
            }
            self.ip_ok(&["-n", &gw, "link", "set", &leg, "up"], "the gateway")?;
            for (host, h) in &state.hosts {
                for i in &h.interfaces {
                    if segs.of[&(host.clone(), i.name.clone())] != s {
                        continue;
                    }
                    for a in &i.addresses {
                        let dest = Cidr {
                            addr: a.addr,
                            prefix: if a.addr.is_ipv4() { 32 } else { 128 },
                        }
                        .to_string();
                        self.ip_ok(
                            &["-n", &gw, "route", "replace", &dest, "dev", &leg],
                            "the gateway",
                        )?;
                    }
                }
            }
        }
        self.gateways = gws.into_keys().collect();
        Ok(())
    }

    /// A veth pair: `outer` on bridge `br<seg>` of the switch namespace,
    /// `inner` moved straight into `ns` (the root namespace never holds
    /// either end).
    fn veth(
        &self,
        sw: &str,
        outer: &str,
        ns: &str,
        inner: &str,
        seg: usize,
        host: &str,
    ) -> Result<(), NetnsError> {
        self.ip_ok(
            &[
                "-n", sw, "link", "add", outer, "type", "veth", "peer", "name", inner, "netns", ns,
            ],
            host,
        )?;
        self.ip_ok(
            &[
                "-n",
                sw,
                "link",
                "set",
                outer,
                "master",
                &format!("br{seg}"),
                "up",
            ],
            host,
        )
    }

    fn add_addr(&self, ns: &str, a: &Cidr, dev: &str, host: &str) -> Result<(), NetnsError> {
        let cidr = a.to_string();
        let mut args = vec!["-n", ns, "addr", "add", &cidr, "dev", dev];
        if a.addr.is_ipv6() {
            // No duplicate address detection: the address is usable at
            // once, as on a host that has been up for a while.
            args.push("nodad");
        }
        self.ip_ok(&args, host)
    }

    fn add_netns(&mut self, suffix: &str) -> Result<String, NetnsError> {
        let name = format!("{}-{suffix}", self.prefix);
        self.ip_ok(&["netns", "add", &name], "twin")?;
        self.made.push(name.clone());
        self.ip_ok(&["-n", &name, "link", "set", "lo", "up"], "twin")?;
        self.sysctl(&name, "net.ipv6.conf.all.accept_dad", "0")?;
        self.sysctl(&name, "net.ipv6.conf.default.accept_dad", "0")?;
        Ok(name)
    }

    fn ip_ok(&self, args: &[&str], host: &str) -> Result<(), NetnsError> {
        run(&self.ip, args, || {
            format!("twin of {host}: ip {}", args.join(" "))
        })
    }

    fn sysctl(&self, ns: &str, key: &str, value: &str) -> Result<(), NetnsError> {
        let kv = format!("{key}={value}");
        run(
            &self.ip,
            &["netns", "exec", ns, "sysctl", "-qw", &kv],
            || format!("twin namespace {ns}: sysctl {kv}"),
        )
    }

    /// Kills every process still running in the twin's namespaces (what
    /// a round's agents left behind).
    pub fn kill_processes(&self) {
        for ns in &self.made {
            kill_inside(&self.ip, ns);
        }
    }

    /// The namespace playing `host`.
    pub fn netns(&self, host: &str) -> Option<&str> {
        self.hosts.get(host).map(String::as_str)
    }

    /// The `ip` tool the twin runs.
    pub fn ip_tool(&self) -> &Path {
        &self.ip
    }

    /// The next hops that are no host of the state, played by the
    /// rule-less router.
    pub fn gateways(&self) -> &[IpAddr] {
        &self.gateways
    }

    /// Loads every host's base ruleset (hosts without one keep an empty
    /// ruleset).
    pub fn load_base(&self, state: &State) -> Result<(), NetnsError> {
        for (host, h) in &state.hosts {
            if let Some(r) = &h.ruleset {
                self.load_ruleset(host, r, true)?;
            }
        }
        Ok(())
    }

    /// Loads `ruleset` on `host`, replacing its whole ruleset when
    /// `replace`, else on top of what it has.
    pub fn load_ruleset(
        &self,
        host: &str,
        ruleset: &Ruleset,
        replace: bool,
    ) -> Result<(), NetnsError> {
        let ns = self.ns_of(host)?;
        let file = ruleset.path.display().to_string();
        let fail = |message: String| NetnsError::Ruleset {
            host: host.to_string(),
            file: file.clone(),
            message,
        };
        if replace {
            self.exec(ns, &self.nft, &["flush", "ruleset"])
                .map_err(fail)?;
        }
        let args: &[&str] = match ruleset.syntax {
            RulesetSyntax::Nft => &["-f", &file],
            RulesetSyntax::Json => &["-j", "-f", &file],
        };
        self.exec(ns, &self.nft, args).map_err(fail)
    }

    /// Loads an `iptables-save` (or `ip6tables-save` with `ipv6`) dump
    /// with `iptables-nft-restore` inside `host`, so the kernel's own
    /// translation to nftables is what the twin evaluates.
    pub fn load_iptables(&self, host: &str, file: &Path, ipv6: bool) -> Result<(), NetnsError> {
        let ns = self.ns_of(host)?;
        let restore = tool(if ipv6 {
            "ip6tables-nft-restore"
        } else {
            "iptables-nft-restore"
        })?;
        let f = file.display().to_string();
        self.exec(ns, &restore, &[&f])
            .map_err(|message| NetnsError::Ruleset {
                host: host.to_string(),
                file: f.clone(),
                message,
            })
    }

    /// Runs the shell script `file` with `sh` inside `host`'s namespace
    /// (a `portcall suggest` section: its `nft` or `iptables` commands).
    pub fn run_script(&self, host: &str, file: &Path) -> Result<(), NetnsError> {
        let ns = self.ns_of(host)?;
        let sh = tool("sh")?;
        let f = file.display().to_string();
        self.exec(ns, &sh, &["-e", &f])
            .map_err(|message| NetnsError::Ruleset {
                host: host.to_string(),
                file: f.clone(),
                message,
            })
    }

    fn ns_of(&self, host: &str) -> Result<&str, NetnsError> {
        self.netns(host).ok_or_else(|| NetnsError::Command {
            what: format!("host {host}"),
            message: "not a host of the state directory".into(),
        })
    }

    /// Runs `program args` inside `ns`; its standard error on failure.
    fn exec(&self, ns: &str, program: &Path, args: &[&str]) -> Result<(), String> {
        let prog = program.display().to_string();
        let mut all = vec!["netns", "exec", ns, prog.as_str()];
        all.extend_from_slice(args);
        run(&self.ip, &all, String::new).map_err(|e| match e {
            NetnsError::Command { message, .. } => message,
            other => other.to_string(),
        })
    }

    /// A command that runs `program` inside `host`'s namespace.
    pub fn command(&self, host: &str, program: &Path) -> Option<Command> {
        let ns = self.netns(host)?;
        let mut c = Command::new(&self.ip);
        c.args(["netns", "exec", ns]).arg(program);
        Some(c)
    }
}

/// The interface of `h` whose network holds next hop `v`.
fn route_dev(h: &super::state::HostState, v: IpAddr) -> Option<String> {
    h.interfaces
        .iter()
        .find(|i| i.addresses.iter().any(|a| a.contains(v)))
        .map(|i| i.name.clone())
}

/// A host's `ip -batch` lines: its addresses, its interfaces up, then its
/// routes (with `onlink` where the next hop is on no connected network, a
/// `/32` host behind a VPC gateway).
fn host_batch(h: &super::state::HostState) -> Vec<String> {
    let mut lines = Vec::new();
    for iface in &h.interfaces {
        for a in &iface.addresses {
            let nodad = if a.addr.is_ipv6() { " nodad" } else { "" };
            lines.push(format!("addr add {a} dev {}{nodad}", iface.name));
        }
        lines.push(format!("link set {} up", iface.name));
    }
    for r in &h.routes {
        // `ip -batch` takes no family option: the destination says it.
        let to = match r.to {
            RouteTo::Default if r.is_ipv6() => "::/0".to_string(),
            RouteTo::Default => "0.0.0.0/0".to_string(),
            RouteTo::Net(n) => n.network().to_string(),
        };
        let mut line = format!("route add {to}");
        if let Some(v) = r.via {
            line.push_str(&format!(" via {v}"));
        }
        let dev = r.dev.clone().or_else(|| {
            r.via
                .and_then(|v| route_dev(h, v))
                .or_else(|| (h.interfaces.len() == 1).then(|| h.interfaces[0].name.clone()))
        });
        if let Some(d) = &dev {
            line.push_str(&format!(" dev {d}"));
        }
        if r.via.is_some_and(|v| !h.addresses().any(|a| a.contains(v))) && dev.is_some() {
            line.push_str(" onlink");
        }
        lines.push(line);
    }
    lines
}

impl Drop for TwinNet {
    fn drop(&mut self) {
        // At the kernel's pace, all at once (see `build_inner`).
        std::thread::scope(|scope| {
            for ns in &self.made {
                let ip = &self.ip;
                scope.spawn(move || {
                    kill_inside(ip, ns);
                    delete_netns(ip, ns);
                });
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::twin::state::{HostState, Interface};

    fn host(ifaces: &[(&str, &[&str])]) -> HostState {
        HostState {
            interfaces: ifaces
                .iter()
                .map(|(n, a)| Interface {
                    name: (*n).into(),
                    addresses: a.iter().map(|a| a.parse().unwrap()).collect(),
                })
                .collect(),
            ..HostState::default()
        }
    }

    #[test]
    fn interfaces_sharing_a_network_share_a_bridge_and_a_router_joins_two() {
        let mut state = State::default();
        state
            .hosts
            .insert("a".into(), host(&[("eth0", &["198.18.1.10/24"])]));
        state
            .hosts
            .insert("b".into(), host(&[("eth0", &["198.18.2.10/24"])]));
        state.hosts.insert(
            "gw".into(),
            host(&[
                ("eth0", &["198.18.1.1/24"]),
                ("eth1", &["198.18.2.1/24", "2001:2:0:2::1/64"]),
            ]),
        );
        state.hosts.insert(
            "c".into(),
            host(&[("ens3", &["2001:2:0:2::10/64", "fe80::1/64"])]),
        );
        let s = segments(&state);
        assert_eq!(s.count, 2);
        let seg = |h: &str, i: &str| s.of[&(h.to_string(), i.to_string())];
        assert_eq!(seg("a", "eth0"), seg("gw", "eth0"));
        assert_eq!(seg("b", "eth0"), seg("gw", "eth1"));
        assert_eq!(seg("c", "ens3"), seg("b", "eth0"));
        assert_ne!(seg("a", "eth0"), seg("b", "eth0"));
    }
}
