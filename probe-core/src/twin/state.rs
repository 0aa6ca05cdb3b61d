//! A deployment's network state, as the twin needs it to rebuild the
//! deployment in network namespaces: per host its nftables ruleset, its
//! addresses per interface name, its routes, whether it forwards, and the
//! planned ports something already listens on.
//!
//! The state lives in a directory with one subdirectory per host, so that
//! it can be written by hand and kept in git beside the rulesets it
//! describes (`docs/whatif.md` is the format's reference):
//!
//! ```text
//! STATE/
//!   db/
//!     net.toml          interfaces, routes, forwarding, listening ports
//!     ruleset.nft       `nft list ruleset` text  (or ruleset.json: `nft -j list ruleset`)
//! ```
//!
//! Every problem is an error naming the file and, where the file's text
//! locates it, its line and column.

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use toml::Spanned;

/// Longest interface name Linux accepts (`IFNAMSIZ` less its NUL).
const IFNAMSIZ: usize = 15;

/// Why a state directory could not be read or written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StateError {
    /// A file or directory could not be read or written.
    #[error("{path}")]
    Io {
        /// The file or directory.
        path: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A value is wrong or a file does not parse; `at` is `file:line:col`
    /// (or the file alone when its text cannot place the problem).
    #[error("{at}: {message}")]
    Invalid {
        /// Where.
        at: String,
        /// What is wrong, in plain words.
        message: String,
    },
}

/// An address with its prefix length, as `ip addr` shows it
/// (`198.18.0.10/24`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Cidr {
    /// The address.
    pub addr: IpAddr,
    /// The prefix length.
    pub prefix: u8,
}

impl Cidr {
    /// The network this address sits in (the address with its host bits
    /// cleared), which the twin joins by one bridge.
    pub fn network(&self) -> Cidr {
        let addr = match self.addr {
            IpAddr::V4(a) => {
                let bits = u32::from(a);
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                IpAddr::V4((bits & mask).into())
            }
            IpAddr::V6(a) => {
                let bits = u128::from(a);
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                IpAddr::V6((bits & mask).into())
            }
        };
        Cidr {
            addr,
            prefix: self.prefix,
        }
    }

    /// Whether `ip` lies in this address's network.
    pub fn contains(&self, ip: IpAddr) -> bool {
        ip.is_ipv4() == self.addr.is_ipv4()
            && Cidr {
                addr: ip,
                prefix: self.prefix,
            }
            .network()
                == self.network()
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl std::str::FromStr for Cidr {
    type Err = String;
    fn from_str(s: &str) -> Result<Cidr, String> {
        let (a, p) = s
            .split_once('/')
            .ok_or_else(|| format!("`{s}` has no prefix length (write it as ADDRESS/PREFIX)"))?;
        let addr: IpAddr = a
            .parse()
            .map_err(|_| format!("`{a}` is not an IP address"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix: u8 = p
            .parse()
            .ok()
            .filter(|p| *p <= max)
            .ok_or_else(|| format!("`{p}` is not a prefix length of 0 to {max}"))?;
        Ok(Cidr { addr, prefix })
    }
}

/// One network interface of a host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Interface {
    /// Its name on the host (`eth0`, `ens192`); the twin gives it the same.
    pub name: String,
    /// Its addresses with their prefix lengths.
    pub addresses: Vec<Cidr>,
}

/// Where a route leads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteTo {
    /// `default` (of the family of `via`, or IPv4 without one).
    Default,
    /// A network.
    Net(Cidr),
}

/// One route of a host's main table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// Where it leads.
    pub to: RouteTo,
    /// The next hop, when it has one.
    pub via: Option<IpAddr>,
    /// The interface it leaves by, when given.
    pub dev: Option<String>,
}

impl Route {
    /// Whether this route is of the IPv6 family.
    pub fn is_ipv6(&self) -> bool {
        match (self.to, self.via) {
            (RouteTo::Net(n), _) => n.addr.is_ipv6(),
            (RouteTo::Default, Some(v)) => v.is_ipv6(),
            (RouteTo::Default, None) => false,
        }
    }
}

/// A port something listens on, as the state lists it (`8243`, `53/udp`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Listening {
    /// The port.
    pub port: u16,
    /// True for UDP, false for TCP.
    pub udp: bool,
}

impl fmt::Display for Listening {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.port, if self.udp { "udp" } else { "tcp" })
    }
}

/// How a ruleset file is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RulesetSyntax {
    /// `nft` text, loaded with `nft -f`.
    Nft,
    /// `nft -j list ruleset` JSON, loaded with `nft -j -f`.
    Json,
}

