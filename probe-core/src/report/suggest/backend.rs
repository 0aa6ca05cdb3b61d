//! The firewall the script is for, with its table, chain or zone
//! resolved and checked ([`Backend`]), and the dispatch of a [`Rule`] to
//! that firewall's syntax (`nft`, `iptables`, `firewalld`).

use std::net::IpAddr;

use super::options::{FirewallFormat, SuggestError, SuggestOptions};
use super::rule::Rule;
use super::{firewalld, iptables, nft};

/// An nft table's address family: the ones that filter IP traffic on the
/// input hook.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum NftFamily {
    Ip,
    Ip6,
    Inet,
}

impl NftFamily {
    pub(super) fn as_str(self) -> &'static str {
        match self {
            NftFamily::Ip => "ip",
            NftFamily::Ip6 => "ip6",
            NftFamily::Inet => "inet",
        }
    }

    /// Whether a table of this family matches `ip`.
    pub(super) fn carries(self, ip: IpAddr) -> bool {
        matches!(
            (self, ip),
            (NftFamily::Inet, _) | (NftFamily::Ip, IpAddr::V4(_)) | (NftFamily::Ip6, IpAddr::V6(_))
        )
    }
}

/// The firewall with its resolved table, chain or zone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Backend {
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
pub(super) fn nft_identifier(s: &str) -> bool {
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
    /// The firewall `o` asks for, its names checked.
    pub(super) fn new(o: &SuggestOptions) -> Result<Backend, SuggestError> {
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

    /// How the script's rules are placed, for its header.
    pub(super) fn describe(&self) -> String {
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

    /// The commands of `rule` in this firewall's syntax.
    pub(super) fn commands(&self, rule: &Rule<'_>) -> Vec<String> {
        match self {
            Backend::Nft {
                family,
                table,
                chain,
            } => nft::commands(family.as_str(), table, chain, rule),
            Backend::Iptables { chain } => iptables::commands(chain, rule),
            Backend::Firewalld { zone } => firewalld::commands(zone.as_deref(), rule),
        }
    }
}
