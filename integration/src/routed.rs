//! The routed lab: zones on separate bridges joined by a router namespace
//! that forwards IPv4 and IPv6 through an nftables `inet` forward chain, so
//! tests can break a path *between* hosts (drop, ICMP reject, reset, return
//! path only, DNAT, a path-MTU black hole) and not only at a host.
//!
//! Zone `n` is 198.18.n.0/24 and 2001:2:0:n::/64; the router is `.254` and
//! `::254` on every zone, and each host's default routes (IPv4, and IPv6
//! when it has an IPv6 address) point at its zone's router. Every bridge
//! lives in its own namespace, every veth pair is created inside lab
//! namespaces, and nothing is attached to the root namespace. IPv6
//! duplicate address detection is off in every lab namespace so addresses
//! are usable at once, and neighbour entries are static by default so the
//! first probe never waits for ARP or neighbour discovery.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};

use crate::LabNet;

/// The name under which the router is a host of [`LabNet`]: `lab.nft(ROUTER,
/// …)`, `lab.output(ROUTER, "ip", …)`. No lab host may take it.
pub const ROUTER: &str = "router";

/// One zone: a bridge in its own namespace and the router's leg on it.
#[derive(Debug, Clone)]
pub struct Zone {
    /// The name the test gave it (a plan zone, usually).
    pub name: String,
    /// `n` in 198.18.n.0/24 and 2001:2:0:n::/64.
    pub index: u8,
    /// The namespace holding the zone's bridge.
    pub netns: String,
    /// The router's interface on this zone (inside the router namespace).
    pub router_iface: String,
}

impl Zone {
    /// The zone's IPv4 network, a /24.
    pub fn net_v4(&self) -> Ipv4Addr {
        Ipv4Addr::new(198, 18, self.index, 0)
    }

    /// The zone's IPv6 network, a /64.
    pub fn net_v6(&self) -> Ipv6Addr {
        Ipv6Addr::new(0x2001, 2, 0, self.index.into(), 0, 0, 0, 0)
    }

    /// The router's IPv4 address on this zone.
    pub fn router_v4(&self) -> Ipv4Addr {
        Ipv4Addr::new(198, 18, self.index, 254)
    }

    /// The router's IPv6 address on this zone.
    pub fn router_v6(&self) -> Ipv6Addr {
        Ipv6Addr::new(0x2001, 2, 0, self.index.into(), 0, 0, 0, 0x254)
    }

    /// Whether `addr` belongs to this zone's networks.
    pub fn contains(&self, addr: IpAddr) -> bool {
        zone_index_of(addr) == Some(self.index)
    }

    fn router_mac(&self) -> String {
        format!("02:70:63:{:02x}:ff:fe", self.index)
    }
}

/// The zone index an address implies: the third octet of 198.18.n.x, the
/// fourth group of 2001:2:0:n::; `None` outside the lab ranges.
pub fn zone_index_of(addr: IpAddr) -> Option<u8> {
    match addr {
        IpAddr::V4(v4) => {
            let [a, b, n, _] = v4.octets();
            (a == 198 && b == 18).then_some(n)
        }
        IpAddr::V6(v6) => {
            let s = v6.segments();
            (s[0] == 0x2001 && s[1] == 2 && s[2] == 0)
                .then(|| u8::try_from(s[3]).ok())
                .flatten()
        }
    }
}

/// One host of a routed lab.
#[derive(Debug, Clone)]
pub struct RoutedHost {
    /// The name the test gave it.
    pub name: String,
    /// The zone it is in.
    pub zone: String,
    /// Its namespace.
    pub netns: String,
    /// Its addresses on `eth0`, in the order given.
    pub addrs: Vec<IpAddr>,
    mac: String,
}

impl RoutedHost {
    /// Its first IPv4 address, if any.
    pub fn v4(&self) -> Option<Ipv4Addr> {
        self.addrs.iter().find_map(|a| match a {
            IpAddr::V4(v4) => Some(*v4),
            IpAddr::V6(_) => None,
        })
    }