/// A host's nftables ruleset, as a file the twin hands to `nft`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ruleset {
    /// The file.
    pub path: PathBuf,
    /// Its syntax.
    pub syntax: RulesetSyntax,
}

/// What the twin knows of one host.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct HostState {
    /// Its interfaces (the loopback is implicit).
    pub interfaces: Vec<Interface>,
    /// Its routes beyond the ones its addresses imply.
    pub routes: Vec<Route>,
    /// Whether it forwards packets between its interfaces (a router).
    pub forwarding: bool,
    /// Planned ports something already listens on.
    pub listening: Vec<Listening>,
    /// Its ruleset; `None` is an empty ruleset (everything passes).
    pub ruleset: Option<Ruleset>,
}

impl HostState {
    /// Every address of the host.
    pub fn addresses(&self) -> impl Iterator<Item = Cidr> + '_ {
        self.interfaces
            .iter()
            .flat_map(|i| i.addresses.iter().copied())
    }
}

/// A deployment's state: its hosts by name.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct State {
    /// The state directory it was read from.
    pub dir: PathBuf,
    /// The hosts, by the name of their directory (the plan's host names).
    pub hosts: BTreeMap<String, HostState>,
}

/// `net.toml` as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNet {
    #[serde(default)]
    forwarding: bool,
    #[serde(default)]
    listening: Vec<Spanned<String>>,
    #[serde(default, rename = "interface")]
    interfaces: Vec<RawInterface>,
    #[serde(default, rename = "route")]
    routes: Vec<RawRoute>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawInterface {
    name: Spanned<String>,
    #[serde(default)]
    addresses: Vec<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRoute {
    to: Spanned<String>,
    via: Option<Spanned<String>>,
    dev: Option<Spanned<String>>,
}

/// The name of the file of a host's interfaces, routes and ports.
pub const NET_FILE: &str = "net.toml";
/// The name of a host's ruleset in `nft` text.
pub const RULESET_NFT: &str = "ruleset.nft";
/// The name of a host's ruleset as `nft -j` JSON.
pub const RULESET_JSON: &str = "ruleset.json";

fn io(path: &Path, source: std::io::Error) -> StateError {
    StateError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// `file:line:col` of byte `offset` in `text` (1-based).
pub(crate) fn locate(file: &Path, text: &str, offset: usize) -> String {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    format!("{}:{line}:{col}", file.display())
}

impl State {
    /// Reads a state directory: one subdirectory per host.
    pub fn load(dir: &Path) -> Result<State, StateError> {
        let mut hosts = BTreeMap::new();
        let entries = std::fs::read_dir(dir).map_err(|e| io(dir, e))?;
        for entry in entries {
            let entry = entry.map_err(|e| io(dir, e))?;
            let path = entry.path();
            if !path.is_dir() {
                continue;
            }
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') {
                continue;
            }
            hosts.insert(name, HostState::load(&path)?);
        }
        if hosts.is_empty() {
            return Err(StateError::Invalid {
                at: dir.display().to_string(),
                message: "no host directories (one directory per host, each with a net.toml)"
                    .into(),
            });
        }
        Ok(State {
            dir: dir.to_path_buf(),
            hosts,
        })
    }

    /// Writes the state as a directory `dir` (created if missing), one
    /// subdirectory per host; rulesets are copied from their files.
    pub fn write(&self, dir: &Path) -> Result<(), StateError> {
        for (name, host) in &self.hosts {
            let d = dir.join(name);
            std::fs::create_dir_all(&d).map_err(|e| io(&d, e))?;
            let net = d.join(NET_FILE);
            std::fs::write(&net, host.net_toml()).map_err(|e| io(&net, e))?;
            if let Some(r) = &host.ruleset {
                let file = d.join(match r.syntax {
                    RulesetSyntax::Nft => RULESET_NFT,
                    RulesetSyntax::Json => RULESET_JSON,
                });
                if r.path != file {
                    std::fs::copy(&r.path, &file).map_err(|e| io(&r.path, e))?;
                }
            }
        }
        Ok(())
    }

    /// The host holding `ip`, when one does.
    pub fn host_of(&self, ip: IpAddr) -> Option<&str> {
        self.hosts
            .iter()
            .find(|(_, h)| h.addresses().any(|a| a.addr == ip))
            .map(|(n, _)| n.as_str())
    }
}

impl HostState {
    /// Reads one host's directory.
    pub fn load(dir: &Path) -> Result<HostState, StateError> {
        let net = dir.join(NET_FILE);
        let text = std::fs::read_to_string(&net).map_err(|e| io(&net, e))?;
        let mut host = parse_net(&net, &text)?;
        let nft = dir.join(RULESET_NFT);
        let json = dir.join(RULESET_JSON);
        host.ruleset = match (nft.is_file(), json.is_file()) {
            (true, true) => {
                return Err(StateError::Invalid {
                    at: dir.display().to_string(),
                    message: format!("both {RULESET_NFT} and {RULESET_JSON}: keep one"),
                });
            }
            (true, false) => Some(Ruleset {
                path: nft,
                syntax: RulesetSyntax::Nft,
            }),
            (false, true) => {
                check_json(&json)?;
                Some(Ruleset {
                    path: json,
                    syntax: RulesetSyntax::Json,
                })
            }
            (false, false) => None,
        };
        Ok(host)
    }

    /// `net.toml` for this host, in the format [`HostState::load`] reads.
    pub fn net_toml(&self) -> String {
        use std::fmt::Write as _;
        let mut s = format!("forwarding = {}\n", self.forwarding);
        let listening: Vec<String> = self.listening.iter().map(|l| format!("\"{l}\"")).collect();
        let _ = writeln!(s, "listening = [{}]", listening.join(", "));
        for i in &self.interfaces {
            let addrs: Vec<String> = i.addresses.iter().map(|a| format!("\"{a}\"")).collect();
            let _ = write!(
                s,
                "\n[[interface]]\nname = \"{}\"\naddresses = [{}]\n",
                i.name,
                addrs.join(", ")
            );
        }
        for r in &self.routes {
            let to = match r.to {
                RouteTo::Default => "default".to_string(),
                RouteTo::Net(n) => n.to_string(),
            };
            let _ = write!(s, "\n[[route]]\nto = \"{to}\"\n");
            if let Some(v) = r.via {
                let _ = writeln!(s, "via = \"{v}\"");
            }
            if let Some(d) = &r.dev {
                let _ = writeln!(s, "dev = \"{d}\"");
            }
        }
        s
    }
}

/// Checks that a JSON ruleset is JSON with an `nftables` array, so a
/// truncated file is refused with its position instead of half-loaded.
fn check_json(path: &Path) -> Result<(), StateError> {
    let text = std::fs::read_to_string(path).map_err(|e| io(path, e))?;
    let value: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| StateError::Invalid {
            at: format!("{}:{}:{}", path.display(), e.line(), e.column()),
            message: format!("not JSON: {e}"),
        })?;
    if value
        .get("nftables")
        .is_some_and(serde_json::Value::is_array)
    {
        Ok(())
    } else {
        Err(StateError::Invalid {
            at: path.display().to_string(),
            message: "not an nftables JSON ruleset (no \"nftables\" array; write it with `nft -j list ruleset`)".into(),
        })
    }
}

