//! The firewall commands that would fix a report's violations, as a shell
//! script per host: the last step from "what is wrong" to "what to change",
//! for `nft`, `iptables`/`ip6tables` and `firewalld`.
//!
//! For each violation the rule goes on the path's target host, restricted to
//! the path's source address and port:
//! - a must-be-open path gets an accept, inserted at the head of the chain
//!   (or, for firewalld, a rich rule of priority -32767) so that it precedes
//!   the drops and rejects that stopped it;
//! - a must-be-blocked path gets a drop, also inserted at the head (priority
//!   -32768) so that it precedes any accept that let it through.
//!
//! The two never overlap (a path is open or blocked, never both), so their
//! relative order does not matter.
//!
//! Which source address: the one the target's firewall sees. When the
//! target's canary saw the connection (`seen_source`, present for paths
//! observed open) that is exactly it, after any address translation on the
//! way, so it wins over the source's planned address; the script says so
//! when they differ. Otherwise (a must-be-open path that never arrived) the
//! planned address (`hosts[].address` of the source) is the best available:
//! if a NAT rewrites it before the target, the rule has to name the
//! translated address instead.
//!
//! Some violations have no fix at the target, and the script says why in
//! `#` comments instead of guessing: a connection refused by the source's
//! own egress policy (`unreachable` with the path's `local_denial` errno,
//! `EPERM`/`EACCES`; reported under the source host), a connection answered by another host (`wrong-host`: a NAT
//! or redirect, not a filter), a failed TLS handshake over a TCP path that
//! works, a live service that refused (the service is down), and paths that
//! were not measured at all (`error`).
//!
//! An output-chain *drop* on the source is not among them: Linux ignores the
//! error of a SYN its own netfilter dropped and retransmits until the
//! deadline, so the prober sees a `timeout` like any other drop. For
//! timeouts the script suggests the accept at the target and says where
//! else the drop may be.
//!
//! Every command token is either fixed text, a number, an address printed
//! from its parsed form, or a validated name, and is still quoted for `sh`;
//! names from the report only ever appear inside comments, with control
//! characters removed so that a line break cannot start a command.

use std::fmt;
use std::io::{self, Write};
use std::net::IpAddr;
use std::str::FromStr;

use super::blame::{Blame, BlameRule, Where};
use super::text::path_label;
use super::{PathReport, Report, Verdict};
use crate::plan::Expect;
use crate::port::Protocol;
use crate::probe::Observed;
use crate::probe::classify::{errno_name, is_local_denial};

/// Which firewall the commands are for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FirewallFormat {
    /// `firewall-cmd --permanent --add-rich-rule=...`, then `--reload`.
    Firewalld,
    /// `nft insert rule ...`.
    Nft,
    /// `iptables -I ...` and `ip6tables -I ...`.
    Iptables,
}

impl FirewallFormat {
    /// Every format.
    pub const ALL: [FirewallFormat; 3] = [
        FirewallFormat::Firewalld,
        FirewallFormat::Nft,
        FirewallFormat::Iptables,
    ];

    /// The name used on the command line.
    pub const fn as_str(self) -> &'static str {
        match self {
            FirewallFormat::Firewalld => "firewalld",
            FirewallFormat::Nft => "nft",
            FirewallFormat::Iptables => "iptables",
        }
    }
}

impl fmt::Display for FirewallFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for FirewallFormat {
    type Err = SuggestError;

    fn from_str(s: &str) -> Result<FirewallFormat, SuggestError> {
        FirewallFormat::ALL
            .into_iter()
            .find(|f| f.as_str() == s)
            .ok_or_else(|| SuggestError::UnknownFormat {
                name: s.to_string(),
            })
    }
}

/// What to suggest, and for which firewall.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SuggestOptions {
    /// The firewall.
    pub format: FirewallFormat,
    /// Only the commands for this host; all hosts, each under a `# host`
    /// header, when `None`.
    pub host: Option<String>,
    /// nft only: `"FAMILY NAME"` of the table (`ip`, `ip6` or `inet`);
    /// `inet filter` when `None`.
    pub table: Option<String>,
    /// nft and iptables: the chain; `input` (nft) or `INPUT` (iptables)
    /// when `None`.
    pub chain: Option<String>,
    /// firewalld only: the zone; firewalld's default zone when `None`.
    pub zone: Option<String>,
    /// A plan host that routes between the zones (nft and iptables): for a
    /// path blamed on the network, a forward-chain accept on it.
    pub router: Option<String>,
}

impl SuggestOptions {
    /// Every host, the format's default table, chain and zone.
    pub fn new(format: FirewallFormat) -> SuggestOptions {
        SuggestOptions {
            format,
            host: None,
            table: None,
            chain: None,
            zone: None,
            router: None,
        }
    }
}

/// Why no script could be written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SuggestError {
    /// A format name that is not `firewalld`, `nft` or `iptables`.
    #[error("unknown firewall format {name:?}: expected firewalld, nft or iptables")]
    UnknownFormat {
        /// The name given.
        name: String,
    },
    /// `--router` names no host of the report.
    #[error("router {host:?} is not a host of the report (its hosts: {known})")]
    UnknownRouter {
        /// The name given.
        host: String,
        /// The report's hosts, comma-separated.
        known: String,
    },
    /// `--host` names no host of the report.
    #[error("host {host:?} is not in the report (its hosts: {known})")]
    UnknownHost {
        /// The name given.
        host: String,
        /// The report's hosts, comma-separated.
        known: String,
    },
    /// `--table` is not `FAMILY NAME` with an IP family and an nft name.
    #[error(
        "table {text:?}: expected \"FAMILY NAME\" with FAMILY ip, ip6 or inet and NAME an nft identifier"
    )]
    BadTable {
        /// The text given.
        text: String,
    },
    /// A chain name the firewall would not accept (or that could not be
    /// passed safely to a shell).
    #[error("chain {name:?} is not a valid {format} chain name")]
    BadChain {
        /// The name given.
        name: String,
        /// The firewall.
        format: FirewallFormat,
    },
    /// A firewalld zone name with characters firewalld does not allow.
    #[error("zone {name:?} is not a valid firewalld zone name")]
    BadZone {
        /// The name given.
        name: String,
    },
    /// An option that means nothing for the chosen firewall.
    #[error("{option} does not apply to --format {format}")]
    NotForFormat {
        /// The option, e.g. `--zone`.
        option: &'static str,
        /// The firewall.
        format: FirewallFormat,
    },
}

/// An nft table's address family: the ones that filter IP traffic on the
/// input hook.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum NftFamily {
    Ip,
    Ip6,
    Inet,
}

impl NftFamily {
    fn as_str(self) -> &'static str {
        match self {
            NftFamily::Ip => "ip",
            NftFamily::Ip6 => "ip6",
            NftFamily::Inet => "inet",
        }
    }

    fn carries(self, ip: IpAddr) -> bool {
        matches!(
            (self, ip),
            (NftFamily::Inet, _) | (NftFamily::Ip, IpAddr::V4(_)) | (NftFamily::Ip6, IpAddr::V6(_))
        )
    }
}

/// The firewall with its resolved table, chain or zone.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Backend {
    Nft {
        family: NftFamily,
        table: String,
        chain: String,
    },
    Iptables {
        chain: String,
    },
    Firewalld {
        zone: Option<String>,
    },
}

/// nft identifiers: a letter, then letters, digits, `_`, `.`, `-` or `/`.
fn nft_identifier(s: &str) -> bool {
    let mut b = s.bytes();
    s.len() <= 64
        && b.next().is_some_and(|c| c.is_ascii_alphabetic())
        && b.all(|c| c.is_ascii_alphanumeric() || b"_.-/".contains(&c))
}

/// iptables chains: at most 28 characters, no blanks, not starting like an
/// option or a negation.
fn iptables_chain(s: &str) -> bool {
    let mut b = s.bytes();
    s.len() <= 28
        && b.next()
            .is_some_and(|c| c.is_ascii_alphanumeric() || c == b'_')
        && b.all(|c| c.is_ascii_alphanumeric() || b"_.-".contains(&c))
}

/// firewalld zones: at most 17 characters of letters, digits, `_`, `-`.
fn firewalld_zone(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 17
        && s.bytes()
            .all(|c| c.is_ascii_alphanumeric() || b"_-".contains(&c))
}

impl Backend {
    fn new(o: &SuggestOptions) -> Result<Backend, SuggestError> {
        let not = |option| SuggestError::NotForFormat {
            option,
            format: o.format,
        };
        match o.format {
            FirewallFormat::Nft => {
                if o.zone.is_some() {
                    return Err(not("--zone"));
                }
                let text = o.table.as_deref().unwrap_or("inet filter");
                let bad = || SuggestError::BadTable {
                    text: text.to_string(),
                };
                let mut words = text.split_whitespace();
                let (Some(family), Some(table), None) = (words.next(), words.next(), words.next())
                else {
                    return Err(bad());
                };
                let family = match family {
                    "ip" => NftFamily::Ip,
                    "ip6" => NftFamily::Ip6,
                    "inet" => NftFamily::Inet,
                    _ => return Err(bad()),
                };
                if !nft_identifier(table) {
                    return Err(bad());
                }
                let chain = o.chain.clone().unwrap_or_else(|| "input".into());
                if !nft_identifier(&chain) {
                    return Err(SuggestError::BadChain {
                        name: chain,
                        format: o.format,
                    });
                }
                Ok(Backend::Nft {
                    family,
                    table: table.to_string(),
                    chain,
                })
            }
            FirewallFormat::Iptables => {
                if o.zone.is_some() {
                    return Err(not("--zone"));
                }
                if o.table.is_some() {
                    return Err(not("--table"));
                }
                let chain = o.chain.clone().unwrap_or_else(|| "INPUT".into());
                if !iptables_chain(&chain) {
                    return Err(SuggestError::BadChain {
                        name: chain,
                        format: o.format,
                    });
                }
                Ok(Backend::Iptables { chain })
            }
            FirewallFormat::Firewalld => {
                if o.router.is_some() {
                    return Err(not("--router"));
                }
                if o.table.is_some() {
                    return Err(not("--table"));
                }
                if o.chain.is_some() {
                    return Err(not("--chain"));
                }
                if let Some(z) = o.zone.as_ref().filter(|z| !firewalld_zone(z)) {
                    return Err(SuggestError::BadZone { name: z.clone() });
                }
                Ok(Backend::Firewalld {
                    zone: o.zone.clone(),
                })
            }
        }
    }