    /// Its first IPv6 address, if any.
    pub fn v6(&self) -> Option<Ipv6Addr> {
        self.addrs.iter().find_map(|a| match a {
            IpAddr::V6(v6) => Some(*v6),
            IpAddr::V4(_) => None,
        })
    }
}

/// What a routed lab is made of, before it exists.
#[derive(Debug, Clone)]
pub struct RoutedLabBuilder {
    zones: Vec<(String, u8)>,
    hosts: Vec<(String, String, Vec<IpAddr>)>,
    static_neighbours: bool,
    router_host: Option<String>,
}

impl RoutedLabBuilder {
    /// Adds zone `name` as 198.18.`index`.0/24 and 2001:2:0:`index`::/64.
    pub fn zone(mut self, name: &str, index: u8) -> Self {
        self.zones.push((name.to_string(), index));
        self
    }

    /// Adds host `name` in `zone` with `addrs` (IPv4 and/or IPv6 literals
    /// inside the zone's networks).
    pub fn host(mut self, name: &str, zone: &str, addrs: &[&str]) -> Self {
        let addrs = addrs
            .iter()
            .map(|a| {
                a.parse()
                    .unwrap_or_else(|_| panic!("lab host {name}: {a} is not an IP literal"))
            })
            .collect();
        self.hosts.push((name.to_string(), zone.to_string(), addrs));
        self
    }

    /// Adds host `name` in `zone` with already parsed addresses.
    pub fn host_addrs(mut self, name: &str, zone: &str, addrs: Vec<IpAddr>) -> Self {
        self.hosts.push((name.to_string(), zone.to_string(), addrs));
        self
    }

    /// Whether hosts and router get permanent neighbour entries for each
    /// other (default on). Off, ARP and neighbour discovery run as on a
    /// real network, and a missing host is answered by the router with an
    /// ICMP host-unreachable after the kernel's resolution timeout.
    pub fn static_neighbours(mut self, on: bool) -> Self {
        self.static_neighbours = on;
        self
    }

    /// Makes the router a host of the lab named `name` as well (a plan
    /// host that routes between the zones, with its own agent): commands,
    /// processes and rulesets for `name` run in the router's namespace,
    /// whose addresses are its `.254` and `::254` on every zone.
    pub fn router_host(mut self, name: &str) -> Self {
        self.router_host = Some(name.to_string());
        self
    }

    /// Builds the lab.
    pub fn build(self) -> anyhow::Result<RoutedLab> {
        RoutedLab::build(self)
    }
}

/// The router's nftables ruleset, kept as parts so a test states only the
/// fault it injects. Everything is accepted unless a rule says otherwise.
#[derive(Debug, Clone, Default)]
pub struct RouterRules {
    /// Rules of the `inet` forward chain (policy accept), e.g.
    /// `ip daddr 198.18.3.40 tcp dport 5432 drop`,
    /// `… reject with icmpx admin-prohibited`, `… reject with tcp reset`.
    pub forward: Vec<String>,
    /// Rules of the router's own output chain (policy accept), e.g. to drop
    /// the ICMP errors the router itself sends
    /// (`icmp type destination-unreachable drop`).
    pub output: Vec<String>,
    /// Rules of a `nat` prerouting chain, e.g.
    /// `ip daddr 198.18.3.40 tcp dport 5432 dnat ip to 198.18.3.41`; the nat
    /// chains (and with them connection tracking) exist only when this or
    /// `postrouting` has rules.
    pub prerouting: Vec<String>,
    /// Rules of a `nat` postrouting chain (e.g. `masquerade`).
    pub postrouting: Vec<String>,
    /// A whole extra ruleset fragment, verbatim.
    pub extra: String,
}