/// Parses and validates a host's `net.toml`.
pub fn parse_net(file: &Path, text: &str) -> Result<HostState, StateError> {
    let raw: RawNet = toml::from_str(text).map_err(|e| StateError::Invalid {
        at: e.span().map_or_else(
            || file.display().to_string(),
            |s| locate(file, text, s.start),
        ),
        message: e.message().to_string(),
    })?;
    let bad = |span: std::ops::Range<usize>, message: String| StateError::Invalid {
        at: locate(file, text, span.start),
        message,
    };
    let mut interfaces: Vec<Interface> = Vec::new();
    for i in raw.interfaces {
        let name = i.name.get_ref();
        if name.is_empty()
            || name.len() > IFNAMSIZ
            || name == "lo"
            || name
                .chars()
                .any(|c| c == '/' || c == ':' || c.is_whitespace() || c.is_control())
        {
            return Err(bad(
                i.name.span(),
                format!(
                    "`{name}` is not an interface name the twin can give (1 to {IFNAMSIZ} characters, no `/`, `:` or spaces, not `lo`)"
                ),
            ));
        }
        if interfaces.iter().any(|o| &o.name == name) {
            return Err(bad(
                i.name.span(),
                format!("interface `{name}` listed twice"),
            ));
        }
        let mut addresses = Vec::new();
        for a in &i.addresses {
            let cidr: Cidr = a.get_ref().parse().map_err(|m| bad(a.span(), m))?;
            addresses.push(cidr);
        }
        interfaces.push(Interface {
            name: name.clone(),
            addresses,
        });
    }
    let mut routes = Vec::new();
    for r in raw.routes {
        let to = match r.to.get_ref().as_str() {
            "default" => RouteTo::Default,
            s => RouteTo::Net(s.parse().map_err(|m| bad(r.to.span(), m))?),
        };
        let via =
            match &r.via {
                None => None,
                Some(v) => Some(v.get_ref().parse::<IpAddr>().map_err(|_| {
                    bad(v.span(), format!("`{}` is not an IP address", v.get_ref()))
                })?),
            };
        if let Some(d) = &r.dev
            && !interfaces.iter().any(|i| &i.name == d.get_ref())
        {
            return Err(bad(
                d.span(),
                format!("no interface `{}` in this file", d.get_ref()),
            ));
        }
        if let (RouteTo::Net(n), Some(v)) = (to, via)
            && n.addr.is_ipv4() != v.is_ipv4()
        {
            return Err(bad(
                r.to.span(),
                format!("{n} and its next hop {v} are of different families"),
            ));
        }
        if via.is_none() && r.dev.is_none() {
            return Err(bad(
                r.to.span(),
                "a route needs `via` (a next hop), `dev` (an interface) or both".into(),
            ));
        }
        routes.push(Route {
            to,
            via,
            dev: r.dev.map(Spanned::into_inner),
        });
    }
    let mut listening = Vec::new();
    for l in &raw.listening {
        listening.push(parse_listening(l.get_ref()).map_err(|m| bad(l.span(), m))?);
    }
    Ok(HostState {
        interfaces,
        routes,
        forwarding: raw.forwarding,
        listening,
        ruleset: None,
    })
}

