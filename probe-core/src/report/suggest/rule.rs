//! The rule model: one [`Rule`] is one command's worth of firewall
//! change, whatever the firewall. The deciding (`decide`) says which
//! rules a path needs through its `Action`; the script turns each action
//! into rules and each backend (`nft`, `iptables`, `firewalld`) renders a
//! rule in its own syntax.

use std::net::IpAddr;

/// Where a rule goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Place<'a> {
    /// At the head of the script's own input chain (`--chain`, `--table`,
    /// `--zone`): the target host's accepts and drops.
    Input,
    /// At the head of the chain of netfilter hook `hook` (`input`,
    /// `output`, `forward`), or of the traced rule's table and chain `at`
    /// (nft): an accept that must precede what stopped the path there.
    Hook {
        /// The hook, lower case.
        hook: &'static str,
        /// nft: `(FAMILY TABLE, chain)` of the traced rule or policy.
        at: Option<&'a (String, String)>,
    },
}

/// One firewall rule: accept or drop `l4` to `port` (and to `dest`) from
/// `source` (every source when `None`), at `place`, with `note` as its
/// comment where the firewall keeps one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Rule<'a> {
    /// Accept, else drop.
    pub(super) accept: bool,
    /// Where it goes.
    pub(super) place: Place<'a>,
    /// The source address it matches; any when `None`.
    pub(super) source: Option<IpAddr>,
    /// The destination address it matches; any when `None`.
    pub(super) dest: Option<IpAddr>,
    /// `tcp` or `udp`.
    pub(super) l4: &'a str,
    /// The destination port.
    pub(super) port: u16,
    /// The rule's own comment.
    pub(super) note: &'a str,
}
