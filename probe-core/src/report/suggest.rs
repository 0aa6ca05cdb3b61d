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
//! own egress policy (`unreachable` with a local `EPERM`/`EACCES` in the
//! detail, as the probe engine's errno names spell them; reported under the
//! source host), a connection answered by another host (`wrong-host`: a NAT
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

use super::format::path_label;
use super::{PathReport, Report, Verdict};
use crate::plan::Expect;
use crate::probe::Observed;
use crate::probe::classify::errno_name;

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
                "Each rule is inserted at the head of chain {chain} of table {} {table}, so accepts precede the chain's drops and rejects, and drops precede its accepts",
                family.as_str()
            ),
            Backend::Iptables { chain } => format!(
                "Each rule is inserted at the head of chain {chain} (iptables for IPv4 sources, ip6tables for IPv6), so accepts precede the chain's drops and rejects, and drops precede its accepts"
            ),
            Backend::Firewalld { zone } => format!(
                "Rich rules in the {} zone, accepts at priority -32767 and drops at -32768, ahead of the zone's other rules and its target",
                zone.as_deref().unwrap_or("default")
            ),
        }
    }

    /// The command that accepts (`accept`) or drops traffic from `source`
    /// to TCP `port`.
    fn command(&self, accept: bool, source: IpAddr, port: u16, note: &str) -> String {
        let v6 = source.is_ipv6();
        match self {
            Backend::Nft {
                family,
                table,
                chain,
            } => {
                let comment = format!("\"{}\"", comment_token(note, 128));
                [
                    "nft",
                    "insert",
                    "rule",
                    family.as_str(),
                    table,
                    chain,
                    if v6 { "ip6" } else { "ip" },
                    "saddr",
                    &source.to_string(),
                    "tcp",
                    "dport",
                    &port.to_string(),
                    "counter",
                    if accept { "accept" } else { "drop" },
                    "comment",
                    &comment,
                ]
                .map(sh_quote)
                .join(" ")
            }
            Backend::Iptables { chain } => [
                if v6 { "ip6tables" } else { "iptables" },
                "-w",
                "-I",
                chain,
                "-s",
                &source.to_string(),
                "-p",
                "tcp",
                "--dport",
                &port.to_string(),
                "-m",
                "comment",
                "--comment",
                &comment_token(note, 255),
                "-j",
                if accept { "ACCEPT" } else { "DROP" },
            ]
            .map(sh_quote)
            .join(" "),
            Backend::Firewalld { zone } => {
                let rule = format!(
                    "rule priority=\"{}\" family=\"{}\" source address=\"{source}\" port port=\"{port}\" protocol=\"tcp\" {}",
                    if accept { -32767 } else { -32768 },
                    if v6 { "ipv6" } else { "ipv4" },
                    if accept { "accept" } else { "drop" },
                );
                let mut words = vec!["firewall-cmd".to_string(), "--permanent".to_string()];
                if let Some(z) = zone {
                    words.push(format!("--zone={z}"));
                }
                words.push(format!("--add-rich-rule={rule}"));
                words
                    .iter()
                    .map(|w| sh_quote(w))
                    .collect::<Vec<_>>()
                    .join(" ")
            }
        }
    }
}

