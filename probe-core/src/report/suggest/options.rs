//! What `portcall suggest` is asked for: the firewall ([`FirewallFormat`]),
//! its table, chain or zone, one host or all, a router
//! ([`SuggestOptions`]), and why that cannot be done ([`SuggestError`]).

use std::fmt;
use std::str::FromStr;

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
