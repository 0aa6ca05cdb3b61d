//! What the suggestions are: per host ([`HostSuggestions`]) one [`Item`]
//! per path, each with its [`Action`]; [`Suggestions`] holds them with
//! what the script's header says.

use std::net::IpAddr;

use super::FirewallFormat;
use super::backend::Backend;
use crate::port::Protocol;

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
    /// (`--router`, or the plan host whose trace named the rule): a device
    /// between the zones stopped the path.
    Forward {
        /// The source address.
        source: IpAddr,
        /// The target address.
        dest: IpAddr,
        /// The target port.
        port: u16,
        /// nft: the traced forward rule's table and chain, as for
        /// `Accept`.
        at: Option<(String, String)>,
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
    /// The firewall.
    pub(super) format: FirewallFormat,
    /// Its table, chain or zone.
    pub(super) backend: Backend,
    /// The report's plan.
    pub(super) plan: String,
    /// When the report's round finished.
    pub(super) finished_at: String,
    /// The one host asked for, if one was.
    pub(super) only: Option<String>,
    /// Hosts with something to say, in the report's host order.
    pub hosts: Vec<HostSuggestions>,
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
}