/// `8243`, `8243/tcp` or `53/udp`.
fn parse_listening(s: &str) -> Result<Listening, String> {
    let (port, proto) = s.split_once('/').unwrap_or((s, "tcp"));
    let udp = match proto {
        "tcp" => false,
        "udp" => true,
        other => return Err(format!("`{other}` is not tcp or udp")),
    };
    let port = port
        .parse::<u16>()
        .ok()
        .filter(|p| *p > 0)
        .ok_or_else(|| format!("`{port}` is not a port (1 to 65535)"))?;
    Ok(Listening { port, udp })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<HostState, StateError> {
        parse_net(Path::new("db/net.toml"), text)
    }

    #[test]
    fn a_hand_written_net_file_reads_back_as_written() {
        let text = r#"
forwarding = true
listening = ["3306", "53/udp"]

[[interface]]
name = "ens192"
addresses = ["198.18.1.10/24", "2001:2:0:1::10/64"]

[[route]]
to = "default"
via = "198.18.1.254"

[[route]]
to = "198.19.0.0/16"
dev = "ens192"
"#;
        let host = parse(text).unwrap();
        assert!(host.forwarding);
        assert_eq!(host.interfaces[0].name, "ens192");
        assert_eq!(
            host.interfaces[0].addresses[1].to_string(),
            "2001:2:0:1::10/64"
        );
        assert_eq!(
            host.listening[1],
            Listening {
                port: 53,
                udp: true
            }
        );
        assert_eq!(host.routes[0].via, Some("198.18.1.254".parse().unwrap()));
        assert_eq!(parse(&host.net_toml()).unwrap(), host);
    }

    #[test]
    fn a_bad_address_is_named_at_its_line_and_column() {
        let text = "[[interface]]\nname = \"eth0\"\naddresses = [\"198.18.1.300/24\"]\n";
        let e = parse(text).unwrap_err().to_string();
        assert_eq!(e, "db/net.toml:3:14: `198.18.1.300` is not an IP address");
    }

    #[test]
    fn a_route_through_an_unknown_interface_is_refused_at_its_line() {
        let text = "[[interface]]\nname = \"eth0\"\n[[route]]\nto = \"default\"\ndev = \"eth1\"\n";
        let e = parse(text).unwrap_err().to_string();
        assert_eq!(e, "db/net.toml:5:7: no interface `eth1` in this file");
    }

    #[test]
    fn an_unknown_key_is_a_located_toml_error() {
        let e = parse("forwardin = true\n").unwrap_err().to_string();
        assert!(
            e.starts_with("db/net.toml:1:1: unknown field `forwardin`"),
            "{e}"
        );
    }

    #[test]
    fn networks_and_containment() {
        let c: Cidr = "198.18.1.10/24".parse().unwrap();
        assert_eq!(c.network().to_string(), "198.18.1.0/24");
        assert!(c.contains("198.18.1.254".parse().unwrap()));
        assert!(!c.contains("198.18.2.1".parse().unwrap()));
        let host: Cidr = "198.18.1.10/32".parse().unwrap();
        assert!(!host.contains("198.18.1.1".parse().unwrap()));
        let v6: Cidr = "2001:2:0:1::10/64".parse().unwrap();
        assert_eq!(v6.network().to_string(), "2001:2:0:1::/64");
        assert!(!v6.contains("198.18.1.10".parse().unwrap()));
    }
}