impl RouterRules {
    /// The ruleset as `nft -f` input; it replaces whatever the router had.
    pub fn render(&self) -> String {
        let mut s = String::from("flush ruleset\ntable inet router {\n");
        chain(&mut s, "forward", "filter", "forward", 0, &self.forward);
        chain(&mut s, "output", "filter", "output", 0, &self.output);
        if !self.prerouting.is_empty() || !self.postrouting.is_empty() {
            chain(
                &mut s,
                "prerouting",
                "nat",
                "prerouting",
                -100,
                &self.prerouting,
            );
            chain(
                &mut s,
                "postrouting",
                "nat",
                "postrouting",
                100,
                &self.postrouting,
            );
        }
        s.push_str("}\n");
        s.push_str(&self.extra);
        s
    }
}

fn chain(s: &mut String, name: &str, kind: &str, hook: &str, priority: i32, rules: &[String]) {
    let _ = writeln!(
        s,
        "  chain {name} {{\n    type {kind} hook {hook} priority {priority}; policy accept;"
    );
    for r in rules {
        let _ = writeln!(s, "    {r}");
    }
    s.push_str("  }\n");
}

/// A running routed lab. Dropping it kills the processes it started and
/// deletes its namespaces, also when a test panics.
#[derive(Debug)]
pub struct RoutedLab {
    router: String,
    router_host: Option<String>,
    zones: Vec<Zone>,
    hosts: Vec<RoutedHost>,
    children: Mutex<Vec<Child>>,
    ip: PathBuf,
}

impl RoutedLab {
    /// An empty description: add zones and hosts, then
    /// [`RoutedLabBuilder::build`].
    pub fn builder() -> RoutedLabBuilder {
        RoutedLabBuilder {
            zones: Vec::new(),
            hosts: Vec::new(),
            static_neighbours: true,
            router_host: None,
        }
    }