    fn describe(&self) -> String {
        match self {
            Backend::Nft {
                family,
                table,
                chain,
            } => format!(
                "Each rule is inserted at the head of chain {chain} of table {} {table}, so accepts precede the chain's drops and rejects, and drops precede its accepts; a port's default deny is its drop, then accepts for the port's must-be-open sources inserted ahead of it",
                family.as_str()
            ),
            Backend::Iptables { chain } => format!(
                "Each rule is inserted at the head of chain {chain} (iptables for IPv4 sources, ip6tables for IPv6), so accepts precede the chain's drops and rejects, and drops precede its accepts; a port's default deny is its drop (both families), then accepts for the port's must-be-open sources inserted ahead of it"
            ),
            Backend::Firewalld { zone } => format!(
                "Rich rules in the {} zone, accepts at priority -32768 and a port's default-deny drop at -32767, both ahead of the zone's other rules and its target",
                zone.as_deref().unwrap_or("default")
            ),
        }
    }

    /// The commands that accept (`accept`) or drop `l4` (`tcp` or `udp`)
    /// to `port` from `source`, or from every source when it is `None` (for
    /// iptables, one command per address family then).
    fn commands(
        &self,
        accept: bool,
        source: Option<IpAddr>,
        l4: &str,
        port: u16,
        note: &str,
    ) -> Vec<String> {
        let v6 = source.is_some_and(|s| s.is_ipv6());
        let port_text = port.to_string();
        match self {
            Backend::Nft {
                family,
                table,
                chain,
            } => {
                let comment = format!("\"{}\"", comment_token(note, 128));
                let mut words = vec!["nft", "insert", "rule", family.as_str(), table, chain];
                let addr = source.map(|s| s.to_string());
                if let Some(a) = &addr {
                    words.extend([if v6 { "ip6" } else { "ip" }, "saddr", a]);
                }
                words.extend([
                    l4,
                    "dport",
                    &port_text,
                    "counter",
                    if accept { "accept" } else { "drop" },
                    "comment",
                    &comment,
                ]);
                vec![
                    words
                        .into_iter()
                        .map(sh_quote)
                        .collect::<Vec<_>>()
                        .join(" "),
                ]
            }
            Backend::Iptables { chain } => {
                let tools: &[&str] = match source {
                    Some(_) if v6 => &["ip6tables"],
                    Some(_) => &["iptables"],
                    None => &["iptables", "ip6tables"],
                };
                let comment = comment_token(note, 255);
                let addr = source.map(|s| s.to_string());
                tools
                    .iter()
                    .map(|tool| {
                        let mut words = vec![*tool, "-w", "-I", chain];
                        if let Some(a) = &addr {
                            words.extend(["-s", a]);
                        }
                        words.extend([
                            "-p",
                            l4,
                            "--dport",
                            &port_text,
                            "-m",
                            "comment",
                            "--comment",
                            &comment,
                            "-j",
                            if accept { "ACCEPT" } else { "DROP" },
                        ]);
                        words
                            .into_iter()
                            .map(sh_quote)
                            .collect::<Vec<_>>()
                            .join(" ")
                    })
                    .collect()
            }
            Backend::Firewalld { zone } => {
                let from = match source {
                    Some(a) => format!(
                        " family=\"{}\" source address=\"{a}\"",
                        if v6 { "ipv6" } else { "ipv4" }
                    ),
                    None => String::new(),
                };
                let rule = format!(
                    "rule priority=\"{}\"{from} port port=\"{port}\" protocol=\"{l4}\" {}",
                    if accept { -32768 } else { -32767 },
                    if accept { "accept" } else { "drop" },
                );
                let mut words = vec!["firewall-cmd".to_string(), "--permanent".to_string()];
                if let Some(z) = zone {
                    words.push(format!("--zone={z}"));
                }
                words.push(format!("--add-rich-rule={rule}"));
                vec![
                    words
                        .iter()
                        .map(|w| sh_quote(w))
                        .collect::<Vec<_>>()
                        .join(" "),
                ]
            }
        }
    }
}

impl Backend {
    /// Accepts `l4` to `dest:port` (from `source`, when given) in `hook`'s
    /// chain (`output` or `forward`), or in the traced rule's table and
    /// chain `at` (nft).
    #[allow(clippy::too_many_arguments)]
    fn accept_in(
        &self,
        hook: &str,
        at: Option<&(String, String)>,
        source: Option<IpAddr>,
        dest: Option<IpAddr>,
        l4: &str,
        port: u16,
        note: &str,
    ) -> Vec<String> {
        let v6 = dest.or(source).is_some_and(|a| a.is_ipv6());
        let ipf = if v6 { "ip6" } else { "ip" };
        let port = port.to_string();
        let (src, dst) = (source.map(|a| a.to_string()), dest.map(|a| a.to_string()));
        match self {
            Backend::Nft { family, table, .. } => {
                let (table, chain) = match at {
                    Some((t, c)) => (t.clone(), c.clone()),
                    None => (format!("{} {table}", family.as_str()), hook.to_string()),
                };
                let mut words: Vec<String> = ["nft", "insert", "rule"].map(String::from).to_vec();
                words.extend(table.split_whitespace().map(String::from));
                words.push(chain);
                if let Some(a) = &src {
                    words.extend([ipf.to_string(), "saddr".into(), a.clone()]);
                }
                if let Some(a) = dst {
                    words.extend([ipf.to_string(), "daddr".into(), a]);
                }
                words
                    .extend([l4, "dport", &port, "counter", "accept", "comment"].map(String::from));
                words.push(format!("\"{}\"", comment_token(note, 128)));
                vec![
                    words
                        .iter()
                        .map(|w| sh_quote(w))
                        .collect::<Vec<_>>()
                        .join(" "),
                ]
            }
            Backend::Iptables { .. } => {
                let mut words: Vec<String> = vec![
                    if v6 { "ip6tables" } else { "iptables" }.into(),
                    "-w".into(),
                    "-I".into(),
                    hook.to_ascii_uppercase(),
                ];
                if let Some(a) = &src {
                    words.extend(["-s".into(), a.clone()]);
                }
                if let Some(a) = dst {
                    words.extend(["-d".into(), a]);
                }
                words.extend(
                    ["-p", l4, "--dport", &port, "-m", "comment", "--comment"].map(String::from),
                );
                words.push(comment_token(note, 255));
                words.extend(["-j".into(), "ACCEPT".into()]);
                vec![
                    words
                        .iter()
                        .map(|w| sh_quote(w))
                        .collect::<Vec<_>>()
                        .join(" "),
                ]
            }
            Backend::Firewalld { .. } => {
                // firewalld zones filter what arrives; a host's own output
                // is filtered by direct rules.
                let rule = format!(
                    "{} filter {} 0 -d {} -p {l4} --dport {port} -j ACCEPT",
                    if v6 { "ipv6" } else { "ipv4" },
                    hook.to_ascii_uppercase(),
                    dst.unwrap_or_default()
                );
                let mut words = vec!["firewall-cmd", "--permanent", "--direct", "--add-rule"]
                    .into_iter()
                    .map(String::from)
                    .collect::<Vec<_>>();
                words.extend(rule.split(' ').map(String::from));
                vec![
                    words
                        .iter()
                        .map(|w| sh_quote(w))
                        .collect::<Vec<_>>()
                        .join(" "),
                ]
            }
        }
    }
}

fn sh_quote(s: &str) -> String {
    if !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./:=@,+%".contains(&b))
    {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

/// Text for a rule's own comment (nft, iptables): printable ASCII without
/// quotes or backslashes, at most `max` bytes.
fn comment_token(s: &str, max: usize) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_graphic() && !matches!(c, '"' | '\'' | '\\' | '`' | '$') || c == ' ' {
                c
            } else {
                '_'
            }
        })
        .take(max - 2)
        .collect()
}

