//! One trace event as both of nftrace's readers give it: the kernel's
//! netlink trace messages (`trace_netlink`) and, where those cannot be
//! read, the lines of `nft -a monitor trace` (`nftrace::parse_line`). A
//! leaf, so that neither reader imports the other.

use std::net::IpAddr;

/// A table, as `nft` trace lines name it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainRef {
    /// `ip`, `ip6`, `inet`, ...
    pub family: String,
    /// The table's name.
    pub table: String,
    /// The chain's name.
    pub chain: String,
}

/// One trace event: a packet as a chain saw it, a rule's verdict or a
/// chain's policy (one line of `nft -a monitor trace`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TraceLine {
    /// `packet: ...`: the packet as the chain saw it.
    Packet {
        /// The trace id.
        id: String,
        /// Where.
        at: ChainRef,
        /// Source address.
        source: IpAddr,
        /// Destination address.
        dest: IpAddr,
        /// TCP destination port.
        port: u16,
    },
    /// `rule ... (verdict V)`: a rule's verdict.
    Rule {
        /// The trace id.
        id: String,
        /// Where.
        at: ChainRef,
        /// The rule's handle, when printed.
        handle: Option<u64>,
        /// The rule's text; `None` when nft printed `unknown rule`.
        text: Option<String>,
        /// `accept`, `drop`, `continue`, `jump X`, ...
        verdict: String,
    },
    /// `policy P`: the chain's policy decided.
    Policy {
        /// The trace id.
        id: String,
        /// Where.
        at: ChainRef,
        /// `accept` or `drop`.
        policy: String,
    },
}