    fn build(spec: RoutedLabBuilder) -> anyhow::Result<RoutedLab> {
        validate(&spec)?;
        crate::reap_stale_namespaces();
        let ip = crate::find_tool("ip").context("`ip` (iproute2) not found")?;
        let prefix = crate::lab_prefix();
        let mut lab = RoutedLab {
            router: format!("{prefix}-rt"),
            router_host: spec.router_host.clone(),
            zones: Vec::new(),
            hosts: Vec::new(),
            children: Mutex::new(Vec::new()),
            ip,
        };
        // From here on, an early return drops `lab`, which deletes whatever
        // was created so far (every namespace is recorded before use).
        let rt = lab.router.clone();
        lab.add_netns(&rt)?;
        for (key, value) in [
            ("net.ipv4.ip_forward", "1"),
            ("net.ipv6.conf.all.forwarding", "1"),
        ] {
            lab.sysctl(ROUTER, key, value)?;
        }
        for (name, index) in &spec.zones {
            let zone = Zone {
                name: name.clone(),
                index: *index,
                netns: format!("{prefix}-z{index}"),
                router_iface: format!("z{index}"),
            };
            lab.zones.push(zone.clone());
            lab.add_netns(&zone.netns)?;
            let br = zone.netns.as_str();
            lab.ip(&["-n", br, "link", "add", "br0", "type", "bridge"])?;
            lab.ip(&["-n", br, "link", "set", "br0", "up"])?;
            // Both ends are created inside lab namespaces; the root
            // namespace never holds either.
            lab.ip(&[
                "-n",
                br,
                "link",
                "add",
                "rt",
                "type",
                "veth",
                "peer",
                "name",
                &zone.router_iface,
                "netns",
                &rt,
            ])?;
            lab.ip(&["-n", br, "link", "set", "rt", "master", "br0", "up"])?;
            let leg = zone.router_iface.as_str();
            lab.ip(&["-n", &rt, "link", "set", leg, "address", &zone.router_mac()])?;
            lab.ip(&[
                "-n",
                &rt,
                "addr",
                "add",
                &format!("{}/24", zone.router_v4()),
                "dev",
                leg,
            ])?;
            lab.ip(&[
                "-n",
                &rt,
                "addr",
                "add",
                &format!("{}/64", zone.router_v6()),
                "dev",
                leg,
                "nodad",
            ])?;
            lab.ip(&["-n", &rt, "link", "set", leg, "up"])?;
        }
        for (i, (name, zone_name, addrs)) in spec.hosts.iter().enumerate() {
            let zone = lab.zone(zone_name).clone();
            let host = RoutedHost {
                name: name.clone(),
                zone: zone_name.clone(),
                netns: format!("{prefix}-h{i}"),
                addrs: addrs.clone(),
                mac: format!(
                    "02:70:63:{:02x}:{:02x}:{:02x}",
                    zone.index,
                    i >> 8,
                    i & 0xff
                ),
            };
            let ns = host.netns.clone();
            lab.hosts.push(host.clone());
            lab.add_netns(&ns)?;
            let port = format!("p{i}");
            lab.ip(&[
                "-n",
                &zone.netns,
                "link",
                "add",
                &port,
                "type",
                "veth",
                "peer",
                "name",
                "eth0",
                "netns",
                &ns,
            ])?;
            lab.ip(&[
                "-n",
                &zone.netns,
                "link",
                "set",
                &port,
                "master",
                "br0",
                "up",
            ])?;
            lab.ip(&["-n", &ns, "link", "set", "eth0", "address", &host.mac])?;
            for a in &host.addrs {
                match a {
                    IpAddr::V4(v4) => {
                        lab.ip(&["-n", &ns, "addr", "add", &format!("{v4}/24"), "dev", "eth0"])?
                    }
                    IpAddr::V6(v6) => lab.ip(&[
                        "-n",
                        &ns,
                        "addr",
                        "add",
                        &format!("{v6}/64"),
                        "dev",
                        "eth0",
                        "nodad",
                    ])?,
                }
            }
            lab.ip(&["-n", &ns, "link", "set", "eth0", "up"])?;
            if host.v4().is_some() {
                lab.ip(&[
                    "-n",
                    &ns,
                    "route",
                    "add",
                    "default",
                    "via",
                    &zone.router_v4().to_string(),
                ])?;
            }
            if host.v6().is_some() {
                lab.ip(&[
                    "-n",
                    &ns,
                    "-6",
                    "route",
                    "add",
                    "default",
                    "via",
                    &zone.router_v6().to_string(),
                ])?;
            }
        }
        if spec.static_neighbours {
            lab.static_neighbours()?;
        }
        lab.router_rules(&RouterRules::default())?;
        lab.wait_ready()?;
        Ok(lab)
    }

    /// Creates namespace `name` (recorded for teardown by the caller), with
    /// loopback up, no IPv6 duplicate address detection, and no ICMP rate
    /// limit, so a burst of probes gets every ICMP error it provokes.
    fn add_netns(&self, name: &str) -> anyhow::Result<()> {
        self.ip(&["netns", "add", name])?;
        self.ip(&["-n", name, "link", "set", "lo", "up"])?;
        self.ns_sysctls(
            name,
            &[
                ("net.ipv6.conf.all.accept_dad", "0"),
                ("net.ipv6.conf.default.accept_dad", "0"),
                ("net.ipv6.conf.all.accept_ra", "0"),
                ("net.ipv6.conf.default.accept_ra", "0"),
                ("net.ipv4.icmp_ratelimit", "0"),
                ("net.ipv6.icmp.ratelimit", "0"),
            ],
        )
    }