/// Text for a `#` line: no control characters, so that nothing in a report
/// can end the comment and start a command.
fn comment_line(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

/// What to do about one path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Accept TCP from `source` to `port` at the path's target.
    Accept {
        /// The source address the rule matches.
        source: IpAddr,
        /// The target port.
        port: u16,
        /// nft: the table and chain of the traced rule or policy that
        /// stopped the path (`FAMILY TABLE`, chain), when it is not the
        /// script's: an accept elsewhere would not override a drop there.
        at: Option<(String, String)>,
    },
    /// Accept TCP to `dest:port` in the source host's output chain: its
    /// own egress filter stopped the path.
    AcceptOut {
        /// The target address.
        dest: IpAddr,
        /// The target port.
        port: u16,
        /// nft: the traced rule's table and chain, as for `Accept`.
        at: Option<(String, String)>,
    },
    /// Accept forwarded TCP from `source` to `dest:port` on the router
    /// (`--router`): a device between the zones stopped the path.
    Forward {
        /// The source address.
        source: IpAddr,
        /// The target address.
        dest: IpAddr,
        /// The target port.
        port: u16,
    },
    /// Per-port default deny at the path's target, for a must-be-blocked
    /// path that was open: accept TCP to `port` from each of `allow` (the
    /// port's must-be-open sources), then drop it from everyone else.
    DefaultDeny {
        /// The target port.
        port: u16,
        /// The addresses that must still get through, each once, sorted,
        /// with the must-be-open source host each belongs to.
        allow: Vec<(IpAddr, String)>,
    },
    /// Fixed by the default deny another path's item already writes for
    /// the same target port.
    Covered {
        /// The label of the path whose item holds the rules.
        by: String,
    },
    /// No rule on this host can fix the path; why, and what would.
    Manual {
        /// The reason, in words.
        reason: String,
    },
}

/// One path's suggestion.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Item {
    /// `from -> to:port/protocol (service)`.
    pub path: String,
    /// What the report says about it: expectation, outcome, detail.
    pub finding: String,
    /// Caveats printed above the command.
    pub notes: Vec<String>,
    /// What to do.
    pub action: Action,
    /// The path's protocol: its rules match `udp` for UDP paths, `tcp`
    /// otherwise (TLS runs over TCP).
    pub protocol: Protocol,
}

/// The suggestions for one host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostSuggestions {
    /// The host's name.
    pub host: String,
    /// Its address, when the report lists the host.
    pub address: Option<String>,
    /// One item per path, in report order.
    pub items: Vec<Item>,
}

/// A report's suggestions, ready to be written as a script.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Suggestions {
    format: FirewallFormat,
    backend: Backend,
    plan: String,
    finished_at: String,
    only: Option<String>,
    /// Hosts with something to say, in the report's host order.
    pub hosts: Vec<HostSuggestions>,
}