/// Quotes one word for `sh`: as is when it has only characters no shell
/// treats specially, else in single quotes.
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
    },
    /// Drop TCP from `source` to `port` at the path's target.
    Drop {
        /// The source address the rule matches.
        source: IpAddr,
        /// The target port.
        port: u16,
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
    for p in report.paths.iter().filter(|p| p.verdict != Verdict::Ok) {
        let (host, item) = judge(report, &backend, p);
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
fn judge(report: &Report, backend: &Backend, p: &PathReport) -> (String, Item) {
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
    let local_denial = [libc::EPERM, libc::EACCES]
        .into_iter()
        .map(errno_name)
        .find(|name| p.detail.contains(name.as_str()));
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
    item.action = if accept {
        Action::Accept {
            source,
            port: p.port,
        }
    } else {
        Action::Drop {
            source,
            port: p.port,
        }
    };
    (target, item)
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
    /// Commands (rules) in the script.
    pub fn rules(&self) -> usize {
        self.items()
            .filter(|i| !matches!(i.action, Action::Manual { .. }))
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
                match &i.action {
                    Action::Accept { source, port } => writeln!(
                        w,
                        "{}",
                        self.backend.command(true, *source, *port, &rule_note)
                    )?,
                    Action::Drop { source, port } => writeln!(
                        w,
                        "{}",
                        self.backend.command(false, *source, *port, &rule_note)
                    )?,
                    Action::Manual { reason } => {
                        writeln!(w, "#   NO RULE HERE: {}", comment_line(reason))?
                    }
                }
            }
            let rules = h
                .items
                .iter()
                .any(|i| !matches!(i.action, Action::Manual { .. }));
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
            addresses: Vec::new(),
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
            flows: vec![],
            server_port: None,
            tls_ms: None,
        }
    }

    /// One path of every kind the script treats differently.
    pub(crate) fn report() -> Report {
        use Expect::*;
        use Observed as O;
        use Verdict as V;
        let mut r = Report {
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
        r.paths[10].target_saw = None;
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
    fn nft_script_accepts_drops_and_explains_the_rest() {
        expect![[r##"
            # portcall suggest --format nft: plan suggest, round finished 2025-01-01T00:00:01.000Z
            # Each rule is inserted at the head of chain input of table inet filter, so accepts precede the chain's drops and rejects, and drops precede its accepts.
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
            nft insert rule inet filter input ip saddr 198.18.0.2 tcp dport 22 counter drop comment '"portcall: web -> db:22/tcp (svc)"'
            # nat -> db:22/tcp (svc)
            #   violation: must be blocked, observed open: db saw our nonce from 198.18.0.1
            #   note: db saw the connection come from 198.18.0.1, not from nat's planned address 198.18.0.3: an address translation on the way; the rule matches 198.18.0.1, what db's firewall sees
            nft insert rule inet filter input ip saddr 198.18.0.1 tcp dport 22 counter drop comment '"portcall: nat -> db:22/tcp (svc)"'
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
            nft insert rule inet filter input ip6 saddr 2001:db8::2 tcp dport 22 counter drop comment '"portcall: web6 -> db6:22/tcp (svc)"'
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
            # Each rule is inserted at the head of chain INPUT (iptables for IPv4 sources, ip6tables for IPv6), so accepts precede the chain's drops and rejects, and drops precede its accepts.
            # Review, then run each host's section on that host with sh.

            # host db6 (2001:db8::4)
            # web6 -> db6:5432/tcp (svc)
            #   violation: must be open, observed refused: reset (TCP RST) while the canary of db6 was listening: a firewall rejects with reset
            ip6tables -w -I INPUT -s 2001:db8::2 -p tcp --dport 5432 -m comment --comment 'portcall: web6 -> db6:5432/tcp (svc)' -j ACCEPT
            # web6 -> db6:22/tcp (svc)
            #   violation: must be blocked, observed open: db6 saw our nonce from 2001:db8::2
            ip6tables -w -I INPUT -s 2001:db8::2 -p tcp --dport 22 -m comment --comment 'portcall: web6 -> db6:22/tcp (svc)' -j DROP
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
            # Rich rules in the internal zone, accepts at priority -32767 and drops at -32768, ahead of the zone's other rules and its target.
            # Review, then run each host's section on that host with sh.

            # host db6 (2001:db8::4)
            # web6 -> db6:5432/tcp (svc)
            #   violation: must be open, observed refused: reset (TCP RST) while the canary of db6 was listening: a firewall rejects with reset
            firewall-cmd --permanent --zone=internal '--add-rich-rule=rule priority="-32767" family="ipv6" source address="2001:db8::2" port port="5432" protocol="tcp" accept'
            # web6 -> db6:22/tcp (svc)
            #   violation: must be blocked, observed open: db6 saw our nonce from 2001:db8::2
            firewall-cmd --permanent --zone=internal '--add-rich-rule=rule priority="-32768" family="ipv6" source address="2001:db8::2" port port="22" protocol="tcp" drop'
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

    #[test]
    fn shell_quoting() {
        assert_eq!(sh_quote("198.18.0.2"), "198.18.0.2");
        assert_eq!(sh_quote("2001:db8::2"), "2001:db8::2");
        assert_eq!(sh_quote("a b"), "'a b'");
        assert_eq!(sh_quote("it's"), "'it'\\''s'");
        assert_eq!(sh_quote(""), "''");
    }
}