    fn ns_sysctls(&self, netns: &str, kv: &[(&str, &str)]) -> anyhow::Result<()> {
        let mut c = Command::new(&self.ip);
        c.args(["netns", "exec", netns, "sysctl", "-q", "-w"]);
        for (k, v) in kv {
            c.arg(format!("{k}={v}"));
        }
        let out = c.stdin(Stdio::null()).output().context("run sysctl")?;
        ensure!(
            out.status.success(),
            "sysctl in {netns}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
        Ok(())
    }

    /// Permanent neighbour entries: every host knows its zone's router and
    /// the other hosts of its zone, and the router knows every host.
    fn static_neighbours(&self) -> anyhow::Result<()> {
        for h in &self.hosts {
            let zone = self.zone(&h.zone);
            let router_mac = zone.router_mac();
            let mut entries: Vec<(IpAddr, &str)> = Vec::new();
            if h.v4().is_some() {
                entries.push((zone.router_v4().into(), &router_mac));
            }
            if h.v6().is_some() {
                entries.push((zone.router_v6().into(), &router_mac));
            }
            for peer in self
                .hosts
                .iter()
                .filter(|p| p.zone == h.zone && p.name != h.name)
            {
                entries.extend(peer.addrs.iter().map(|a| (*a, peer.mac.as_str())));
            }
            for (addr, mac) in entries {
                self.neigh(&h.netns, addr, mac, "eth0")?;
            }
            for a in &h.addrs {
                self.neigh(&self.router, *a, &h.mac, &zone.router_iface)?;
            }
        }
        Ok(())
    }

    fn neigh(&self, netns: &str, addr: IpAddr, mac: &str, dev: &str) -> anyhow::Result<()> {
        self.ip(&[
            "-n",
            netns,
            "neigh",
            "replace",
            &addr.to_string(),
            "lladdr",
            mac,
            "dev",
            dev,
            "nud",
            "permanent",
        ])
    }

    /// The host the test named `name`.
    pub fn host(&self, name: &str) -> &RoutedHost {
        self.hosts
            .iter()
            .find(|h| h.name == name)
            .unwrap_or_else(|| panic!("no routed lab host named {name}"))
    }

    /// Every host, in the order given.
    pub fn hosts(&self) -> &[RoutedHost] {
        &self.hosts
    }

    /// The zone the test named `name`.
    pub fn zone(&self, name: &str) -> &Zone {
        self.zones
            .iter()
            .find(|z| z.name == name)
            .unwrap_or_else(|| panic!("no routed lab zone named {name}"))
    }

    /// The router's namespace.
    pub fn router_netns(&self) -> &str {
        &self.router
    }

    /// Replaces the router's whole nftables ruleset.
    pub fn router_rules(&self, rules: &RouterRules) -> anyhow::Result<()> {
        self.nft(ROUTER, &rules.render())
            .with_context(|| format!("router ruleset:\n{}", rules.render()))
    }

    /// Runs `ip ARGS` inside the router namespace (routes, rules, links).
    pub fn router_ip(&self, args: &[&str]) -> anyhow::Result<()> {
        let mut all = vec!["-n", self.router.as_str()];
        all.extend_from_slice(args);
        self.ip(&all)
    }

    /// A path-MTU bottleneck for one service's replies: packets the router
    /// forwards from `from` (and, when given, TCP source port `sport`) are
    /// routed through policy table `table` whose routes to every zone carry
    /// `mtu lock <mtu>`, so larger packets with DF set are not forwarded and
    /// the router answers with ICMP frag-needed / packet-too-big (drop those
    /// in [`RouterRules::output`] to make a black hole).
    pub fn router_mtu_policy(
        &self,
        from: IpAddr,
        sport: Option<u16>,
        mtu: u32,
        table: u32,
    ) -> anyhow::Result<()> {
        let table = table.to_string();
        let mtu = mtu.to_string();
        let family = if from.is_ipv4() { "-4" } else { "-6" };
        for z in &self.zones {
            let net = match from {
                IpAddr::V4(_) => format!("{}/24", z.net_v4()),
                IpAddr::V6(_) => format!("{}/64", z.net_v6()),
            };
            self.router_ip(&[
                family,
                "route",
                "add",
                &net,
                "dev",
                &z.router_iface,
                "mtu",
                "lock",
                &mtu,
                "table",
                &table,
            ])?;
        }
        let from = from.to_string();
        let sport = sport.map(|p| p.to_string());
        let mut rule = vec![family, "rule", "add", "from", from.as_str()];
        if let Some(p) = &sport {
            rule.extend(["ipproto", "tcp", "sport", p.as_str()]);
        }
        rule.extend(["table", table.as_str(), "priority", "100"]);
        self.router_ip(&rule)
    }

    fn ip(&self, args: &[&str]) -> anyhow::Result<()> {
        crate::netns::run_ip(&self.ip, args)
    }

    /// Waits until every host's `eth0` and every router leg report carrier.
    fn wait_ready(&self) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(10);
        let links = self.hosts.iter().map(|h| (h.netns.as_str(), "eth0")).chain(
            self.zones
                .iter()
                .map(|z| (self.router.as_str(), z.router_iface.as_str())),
        );
        for (netns, dev) in links {
            loop {
                let out = Command::new(&self.ip)
                    .args(["-n", netns, "-o", "link", "show", dev])
                    .stdin(Stdio::null())
                    .output()
                    .context("run ip")?;
                if String::from_utf8_lossy(&out.stdout).contains("state UP") {
                    break;
                }
                ensure!(
                    Instant::now() < deadline,
                    "{netns}: {dev} not up within 10 s"
                );
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        Ok(())
    }
}

fn validate(spec: &RoutedLabBuilder) -> anyhow::Result<()> {
    let mut names = BTreeSet::new();
    let mut indexes = BTreeSet::new();
    for (name, index) in &spec.zones {
        ensure!(
            names.insert(name.as_str()),
            "routed lab: zone {name} given twice"
        );
        ensure!(
            indexes.insert(*index),
            "routed lab: zone index {index} given twice"
        );
    }
    let mut hosts = BTreeSet::new();
    let mut addrs = BTreeSet::new();
    if let Some(r) = &spec.router_host {
        ensure!(
            r != ROUTER && spec.hosts.iter().all(|(name, ..)| name != r),
            "routed lab: the router's host name {r} is taken"
        );
    }
    for (name, zone, host_addrs) in &spec.hosts {
        ensure!(
            name != ROUTER,
            "routed lab: `{ROUTER}` names the router, not a host"
        );
        ensure!(
            hosts.insert(name.as_str()),
            "routed lab: host {name} given twice"
        );
        let Some((_, index)) = spec.zones.iter().find(|(z, _)| z == zone) else {
            bail!("routed lab host {name}: no zone {zone}");
        };
        ensure!(!host_addrs.is_empty(), "routed lab host {name}: no address");
        for a in host_addrs {
            ensure!(
                zone_index_of(*a) == Some(*index),
                "routed lab host {name}: {a} is outside zone {zone} (198.18.{index}.0/24, 2001:2:0:{index:x}::/64)"
            );
            let reserved = match a {
                IpAddr::V4(v4) => matches!(v4.octets()[3], 0 | 254 | 255),
                IpAddr::V6(v6) => {
                    v6.segments()[4..] == [0, 0, 0, 0] || v6.segments()[4..] == [0, 0, 0, 0x254]
                }
            };
            ensure!(
                !reserved,
                "routed lab host {name}: {a} is the zone's network, broadcast or router address"
            );
            ensure!(
                addrs.insert(*a),
                "routed lab host {name}: {a} is used twice"
            );
        }
    }
    Ok(())
}

impl LabNet for RoutedLab {
    fn netns(&self, host: &str) -> &str {
        if host == ROUTER || self.router_host.as_deref() == Some(host) {
            &self.router
        } else {
            &self.host(host).netns
        }
    }

    fn ip_tool(&self) -> &Path {
        &self.ip
    }

    fn children(&self) -> &Mutex<Vec<Child>> {
        &self.children
    }
}

impl Drop for RoutedLab {
    fn drop(&mut self) {
        crate::netns::kill_children(&self.children);
        // Deleting a namespace deletes the interfaces in it (and the peer
        // end of each veth pair); bridges and the router go last.
        for h in &self.hosts {
            crate::delete_netns(&self.ip, &h.netns);
        }
        crate::delete_netns(&self.ip, &self.router);
        for z in &self.zones {
            crate::delete_netns(&self.ip, &z.netns);
        }
    }
}