/// Works out, for every violation (and unmeasured path) of `report`, the
/// rule that fixes it or why none can.
pub fn suggest(report: &Report, options: &SuggestOptions) -> Result<Suggestions, SuggestError> {
    let backend = Backend::new(options)?;
    if let Some(r) = &options.router
        && !report.hosts.iter().any(|h| &h.name == r)
    {
        return Err(SuggestError::UnknownRouter {
            host: r.clone(),
            known: report
                .hosts
                .iter()
                .map(|x| x.name.as_str())
                .collect::<Vec<_>>()
                .join(", "),
        });
    }
    if let Some(h) = &options.host {
        let known = report.hosts.iter().any(|x| &x.name == h)
            || report.paths.iter().any(|p| &p.from == h || &p.to == h);
        if !known {
            return Err(SuggestError::UnknownHost {
                host: h.clone(),
                known: report
                    .hosts
                    .iter()
                    .map(|x| x.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
            });
        }
    }
    let mut hosts: Vec<HostSuggestions> = Vec::new();
    // The first path whose item holds each (host, port)'s default deny.
    let mut denied: Vec<(String, u16, Protocol, String)> = Vec::new();
    for p in report.paths.iter().filter(|p| p.verdict != Verdict::Ok) {
        let (host, mut item) = judge(report, &backend, options.router.as_deref(), p);
        if let Action::DefaultDeny { port, .. } = item.action {
            let udp = |p: Protocol| p == Protocol::Udp;
            match denied
                .iter()
                .find(|(h, q, pr, _)| *h == host && *q == port && udp(*pr) == udp(item.protocol))
            {
                Some((_, _, _, by)) => {
                    item.notes.clear();
                    item.action = Action::Covered { by: by.clone() };
                }
                None => denied.push((host.clone(), port, item.protocol, item.path.clone())),
            }
        }
        if options.host.as_ref().is_some_and(|h| *h != host) {
            continue;
        }
        match hosts.iter_mut().find(|x| x.host == host) {
            Some(x) => x.items.push(item),
            None => hosts.push(HostSuggestions {
                address: report
                    .hosts
                    .iter()
                    .find(|x| x.name == host)
                    .map(|x| x.address.clone()),
                host,
                items: vec![item],
            }),
        }
    }
    let order = |name: &str| {
        report
            .hosts
            .iter()
            .position(|x| x.name == name)
            .unwrap_or(usize::MAX)
    };
    hosts.sort_by_key(|x| order(&x.host));
    Ok(Suggestions {
        format: options.format,
        backend,
        plan: report.plan.clone(),
        finished_at: report.finished_at.clone(),
        only: options.host.clone(),
        hosts,
    })
}

/// The host whose firewall a path concerns, and what to do there.
fn judge(
    report: &Report,
    backend: &Backend,
    router: Option<&str>,
    p: &PathReport,
) -> (String, Item) {
    let observed = p.observed.map_or("nothing (not measured)", |o| o.as_str());
    let mut item = Item {
        path: path_label(p),
        finding: format!(
            "{}: must be {}, observed {observed}: {}",
            p.verdict.as_str(),
            p.expect,
            p.detail
        ),
        notes: Vec::new(),
        action: Action::Manual {
            reason: String::new(),
        },
        protocol: p.protocol,
    };
    let target = p.to.clone();
    let manual = |mut item: Item, host: String, reason: String| {
        item.action = Action::Manual { reason };
        (host, item)
    };
    if p.verdict == Verdict::Error {
        let reason = if p.observed == Some(Observed::Refused) && p.target_saw.is_none() {
            format!(
                "the live service on {}:{} refused the connection, so it is down (no canary held the port); start it, a firewall rule would not help",
                p.to, p.port
            )
        } else {
            "the path was not measured, so there is nothing to fix yet; resolve the reason above and check again".to_string()
        };
        return manual(item, target, reason);
    }
    let mut target_rule = None;
    if let (Expect::Open, Some(b)) = (p.expect, p.blame.as_ref()) {
        match b.at {
            Where::Source => {
                let Ok(dest) = p.address.parse::<IpAddr>() else {
                    return manual(
                        item,
                        p.from.clone(),
                        format!("{}'s own output filter stops the path; allow TCP to {}:{} there", p.from, p.address, p.port),
                    );
                };
                item.notes.push(format!(
                    "blamed on {}: its own output filter stops the probe before it leaves ({})",
                    p.from, b.cause
                ));
                if let Some(rule) = &b.rule {
                    item.notes.push(overrides(rule));
                }
                item.action = Action::AcceptOut {
                    dest: dest.to_canonical(),
                    port: p.port,
                    at: b
                        .rule
                        .as_ref()
                        .and_then(rule_chain)
                        .filter(|_| matches!(backend, Backend::Nft { .. })),
                };
                return (p.from.clone(), item);
            }
            Where::Network | Where::ReturnPath => {
                let paragraph = network_paragraph(report, p, b);
                let router = router.filter(|r| *r != p.to && *r != p.from);
                let (Some(router), Ok(dest)) = (router, p.address.parse::<IpAddr>()) else {
                    return manual(item, target, paragraph);
                };
                let Ok((source, note)) = source_address(report, p) else {
                    return manual(item, target, paragraph);
                };
                item.notes.push(paragraph);
                item.notes.extend(note);
                item.action = Action::Forward {
                    source,
                    dest: dest.to_canonical(),
                    port: p.port,
                };
                return (router.to_string(), item);
            }
            Where::Unknown => item.notes.push(format!(
                "where the path breaks is unknown ({}): the evidence cannot tell {}'s firewall from a device on the way, so this accept at {} helps only if {}'s own firewall is what stops it",
                b.cause, p.to, p.to, p.to
            )),
            Where::Target => {
                if let Some(rule) = &b.rule {
                    item.notes.push(overrides(rule));
                    target_rule = rule_chain(rule);
                }
            }
        }
    }
    let local_denial = p
        .local_denial
        .filter(|&e| p.icmp.is_none() && is_local_denial(Some(e)))
        .map(errno_name);
    if let Some(sp) = p.server_port.filter(|sp| *sp != p.port) {
        // The client dials a port the server does not listen on: opening
        // the dialled port would not make anything answer there.
        return manual(
            item,
            target,
            format!(
                "{} dials {} but {} listens on {sp}: make the client and the server agree on the port (see `portcall plan lint`), a firewall rule would not help",
                p.from, p.port, p.to
            ),
        );
    }
    let accept = match (p.expect, p.observed) {
        (Expect::Open, Some(Observed::Unreachable)) if local_denial.is_some() => {
            let errno = local_denial.unwrap_or_default();
            return manual(
                item,
                p.from.clone(),
                format!(
                    "the connection never left {}: connect failed locally with {errno}, which is the source's own egress filter (an output-chain drop or reject, or a cgroup policy); allow TCP to {}:{} in {}'s output rules, no rule on {} can help",
                    p.from, p.address, p.port, p.from, p.to
                ),
            );
        }
        (Expect::Open, Some(Observed::Refused)) if p.target_saw.is_none() => {
            return manual(
                item,
                target,
                format!(
                    "the live service on {}:{} refused the connection, so it is down; start it, a firewall rule would not help",
                    p.to, p.port
                ),
            );
        }
        (Expect::Open, Some(Observed::Timeout)) if p.blame.is_some() => true,
        (Expect::Open, Some(Observed::Timeout)) => {
            // Linux swallows the EPERM of a SYN dropped by the source's own
            // output filter and keeps retransmitting, so such a drop also
            // looks like silence to the prober.
            item.notes.push(format!(
                "dropped without an answer, which {}'s input filter, a network firewall on the way and {}'s own output filter all look like; if this rule does not fix it, allow the path there",
                p.to, p.from
            ));
            true
        }
        (Expect::Open, Some(Observed::Refused | Observed::Unreachable)) => true,
        (Expect::Open, Some(Observed::TlsError)) => {
            return manual(
                item,
                target,
                format!(
                    "TCP reaches {}:{}, only the TLS handshake failed: fix the certificate or TLS settings, not the firewall",
                    p.to, p.port
                ),
            );
        }
        (_, Some(Observed::WrongHost)) => {
            return manual(
                item,
                target,
                format!(
                    "another host (or no agent) answered at {}:{}: an address translation, a redirect or a stale address sends the connection elsewhere, which no filter rule on {} changes; fix the NAT or the address",
                    p.address, p.port, p.to
                ),
            );
        }
        (Expect::Blocked, Some(Observed::Open | Observed::TlsError)) => false,
        _ => {
            return manual(
                item,
                target,
                "no firewall rule matches this outcome; investigate by hand".to_string(),
            );
        }
    };
    if p.port == 0 {
        return manual(item, target, "port 0 cannot be filtered".to_string());
    }
    if !accept {
        return match default_deny(report, backend, p, &mut item.notes) {
            Ok(action) => {
                item.action = action;
                (target, item)
            }
            Err(reason) => manual(item, target, reason),
        };
    }
    let source = match source_address(report, p) {
        Ok((ip, note)) => {
            item.notes.extend(note);
            ip
        }
        Err(reason) => return manual(item, target, reason),
    };
    let mismatch = match backend {
        Backend::Nft { family, table, .. } if !family.carries(source) => Some((family, table)),
        _ => None,
    };
    if let Some((family, table)) = mismatch {
        return manual(
            item,
            target,
            format!(
                "table {} {table} cannot match the {} source {source}; use an inet table (--table \"inet {table}\")",
                family.as_str(),
                if source.is_ipv6() { "IPv6" } else { "IPv4" }
            ),
        );
    }
    item.action = Action::Accept {
        source,
        port: p.port,
        at: target_rule.filter(|_| matches!(backend, Backend::Nft { .. })),
    };
    (target, item)
}

/// The traced rule's `(FAMILY TABLE, chain)`, when it names an nft table.
fn rule_chain(rule: &BlameRule) -> Option<(String, String)> {
    let mut words = rule.table.split_whitespace();
    let (Some(family), Some(table), None) = (words.next(), words.next(), words.next()) else {
        return None;
    };
    (matches!(family, "ip" | "ip6" | "inet")
        && nft_identifier(table)
        && nft_identifier(&rule.chain))
    .then(|| (format!("{family} {table}"), rule.chain.clone()))
}

/// What a traced rule is, for a note, and how to remove it instead.
fn overrides(rule: &BlameRule) -> String {
    let mut s = format!("overrides {}", rule.describe());
    if let (Some(h), None, Some((table, chain))) = (rule.handle, &rule.policy, rule_chain(rule)) {
        s.push_str(&format!(
            "; or remove that rule on {}: nft delete rule {table} {chain} handle {h}",
            rule.host
        ));
    }
    s
}

/// The paragraph for the network team about a path a device between the
/// hosts stops: hop, zones, addresses, protocol and port.
fn network_paragraph(report: &Report, p: &PathReport, blame: &Blame) -> String {
    let host = |name: &str| report.hosts.iter().find(|h| h.name == name);
    let zone = |name: &str| {
        host(name)
            .and_then(|h| h.zone.clone())
            .map_or(String::new(), |z| format!(", zone {z}"))
    };
    let from_addrs = host(&p.from).map_or_else(String::new, |h| h.plan_addresses().join(", "));
    let hop = match (&blame.hop, blame.hop_distance) {
        (Some(h), Some(d)) => format!("the device at {h} (hop {d} from {})", p.from),
        (Some(h), None) => format!("the device at {h}"),
        _ => "a device between the hosts".to_string(),
    };
    let what = match blame.at {
        Where::ReturnPath if blame.cause == super::blame::Cause::AnswerLost => format!(
            "{} received our datagram, but its answers never came back: the return direction is lost, at {}'s output filter, {}'s input filter or {hop} on the way back",
            p.to, p.to, p.from
        ),
        Where::ReturnPath => format!(
            "{} got the SYN but its answers never came back: {hop} loses the return direction",
            p.to
        ),
        _ => format!("{hop} stops it ({})", blame.cause),
    };
    format!(
        "blamed on the network: {what}; {}. For the network team: allow {} from {} ({from_addrs}{}) to {} ({}{}) port {}{}",
        if blame.cause == super::blame::Cause::AnswerLost {
            format!(
                "no accept for arriving traffic on {} can fix it; look at the filters of the answers' way first",
                p.to
            )
        } else {
            format!("no rule on {} or {} can fix it", p.to, p.from)
        },
        if p.protocol == Protocol::Udp {
            "UDP (both ways: the answers too)"
        } else {
            "TCP"
        },
        p.from,
        zone(&p.from),
        p.to,
        p.address,
        zone(&p.to),
        p.port,
        blame
            .hop
            .as_ref()
            .map_or(String::new(), |h| format!(" at {h}")),
    )
}

/// The default deny that closes a must-be-blocked port for everyone the plan
/// does not allow, not only for the host that probed: an accept for every
/// address of every must-be-open source of the port (its plan addresses and
/// every address the target saw it arrive from in this round, since a
/// dual-stack host may arrive from a family the plan does not list), then a
/// drop for the port. Explains itself in `notes`; an error when a
/// must-be-open source's address is unknown, since dropping the port would
/// then cut off a path the plan needs.
fn default_deny(
    report: &Report,
    backend: &Backend,
    p: &PathReport,
    notes: &mut Vec<String>,
) -> Result<Action, String> {
    let host = |name: &str| report.hosts.iter().find(|h| h.name == name);
    if let (Backend::Nft { family, table, .. }, Ok(to)) = (backend, p.address.parse::<IpAddr>())
        && !family.carries(to.to_canonical())
    {
        return Err(format!(
            "table {} {table} cannot filter the {} traffic to {to}; use an inet table (--table \"inet {table}\")",
            family.as_str(),
            if to.is_ipv6() { "IPv6" } else { "IPv4" }
        ));
    }
    // Which addresses the flow's zone selectors cover, so the reader sees
    // that the probe host was one of many.
    for zone in p.flow_from.iter().filter_map(|s| s.strip_prefix("zone:")) {
        let members: Vec<String> = report
            .hosts
            .iter()
            .filter(|h| h.zone.as_deref() == Some(zone))
            .map(|h| format!("{} ({})", h.name, h.plan_addresses().join(", ")))
            .collect();
        notes.push(format!(
            "the flow's source zone:{zone} covers zone {zone}'s hosts {}; the drop below blocks them and every other address the plan does not allow",
            if members.is_empty() {
                "(none in the report)".to_string()
            } else {
                members.join(", ")
            }
        ));
    }
    let mut open_from: Vec<&str> = Vec::new();
    for q in report
        .paths
        .iter()
        .filter(|q| q.to == p.to && q.port == p.port && q.expect == Expect::Open)
        // 53/udp's must-be-open sources say nothing of 53/tcp.
        .filter(|q| (q.protocol == Protocol::Udp) == (p.protocol == Protocol::Udp))
    {
        if !open_from.contains(&q.from.as_str()) {
            open_from.push(&q.from);
        }
    }
    let mut allow: Vec<(IpAddr, String)> = Vec::new();
    for name in &open_from {
        let Some(h) = host(name) else {
            return Err(format!(
                "{name} must reach {}:{} but is not in the report's host list, so its address is unknown and a default deny would cut it off; write the rules by hand",
                p.to, p.port
            ));
        };
        let mut mine: Vec<(IpAddr, &str)> = Vec::new();
        for a in h.plan_addresses() {
            let Ok(ip) = a.parse::<IpAddr>() else {
                return Err(format!(
                    "{name} must reach {}:{} but its address {a:?} is not an IP address, so a default deny would cut it off; resolve the name and write the rules by hand",
                    p.to, p.port
                ));
            };
            mine.push((ip.to_canonical(), "plan"));
        }
        let seen = report
            .paths
            .iter()
            .filter(|r| r.from == *name && r.to == p.to)
            .filter_map(|r| r.seen_source.as_deref()?.parse::<IpAddr>().ok());
        for ip in seen.map(|ip| ip.to_canonical()) {
            if !mine.iter().any(|(m, _)| *m == ip) {
                mine.push((ip, "seen by the target in this round, not in the plan"));
            }
        }
        let mut kept = Vec::new();
        for (ip, how) in mine {
            if let Backend::Nft { family, table, .. } = backend
                && !family.carries(ip)
            {
                notes.push(format!(
                    "{name}'s {ip} ({how}) is not matched by table {} {table}, whose drop does not touch that family either",
                    family.as_str()
                ));
                continue;
            }
            kept.push(format!("{ip} ({how})"));
            if !allow.iter().any(|(a, _)| *a == ip) {
                allow.push((ip, name.to_string()));
            }
        }
        notes.push(format!(
            "must stay open for {name}: {}",
            if kept.is_empty() {
                "no address this table can match".to_string()
            } else {
                kept.join(", ")
            }
        ));
    }
    if open_from.is_empty() {
        notes.push(format!(
            "no flow of the plan must reach {}:{}, so the port is dropped for every source",
            p.to, p.port
        ));
    }
    if let Backend::Nft { family, table, .. } = backend
        && *family != NftFamily::Inet
    {
        notes.push(format!(
            "table {} {table} filters {} only; drop the port in the other family's table too",
            family.as_str(),
            if *family == NftFamily::Ip {
                "IPv4"
            } else {
                "IPv6"
            }
        ));
    }
    allow.sort();
    Ok(Action::DefaultDeny {
        port: p.port,
        allow,
    })
}

/// The source address the target's firewall sees, and a note when it is
/// not the source's planned address.
fn source_address(report: &Report, p: &PathReport) -> Result<(IpAddr, Option<String>), String> {
    let host = report.hosts.iter().find(|h| h.name == p.from);
    // The source's planned address of the path's family (a dual-stack
    // source probes from the one of its target's family).
    let planned = match (host, p.family) {
        (Some(h), Some(family)) => h.address_of(family).or_else(|| {
            // No planned address of that family: the source's kernel chose
            // one the report does not know unless the target saw it.
            (h.addresses.len() < 2 && h.address.parse::<IpAddr>().is_err())
                .then_some(h.address.as_str())
        }),
        (Some(h), None) => Some(h.address.as_str()),
        (None, _) => None,
    };
    let planned_ip = planned
        .and_then(|a| a.parse::<IpAddr>().ok())
        .map(|ip| ip.to_canonical());
    if let Some(seen) = p
        .seen_source
        .as_deref()
        .and_then(|s| s.parse::<IpAddr>().ok())
        .map(|ip| ip.to_canonical())
    {
        let note = (planned_ip != Some(seen)).then(|| {
            format!(
                "{} saw the connection come from {seen}, not from {}'s planned address {}: an address translation on the way; the rule matches {seen}, what {}'s firewall sees",
                p.to,
                p.from,
                planned.unwrap_or("(none)"),
                p.to
            )
        });
        return Ok((seen, note));
    }
    match (planned, planned_ip) {
        (_, Some(ip)) => Ok((ip, None)),
        (Some(a), None) => Err(format!(
            "{}'s address {a:?} is not an IP address and {} saw no source, so a source-restricted rule cannot be written here; resolve the name and write the rule by hand",
            p.from, p.to
        )),
        (None, None) if host.is_some() => Err(format!(
            "the plan gives {} no {} address and {} saw no connection, so the source its kernel chose is unknown and a source-restricted rule cannot be written here; give {} its {} address in the plan and check again",
            p.from,
            p.family.map_or("such", |f| f.as_str()),
            p.to,
            p.from,
            p.family.map_or("", |f| f.as_str()),
        )),
        (None, None) => Err(format!(
            "{} is not in the report's host list, so its address is unknown",
            p.from
        )),
    }
}

impl Suggestions {
    /// Paths fixed by commands in the script (a port's default deny counts
    /// once, for the path that carries it).
    pub fn rules(&self) -> usize {
        self.items()
            .filter(|i| {
                matches!(
                    i.action,
                    Action::Accept { .. }
                        | Action::DefaultDeny { .. }
                        | Action::AcceptOut { .. }
                        | Action::Forward { .. }
                )
            })
            .count()
    }

    /// Paths the script explains instead of fixing.
    pub fn manual(&self) -> usize {
        self.items()
            .filter(|i| matches!(i.action, Action::Manual { .. }))
            .count()
    }

    fn items(&self) -> impl Iterator<Item = &Item> {
        self.hosts.iter().flat_map(|h| h.items.iter())
    }

    /// Writes the script: a header, then per host a `# host NAME` line and,
    /// per path, `#` lines naming the path and what was found, then the
    /// command (or `#` lines saying why there is none).
    pub fn write(&self, w: &mut impl Write) -> io::Result<()> {
        writeln!(
            w,
            "# portcall suggest --format {}: plan {}, round finished {}",
            self.format,
            comment_line(&self.plan),
            comment_line(&self.finished_at)
        )?;
        writeln!(w, "# {}.", self.backend.describe())?;
        writeln!(
            w,
            "# Review, then run each host's section on that host with sh."
        )?;
        if self.hosts.is_empty() {
            writeln!(w)?;
            match &self.only {
                Some(h) => writeln!(w, "# nothing to change on host {}", comment_line(h))?,
                None => writeln!(w, "# nothing to change: every path meets its expectation")?,
            }
            return Ok(());
        }
        for h in &self.hosts {
            writeln!(w)?;
            match &h.address {
                Some(a) => writeln!(w, "# host {} ({})", comment_line(&h.host), comment_line(a))?,
                None => writeln!(w, "# host {}", comment_line(&h.host))?,
            }
            for i in &h.items {
                writeln!(w, "# {}", comment_line(&i.path))?;
                writeln!(w, "#   {}", comment_line(&i.finding))?;
                for n in &i.notes {
                    writeln!(w, "#   note: {}", comment_line(n))?;
                }
                let rule_note = format!("portcall: {}", i.path);
                let l4 = if i.protocol == Protocol::Udp {
                    "udp"
                } else {
                    "tcp"
                };
                let commands = match &i.action {
                    Action::Accept {
                        source,
                        port,
                        at: Some(at),
                    } if matches!(self.backend, Backend::Nft { .. }) => self.backend.accept_in(
                        "input",
                        Some(at),
                        Some(*source),
                        None,
                        l4,
                        *port,
                        &rule_note,
                    ),
                    Action::Accept { source, port, .. } => {
                        self.backend
                            .commands(true, Some(*source), l4, *port, &rule_note)
                    }
                    Action::AcceptOut { dest, port, at } => self.backend.accept_in(
                        "output",
                        at.as_ref(),
                        None,
                        Some(*dest),
                        l4,
                        *port,
                        &rule_note,
                    ),
                    Action::Forward { source, dest, port } => self.backend.accept_in(
                        "forward",
                        None,
                        Some(*source),
                        Some(*dest),
                        l4,
                        *port,
                        &rule_note,
                    ),
                    Action::DefaultDeny { port, allow } => {
                        // The drop first: each accept is then inserted
                        // ahead of it.
                        let deny = format!("portcall: default deny of port {port}, {}", i.path);
                        let mut c = self.backend.commands(false, None, l4, *port, &deny);
                        for (a, from) in allow {
                            let keep = format!("portcall: keep port {port} open for {from}");
                            c.extend(self.backend.commands(true, Some(*a), l4, *port, &keep));
                        }
                        c
                    }
                    Action::Covered { by } => {
                        writeln!(
                            w,
                            "#   covered by the default deny written for {}",
                            comment_line(by)
                        )?;
                        Vec::new()
                    }
                    Action::Manual { reason } => {
                        writeln!(w, "#   NO RULE HERE: {}", comment_line(reason))?;
                        Vec::new()
                    }
                };
                for c in commands {
                    writeln!(w, "{c}")?;
                }
            }
            let rules = h
                .items
                .iter()
                .any(|i| matches!(i.action, Action::Accept { .. } | Action::DefaultDeny { .. }));
            if rules && matches!(self.backend, Backend::Firewalld { .. }) {
                writeln!(w, "# load the permanent rules into the running firewall")?;
                writeln!(w, "firewall-cmd --reload")?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use expect_test::expect;

    use super::*;
    use crate::port::Protocol;
    use crate::report::{AgentState, HostReport, Summary};

    fn host(name: &str, address: &str) -> HostReport {
        HostReport {
            name: name.into(),
            address: address.into(),
            agent: AgentState::Up,
            conflicts: vec![],
            agent_detail: None,
            plan_mismatch: None,
            zone: None,
            addresses: vec![],
            rule_trace: None,
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn path(
        from: &str,
        to: &str,
        port: u16,
        expect: Expect,
        observed: Option<Observed>,
        verdict: Verdict,
        detail: &str,
        seen: Option<&str>,
    ) -> PathReport {
        PathReport {
            from: from.into(),
            to: to.into(),
            address: match to {
                "db" => "198.18.0.4".into(),
                "db6" => "2001:db8::4".into(),
                _ => "198.18.0.9".into(),
            },
            port,
            service: "svc".into(),
            protocol: Protocol::Tcp,
            expect,
            observed,
            verdict,
            detail: detail.into(),
            latency_ms: Some(1.0),
            attempts: 1,
            target_saw: seen.map(|_| true).or(match observed {
                Some(Observed::Timeout | Observed::Refused) => Some(false),
                _ => None,
            }),
            seen_source: seen.map(str::to_string),
            family: Some(if to == "db6" {
                crate::plan::Family::Ipv6
            } else {
                crate::plan::Family::Ipv4
            }),
            icmp: None,
            target_stage: None,
            blame: None,
            flows: vec![],
            flow_from: vec![],
            server_port: None,
            tls_ms: None,
            flow: String::new(),
            role: None,
            cert: None,
            service_banner: None,
            arrived: None,
            local_denial: None,
        }
    }

    /// One path of every kind the script treats differently.
    pub(crate) fn report() -> Report {
        use Expect::*;
        use Observed as O;
        use Verdict as V;
        let mut r = Report {
            notes: Vec::new(),
            schema: crate::report::SCHEMA.into(),
            plan: "suggest".into(),
            started_at: "2025-01-01T00:00:00.000Z".into(),
            finished_at: "2025-01-01T00:00:01.000Z".into(),
            summary: Summary::default(),
            hosts: vec![
                host("web", "198.18.0.2"),
                host("web6", "2001:db8::2"),
                host("nat", "198.18.0.3"),
                host("db", "198.18.0.4"),
                host("db6", "2001:db8::4"),
                host("named", "web.example"),
                host("ops", "198.18.0.7"),
            ],
            paths: vec![
                path(
                    "web",
                    "db",
                    3306,
                    Open,
                    Some(O::Open),
                    V::Ok,
                    "db saw our nonce from 198.18.0.2",
                    Some("198.18.0.2"),
                ),
                path(
                    "web",
                    "db",
                    5432,
                    Open,
                    Some(O::Timeout),
                    V::Violation,
                    "dropped: no answer within 500 ms (2 attempts) while the canary of db was listening",
                    None,
                ),
                path(
                    "web6",
                    "db6",
                    5432,
                    Open,
                    Some(O::Refused),
                    V::Violation,
                    "reset (TCP RST) while the canary of db6 was listening: a firewall rejects with reset",
                    None,
                ),
                path(
                    "web",
                    "db",
                    22,
                    Blocked,
                    Some(O::Open),
                    V::Violation,
                    "db saw our nonce from 198.18.0.2",
                    Some("198.18.0.2"),
                ),
                path(
                    "ops",
                    "db",
                    22,
                    Open,
                    Some(O::Open),
                    V::Ok,
                    "db saw our nonce from 2001:db8::7",
                    Some("2001:db8::7"),
                ),
                path(
                    "nat",
                    "db",
                    22,
                    Blocked,
                    Some(O::Open),
                    V::Violation,
                    "db saw our nonce from 198.18.0.1",
                    Some("198.18.0.1"),
                ),
                path(
                    "web6",
                    "db6",
                    22,
                    Blocked,
                    Some(O::Open),
                    V::Violation,
                    "db6 saw our nonce from 2001:db8::2",
                    Some("2001:db8::2"),
                ),
                path(
                    "web",
                    "db",
                    9443,
                    Open,
                    Some(O::Unreachable),
                    V::Violation,
                    "refused on web itself before anything was sent: its own packet filter or security policy while the canary of db was listening (EPERM (operation not permitted))",
                    None,
                ),
                path(
                    "web",
                    "db",
                    8080,
                    Open,
                    Some(O::Unreachable),
                    V::Violation,
                    "rejected with an ICMP error while the canary of db was listening (EHOSTUNREACH (no route to host))",
                    None,
                ),
                path(
                    "web",
                    "db",
                    8243,
                    Open,
                    Some(O::TlsError),
                    V::Violation,
                    "TLS with the canary of db failed (alert: handshake failure)",
                    None,
                ),
                path(
                    "web",
                    "db",
                    7611,
                    Open,
                    Some(O::WrongHost),
                    V::Violation,
                    "connected, but the canary of db did not record our nonce",
                    None,
                ),
                path(
                    "web",
                    "db",
                    6379,
                    Open,
                    Some(O::Refused),
                    V::Error,
                    "refused: service down on db:6379 (a real service holds the port)",
                    None,
                ),
                path(
                    "web",
                    "db6",
                    1,
                    Open,
                    None,
                    V::Error,
                    "target agent db6 unreachable, nothing to measure against: connect refused",
                    None,
                ),
                path(
                    "named",
                    "db",
                    5432,
                    Open,
                    Some(O::Timeout),
                    V::Violation,
                    "dropped",
                    None,
                ),
            ],
        };
        r.paths[11].target_saw = None;
        // web's own kernel refused to send to 9443.
        r.paths
            .iter_mut()
            .find(|p| p.port == 9443)
            .expect("the 9443 path")
            .local_denial = Some(libc::EPERM);
        // The internet zone's flow to the console port.
        r.paths[3].flow_from = vec!["zone:dmz".into()];
        for h in &mut r.hosts[..3] {
            h.zone = Some("dmz".into());
        }
        r.hosts[2].addresses = vec!["198.18.0.3".into(), "2001:db8::13".into()];
        r.recount();
        r
    }

    fn script(options: &SuggestOptions) -> String {
        let s = suggest(&report(), options).unwrap();
        let mut out = Vec::new();
        s.write(&mut out).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn udp_violations_get_udp_rules_in_every_backend() {
        use Expect::*;
        let mut r = report();
        r.paths.clear();
        // A dropped must-be-open 53/udp (blamed on the target), a
        // must-be-blocked 514/udp that got through, and an open 53/tcp that
        // must stay out of the UDP default deny.
        let mut dropped = path(
            "web",
            "db",
            53,
            Open,
            Some(Observed::Timeout),
            Verdict::Violation,
            "dropped",
            None,
        );
        dropped.protocol = Protocol::Udp;
        dropped.arrived = Some(0);
        dropped.blame = Some(Blame {
            at: Where::Target,
            hop: None,
            hop_distance: None,
            cause: super::super::blame::Cause::Drop,
            rule: None,
        });
        let mut through = path(
            "web",
            "db",
            514,
            Blocked,
            Some(Observed::Open),
            Verdict::Violation,
            "db saw our nonce",
            Some("198.18.0.2"),
        );
        through.protocol = Protocol::Udp;
        let mut tcp = path(
            "ops",
            "db",
            514,
            Open,
            Some(Observed::Open),
            Verdict::Ok,
            "",
            None,
        );
        tcp.protocol = Protocol::Tcp;
        r.paths = vec![dropped, through, tcp];
        r.recount();
        let run = |format| {
            let s = suggest(&r, &SuggestOptions::new(format)).unwrap();
            let mut out = Vec::new();
            s.write(&mut out).unwrap();
            String::from_utf8(out).unwrap()
        };
        let nft = run(FirewallFormat::Nft);
        assert!(
            nft.contains(
                "nft insert rule inet filter input ip saddr 198.18.0.2 udp dport 53 counter accept"
            ),
            "{nft}"
        );
        assert!(
            nft.contains("nft insert rule inet filter input udp dport 514 counter drop"),
            "{nft}"
        );
        // ops must reach 514/tcp, not 514/udp: the UDP deny keeps no one.
        assert!(!nft.contains("keep port 514 open for ops"), "{nft}");
        assert!(!nft.contains("tcp dport"), "{nft}");
        let ipt = run(FirewallFormat::Iptables);
        assert!(
            ipt.contains("iptables -w -I INPUT -s 198.18.0.2 -p udp --dport 53 "),
            "{ipt}"
        );
        assert!(
            ipt.contains("-p udp --dport 514 ") && !ipt.contains("-p tcp"),
            "{ipt}"
        );
        let fwd = run(FirewallFormat::Firewalld);
        assert!(
            fwd.contains(r#"port port="53" protocol="udp" accept"#),
            "{fwd}"
        );
        assert!(
            fwd.contains(r#"port port="514" protocol="udp" drop"#)
                && !fwd.contains(r#"protocol="tcp""#),
            "{fwd}"
        );
    }

    #[test]
    fn nft_script_accepts_drops_and_explains_the_rest() {
        expect![[r##"
            # portcall suggest --format nft: plan suggest, round finished 2025-01-01T00:00:01.000Z
            # Each rule is inserted at the head of chain input of table inet filter, so accepts precede the chain's drops and rejects, and drops precede its accepts; a port's default deny is its drop, then accepts for the port's must-be-open sources inserted ahead of it.
            # Review, then run each host's section on that host with sh.

            # host web (198.18.0.2)
            # web -> db:9443/tcp (svc)
            #   violation: must be open, observed unreachable: refused on web itself before anything was sent: its own packet filter or security policy while the canary of db was listening (EPERM (operation not permitted))
            #   NO RULE HERE: the connection never left web: connect failed locally with EPERM (operation not permitted), which is the source's own egress filter (an output-chain drop or reject, or a cgroup policy); allow TCP to 198.18.0.4:9443 in web's output rules, no rule on db can help

            # host db (198.18.0.4)
            # web -> db:5432/tcp (svc)
            #   violation: must be open, observed timeout: dropped: no answer within 500 ms (2 attempts) while the canary of db was listening
            #   note: dropped without an answer, which db's input filter, a network firewall on the way and web's own output filter all look like; if this rule does not fix it, allow the path there
            nft insert rule inet filter input ip saddr 198.18.0.2 tcp dport 5432 counter accept comment '"portcall: web -> db:5432/tcp (svc)"'
            # web -> db:22/tcp (svc)
            #   violation: must be blocked, observed open: db saw our nonce from 198.18.0.2
            #   note: the flow's source zone:dmz covers zone dmz's hosts web (198.18.0.2), web6 (2001:db8::2), nat (198.18.0.3, 2001:db8::13); the drop below blocks them and every other address the plan does not allow
            #   note: must stay open for ops: 198.18.0.7 (plan), 2001:db8::7 (seen by the target in this round, not in the plan)
            nft insert rule inet filter input tcp dport 22 counter drop comment '"portcall: default deny of port 22, web -> db:22/tcp (svc)"'
            nft insert rule inet filter input ip saddr 198.18.0.7 tcp dport 22 counter accept comment '"portcall: keep port 22 open for ops"'
            nft insert rule inet filter input ip6 saddr 2001:db8::7 tcp dport 22 counter accept comment '"portcall: keep port 22 open for ops"'
            # nat -> db:22/tcp (svc)
            #   violation: must be blocked, observed open: db saw our nonce from 198.18.0.1
            #   covered by the default deny written for web -> db:22/tcp (svc)
            # web -> db:8080/tcp (svc)
            #   violation: must be open, observed unreachable: rejected with an ICMP error while the canary of db was listening (EHOSTUNREACH (no route to host))
            nft insert rule inet filter input ip saddr 198.18.0.2 tcp dport 8080 counter accept comment '"portcall: web -> db:8080/tcp (svc)"'
            # web -> db:8243/tcp (svc)
            #   violation: must be open, observed tls-error: TLS with the canary of db failed (alert: handshake failure)
            #   NO RULE HERE: TCP reaches db:8243, only the TLS handshake failed: fix the certificate or TLS settings, not the firewall
            # web -> db:7611/tcp (svc)
            #   violation: must be open, observed wrong-host: connected, but the canary of db did not record our nonce
            #   NO RULE HERE: another host (or no agent) answered at 198.18.0.4:7611: an address translation, a redirect or a stale address sends the connection elsewhere, which no filter rule on db changes; fix the NAT or the address
            # web -> db:6379/tcp (svc)
            #   error: must be open, observed refused: refused: service down on db:6379 (a real service holds the port)
            #   NO RULE HERE: the live service on db:6379 refused the connection, so it is down (no canary held the port); start it, a firewall rule would not help
            # named -> db:5432/tcp (svc)
            #   violation: must be open, observed timeout: dropped
            #   note: dropped without an answer, which db's input filter, a network firewall on the way and named's own output filter all look like; if this rule does not fix it, allow the path there
            #   NO RULE HERE: named's address "web.example" is not an IP address and db saw no source, so a source-restricted rule cannot be written here; resolve the name and write the rule by hand

            # host db6 (2001:db8::4)
            # web6 -> db6:5432/tcp (svc)
            #   violation: must be open, observed refused: reset (TCP RST) while the canary of db6 was listening: a firewall rejects with reset
            nft insert rule inet filter input ip6 saddr 2001:db8::2 tcp dport 5432 counter accept comment '"portcall: web6 -> db6:5432/tcp (svc)"'
            # web6 -> db6:22/tcp (svc)
            #   violation: must be blocked, observed open: db6 saw our nonce from 2001:db8::2
            #   note: no flow of the plan must reach db6:22, so the port is dropped for every source
            nft insert rule inet filter input tcp dport 22 counter drop comment '"portcall: default deny of port 22, web6 -> db6:22/tcp (svc)"'
            # web -> db6:1/tcp (svc)
            #   error: must be open, observed nothing (not measured): target agent db6 unreachable, nothing to measure against: connect refused
            #   NO RULE HERE: the path was not measured, so there is nothing to fix yet; resolve the reason above and check again
        "##]]
        .assert_eq(&script(&SuggestOptions::new(FirewallFormat::Nft)));
    }

    #[test]
    fn a_silent_path_gets_the_sources_planned_address_of_its_family() {
        use crate::plan::Family;
        let mut r = report();
        let mut dual = host("dual", "198.18.0.5");
        dual.addresses = vec!["198.18.0.5".into(), "2001:db8::5".into()];
        r.hosts.push(dual);
        let dropped = |from: &str| {
            let mut p = path(
                from,
                "db6",
                5432,
                Expect::Open,
                Some(Observed::Timeout),
                Verdict::Violation,
                "dropped",
                None,
            );
            p.family = Some(Family::Ipv6);
            p
        };
        // A dual-stack source over IPv6, and an IPv4-only one whose IPv6
        // source its kernel chose unseen.
        r.paths = vec![dropped("dual"), dropped("web")];
        r.recount();
        let mut o = SuggestOptions::new(FirewallFormat::Nft);
        o.host = Some("db6".into());
        let s = suggest(&r, &o).unwrap();
        let mut out = Vec::new();
        s.write(&mut out).unwrap();
        let out = String::from_utf8(out).unwrap();
        assert!(
            out.contains("ip6 saddr 2001:db8::5 tcp dport 5432 counter accept"),
            "{out}"
        );
        assert!(!out.contains("198.18.0.5 tcp dport"), "{out}");
        assert!(
            out.contains(
                "NO RULE HERE: the plan gives web no ipv6 address and db6 saw no connection"
            ),
            "{out}"
        );
    }

    #[test]
    fn iptables_uses_ip6tables_for_ipv6_sources() {
        let mut o = SuggestOptions::new(FirewallFormat::Iptables);
        o.host = Some("db6".into());
        expect![[r#"
            # portcall suggest --format iptables: plan suggest, round finished 2025-01-01T00:00:01.000Z
            # Each rule is inserted at the head of chain INPUT (iptables for IPv4 sources, ip6tables for IPv6), so accepts precede the chain's drops and rejects, and drops precede its accepts; a port's default deny is its drop (both families), then accepts for the port's must-be-open sources inserted ahead of it.
            # Review, then run each host's section on that host with sh.

            # host db6 (2001:db8::4)
            # web6 -> db6:5432/tcp (svc)
            #   violation: must be open, observed refused: reset (TCP RST) while the canary of db6 was listening: a firewall rejects with reset
            ip6tables -w -I INPUT -s 2001:db8::2 -p tcp --dport 5432 -m comment --comment 'portcall: web6 -> db6:5432/tcp (svc)' -j ACCEPT
            # web6 -> db6:22/tcp (svc)
            #   violation: must be blocked, observed open: db6 saw our nonce from 2001:db8::2
            #   note: no flow of the plan must reach db6:22, so the port is dropped for every source
            iptables -w -I INPUT -p tcp --dport 22 -m comment --comment 'portcall: default deny of port 22, web6 -> db6:22/tcp (svc)' -j DROP
            ip6tables -w -I INPUT -p tcp --dport 22 -m comment --comment 'portcall: default deny of port 22, web6 -> db6:22/tcp (svc)' -j DROP
            # web -> db6:1/tcp (svc)
            #   error: must be open, observed nothing (not measured): target agent db6 unreachable, nothing to measure against: connect refused
            #   NO RULE HERE: the path was not measured, so there is nothing to fix yet; resolve the reason above and check again
        "#]]
        .assert_eq(&script(&o));
    }

    #[test]
    fn firewalld_rich_rules_with_priorities_and_a_reload() {
        let mut o = SuggestOptions::new(FirewallFormat::Firewalld);
        o.host = Some("db6".into());
        o.zone = Some("internal".into());
        expect![[r##"
            # portcall suggest --format firewalld: plan suggest, round finished 2025-01-01T00:00:01.000Z
            # Rich rules in the internal zone, accepts at priority -32768 and a port's default-deny drop at -32767, both ahead of the zone's other rules and its target.
            # Review, then run each host's section on that host with sh.

            # host db6 (2001:db8::4)
            # web6 -> db6:5432/tcp (svc)
            #   violation: must be open, observed refused: reset (TCP RST) while the canary of db6 was listening: a firewall rejects with reset
            firewall-cmd --permanent --zone=internal '--add-rich-rule=rule priority="-32768" family="ipv6" source address="2001:db8::2" port port="5432" protocol="tcp" accept'
            # web6 -> db6:22/tcp (svc)
            #   violation: must be blocked, observed open: db6 saw our nonce from 2001:db8::2
            #   note: no flow of the plan must reach db6:22, so the port is dropped for every source
            firewall-cmd --permanent --zone=internal '--add-rich-rule=rule priority="-32767" port port="22" protocol="tcp" drop'
            # web -> db6:1/tcp (svc)
            #   error: must be open, observed nothing (not measured): target agent db6 unreachable, nothing to measure against: connect refused
            #   NO RULE HERE: the path was not measured, so there is nothing to fix yet; resolve the reason above and check again
            # load the permanent rules into the running firewall
            firewall-cmd --reload
        "##]]
        .assert_eq(&script(&o));
    }

    #[test]
    fn host_filter_keeps_only_that_host_and_unknown_hosts_are_errors() {
        let mut o = SuggestOptions::new(FirewallFormat::Nft);
        o.host = Some("web".into());
        let text = script(&o);
        assert!(text.contains("# host web (198.18.0.2)"), "{text}");
        assert!(!text.contains("# host db"), "{text}");
        assert!(text.contains("egress filter"), "{text}");
        o.host = Some("nope".into());
        let err = suggest(&report(), &o).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("host \"nope\" is not in the report (its hosts: web, web6"),
            "{err}"
        );
    }

    #[test]
    fn a_client_server_port_mismatch_gets_no_firewall_rule() {
        let mut r = report();
        let mut p = path(
            "web",
            "db",
            10399,
            Expect::Open,
            Some(Observed::Refused),
            Verdict::Violation,
            "refused: web dials 10399; db's svc listens on 10402, and nothing listens on 10399",
            None,
        );
        p.server_port = Some(10402);
        r.paths = vec![p];
        r.recount();
        let s = suggest(&r, &SuggestOptions::new(FirewallFormat::Nft)).unwrap();
        let mut out = Vec::new();
        s.write(&mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(
            text.contains("NO RULE HERE: web dials 10399 but db listens on 10402: make the client and the server agree"),
            "{text}"
        );
        assert!(!text.contains("nft insert"), "{text}");
    }

    #[test]
    fn an_ip_table_cannot_take_ipv6_sources() {
        let mut o = SuggestOptions::new(FirewallFormat::Nft);
        o.table = Some("ip filter".into());
        o.host = Some("db6".into());
        let text = script(&o);
        assert!(
            text.contains("NO RULE HERE: table ip filter cannot match the IPv6 source 2001:db8::2"),
            "{text}"
        );
        assert!(
            text.contains(
                "NO RULE HERE: table ip filter cannot filter the IPv6 traffic to 2001:db8::4"
            ),
            "{text}"
        );
        assert!(!text.contains("nft insert"), "{text}");
    }

    #[test]
    fn bad_tables_chains_zones_and_misplaced_options_are_refused() {
        /// Format, table, chain, zone, and what the error must say.
        type Case<'a> = (
            FirewallFormat,
            Option<&'a str>,
            Option<&'a str>,
            Option<&'a str>,
            &'a str,
        );
        let cases: [Case; 7] = [
            (
                FirewallFormat::Nft,
                Some("filter"),
                None,
                None,
                "table \"filter\"",
            ),
            (
                FirewallFormat::Nft,
                Some("bridge filter"),
                None,
                None,
                "table \"bridge filter\"",
            ),
            (
                FirewallFormat::Nft,
                Some("inet f;x"),
                None,
                None,
                "table \"inet f;x\"",
            ),
            (
                FirewallFormat::Nft,
                None,
                Some("in put"),
                None,
                "chain \"in put\" is not a valid nft chain name",
            ),
            (
                FirewallFormat::Iptables,
                None,
                Some("-j"),
                None,
                "chain \"-j\"",
            ),
            (
                FirewallFormat::Iptables,
                Some("inet filter"),
                None,
                None,
                "--table does not apply to --format iptables",
            ),
            (
                FirewallFormat::Firewalld,
                None,
                None,
                Some("a'b"),
                "zone \"a'b\"",
            ),
        ];
        for (format, table, chain, zone, want) in cases {
            let o = SuggestOptions {
                format,
                host: None,
                table: table.map(Into::into),
                chain: chain.map(Into::into),
                zone: zone.map(Into::into),
                router: None,
            };
            let err = suggest(&report(), &o).unwrap_err().to_string();
            assert!(err.contains(want), "{err} lacks {want}");
        }
        assert!("pf".parse::<FirewallFormat>().is_err());
    }

    #[test]
    fn hostile_names_cannot_escape_their_comments() {
        let mut r = report();
        r.paths[1].from = "web\nrm -rf /tmp/x; echo '".into();
        r.hosts[0].name = r.paths[1].from.clone();
        let s = suggest(&r, &SuggestOptions::new(FirewallFormat::Nft)).unwrap();
        let mut out = Vec::new();
        s.write(&mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        for line in text.lines() {
            assert!(
                line.is_empty()
                    || line.starts_with('#')
                    || line.starts_with("nft insert rule inet filter input "),
                "{line}"
            );
            assert!(!line.starts_with("rm"), "{line}");
        }
        assert!(
            text.contains("comment '\"portcall: web_rm -rf /tmp/x; echo _ -> db:5432/tcp (svc)\"'"),
            "{text}"
        );
    }

    #[test]
    fn a_clean_report_needs_nothing() {
        let mut r = report();
        r.paths.truncate(1);
        let s = suggest(&r, &SuggestOptions::new(FirewallFormat::Nft)).unwrap();
        assert_eq!((s.rules(), s.manual()), (0, 0));
        let mut out = Vec::new();
        s.write(&mut out).unwrap();
        assert!(
            String::from_utf8(out)
                .unwrap()
                .ends_with("# nothing to change: every path meets its expectation\n")
        );
    }

    /// Regression: a drop in the network was "fixed" with an accept on the
    /// target host. Suggest follows `blame`: a network fault gets a
    /// paragraph for the network team (and, with --router, a forward rule
    /// on the router), an egress drop an output accept on the source, a
    /// target rule the accept in that rule's own table plus the rule it
    /// overrides, and an unknown place says so.
    #[test]
    fn an_accept_on_the_target_for_a_network_drop_changed_nothing() {
        use crate::report::blame::{Blame, BlameRule, Cause, Where};
        let mut r = report();
        r.paths.truncate(2);
        r.hosts.push(host("router", "198.18.0.254"));
        r.hosts[0].zone = Some("app".into());
        r.hosts[3].zone = Some("data".into());
        let rule = |host: &str,
                    chain: &str,
                    handle: Option<u64>,
                    text: Option<&str>,
                    policy: Option<&str>| BlameRule {
            host: host.into(),
            table: "inet portcall".into(),
            chain: chain.into(),
            handle,
            text: text.map(Into::into),
            policy: policy.map(Into::into),
        };
        let blame = |at, cause, hop: Option<&str>, rule| {
            Some(Blame {
                at,
                hop: hop.map(Into::into),
                hop_distance: hop.map(|_| 1),
                cause,
                rule,
            })
        };
        let mut network = r.paths[1].clone();
        network.blame = blame(Where::Network, Cause::Drop, Some("198.18.0.254"), None);
        let mut egress = r.paths[1].clone();
        egress.port = 5433;
        egress.blame = blame(
            Where::Source,
            Cause::Egress,
            None,
            Some(rule(
                "web",
                "output",
                Some(9),
                Some("ip daddr 198.18.0.4 tcp dport 5433 drop"),
                None,
            )),
        );
        let mut target = r.paths[1].clone();
        target.port = 5434;
        target.blame = blame(
            Where::Target,
            Cause::Drop,
            None,
            Some(rule(
                "db",
                "input",
                Some(4),
                Some("ip saddr 198.18.0.2 tcp dport 5434 drop"),
                None,
            )),
        );
        let mut policy = r.paths[1].clone();
        policy.port = 5435;
        policy.blame = blame(
            Where::Target,
            Cause::Drop,
            None,
            Some(rule("db", "input", None, None, Some("drop"))),
        );
        let mut unknown = r.paths[1].clone();
        unknown.port = 5436;
        unknown.blame = blame(Where::Unknown, Cause::Reset, None, None);
        r.paths = vec![network, egress, target, policy, unknown];
        r.recount();
        let run = |router: Option<&str>| {
            let mut o = SuggestOptions::new(FirewallFormat::Nft);
            o.router = router.map(Into::into);
            let s = suggest(&r, &o).unwrap();
            let mut out = Vec::new();
            s.write(&mut out).unwrap();
            String::from_utf8(out).unwrap()
        };
        expect![[r##"
            # portcall suggest --format nft: plan suggest, round finished 2025-01-01T00:00:01.000Z
            # Each rule is inserted at the head of chain input of table inet filter, so accepts precede the chain's drops and rejects, and drops precede its accepts; a port's default deny is its drop, then accepts for the port's must-be-open sources inserted ahead of it.
            # Review, then run each host's section on that host with sh.

            # host web (198.18.0.2)
            # web -> db:5433/tcp (svc)
            #   violation: must be open, observed timeout: dropped: no answer within 500 ms (2 attempts) while the canary of db was listening
            #   note: blamed on web: its own output filter stops the probe before it leaves (egress)
            #   note: overrides web: table inet portcall chain output rule handle 9 (ip daddr 198.18.0.4 tcp dport 5433 drop); or remove that rule on web: nft delete rule inet portcall output handle 9
            nft insert rule inet portcall output ip daddr 198.18.0.4 tcp dport 5433 counter accept comment '"portcall: web -> db:5433/tcp (svc)"'

            # host db (198.18.0.4)
            # web -> db:5432/tcp (svc)
            #   violation: must be open, observed timeout: dropped: no answer within 500 ms (2 attempts) while the canary of db was listening
            #   NO RULE HERE: blamed on the network: the device at 198.18.0.254 (hop 1 from web) stops it (drop); no rule on db or web can fix it. For the network team: allow TCP from web (198.18.0.2, zone app) to db (198.18.0.4, zone data) port 5432 at 198.18.0.254
            # web -> db:5434/tcp (svc)
            #   violation: must be open, observed timeout: dropped: no answer within 500 ms (2 attempts) while the canary of db was listening
            #   note: overrides db: table inet portcall chain input rule handle 4 (ip saddr 198.18.0.2 tcp dport 5434 drop); or remove that rule on db: nft delete rule inet portcall input handle 4
            nft insert rule inet portcall input ip saddr 198.18.0.2 tcp dport 5434 counter accept comment '"portcall: web -> db:5434/tcp (svc)"'
            # web -> db:5435/tcp (svc)
            #   violation: must be open, observed timeout: dropped: no answer within 500 ms (2 attempts) while the canary of db was listening
            #   note: overrides db: table inet portcall chain input policy drop
            nft insert rule inet portcall input ip saddr 198.18.0.2 tcp dport 5435 counter accept comment '"portcall: web -> db:5435/tcp (svc)"'
            # web -> db:5436/tcp (svc)
            #   violation: must be open, observed timeout: dropped: no answer within 500 ms (2 attempts) while the canary of db was listening
            #   note: where the path breaks is unknown (reset): the evidence cannot tell db's firewall from a device on the way, so this accept at db helps only if db's own firewall is what stops it
            nft insert rule inet filter input ip saddr 198.18.0.2 tcp dport 5436 counter accept comment '"portcall: web -> db:5436/tcp (svc)"'
        "##]].assert_eq(&run(None));
        let with_router = run(Some("router"));
        assert!(
            with_router.contains("# host router (198.18.0.254)\n# web -> db:5432/tcp (svc)\n"),
            "{with_router}"
        );
        assert!(
            with_router.contains("nft insert rule inet filter forward ip saddr 198.18.0.2 ip daddr 198.18.0.4 tcp dport 5432 counter accept comment"),
            "{with_router}"
        );
        let mut o = SuggestOptions::new(FirewallFormat::Nft);
        o.router = Some("nope".into());
        assert!(
            suggest(&r, &o)
                .unwrap_err()
                .to_string()
                .starts_with("router \"nope\" is not a host")
        );
    }

    #[test]
    fn shell_quoting() {
        assert_eq!(sh_quote("198.18.0.2"), "198.18.0.2");
        assert_eq!(sh_quote("2001:db8::2"), "2001:db8::2");
        assert_eq!(sh_quote("a b"), "'a b'");
        assert_eq!(sh_quote("it's"), "'it'\\''s'");
        assert_eq!(sh_quote(""), "''");
    }
}
