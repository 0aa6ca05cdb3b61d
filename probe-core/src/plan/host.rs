//! A plan's hosts as validated: addresses and their families, role
//! instances, the ports each host serves and dials after offsets and
//! overrides.

use std::fmt;
use std::net::IpAddr;

use serde::Serialize;

use super::diag::Location;
use super::instance::RoleInstance;
use super::roles::DialDef;
use super::ssh::SshTarget;
use crate::port::{Port, Protocol};

/// A host's address as written: an IP literal or a DNS name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Address {
    /// An IPv4 or IPv6 literal.
    Ip(IpAddr),
    /// A DNS name, resolved when probing.
    Dns(String),
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Address::Ip(ip) => ip.fmt(f),
            Address::Dns(name) => f.write_str(name),
        }
    }
}

impl Serialize for Address {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl Address {
    /// The address family of an IP literal; `None` for a DNS name (its
    /// family is the resolved address's).
    pub fn family(&self) -> Option<Family> {
        match self {
            Address::Ip(ip) => Some(Family::of(*ip)),
            Address::Dns(_) => None,
        }
    }
}

/// An address family: which IP version a path runs over.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Family {
    /// IPv4.
    Ipv4,
    /// IPv6.
    Ipv6,
}

impl Family {
    /// The family of `ip`.
    pub fn of(ip: IpAddr) -> Family {
        if ip.is_ipv4() {
            Family::Ipv4
        } else {
            Family::Ipv6
        }
    }

    /// `ipv4` or `ipv6`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Family::Ipv4 => "ipv4",
            Family::Ipv6 => "ipv6",
        }
    }
}

impl fmt::Display for Family {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Which families a flow's paths may use (`family = "ipv4" | "ipv6" |
/// "both"`, default both).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FamilyFilter {
    /// Every family both ends have.
    #[default]
    Both,
    /// Only this one.
    Only(Family),
}

impl FamilyFilter {
    /// Whether a path of `family` passes.
    pub fn allows(self, family: Family) -> bool {
        match self {
            FamilyFilter::Both => true,
            FamilyFilter::Only(f) => f == family,
        }
    }
}

impl fmt::Display for FamilyFilter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FamilyFilter::Both => f.write_str("both"),
            FamilyFilter::Only(x) => x.fmt(f),
        }
    }
}

/// How a port number came about, for explanations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PortShift {
    /// The port as defined; no offset applies to it.
    #[default]
    Fixed,
    /// The defined port plus this offset.
    Offset(u16),
    /// Pinned by an override.
    Pinned,
}

/// A port a client role of a host will dial, after offsets and overrides.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EffectiveDial {
    /// The dial as the role defines it.
    pub def: DialDef,
    /// The client role that declares it.
    pub role: String,
    /// The port the client will dial.
    pub port: Port,
    /// How `port` came from `def.port`.
    pub shift: PortShift,
}

/// A port a host serves, after offsets and overrides.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EffectivePort {
    /// The port's name.
    pub name: String,
    /// The number the host listens on.
    pub port: Port,
    /// TCP or TLS.
    pub protocol: Protocol,
    /// The role that defines it.
    pub role: String,
    /// What the port must answer with, when the role says.
    #[serde(skip_serializing_if = "Option::is_none", rename = "service")]
    pub service_kind: Option<super::ServiceKind>,
    /// The port before offsets and overrides. Not part of `plan/v1`.
    #[serde(skip)]
    pub base: Port,
    /// How `port` came from `base`. Not part of `plan/v1`.
    #[serde(skip)]
    pub shift: PortShift,
}

/// A host of the plan.
#[derive(Debug, Clone)]
pub struct Host {
    /// Unique name.
    pub name: String,
    /// Its primary address: where it is reached (its control endpoint,
    /// its certificate's first name), and the source of its probes to
    /// targets of this family. The first of [`Host::addresses`].
    pub address: Address,
    /// Every address the plan gives it, primary first: its canaries listen
    /// on all, and its probes leave from the first of the target's family.
    pub addresses: Vec<Address>,
    /// Its zone, if any.
    pub zone: Option<String>,
    /// Its roles, in order, each with its offset.
    pub roles: Vec<RoleInstance>,
    /// The default offset for role items without one.
    pub port_offset: u16,
    /// Every port it serves, role by role.
    pub ports: Vec<EffectivePort>,
    /// Every port its client roles dial, role by role.
    pub dials: Vec<EffectiveDial>,
    /// Where the host is defined.
    pub location: Location,
    /// Where `check --ssh` reaches it (its `ssh`, else its address, with
    /// `[defaults] ssh_user`).
    pub ssh: Option<SshTarget>,
}

impl Host {
    /// Its first plan address of `family`, if any.
    pub fn address_of(&self, family: Family) -> Option<&Address> {
        self.addresses.iter().find(|a| a.family() == Some(family))
    }

    /// The families its IP literal addresses cover, in address order.
    pub fn families(&self) -> Vec<Family> {
        let mut v: Vec<Family> = Vec::new();
        for f in self.addresses.iter().filter_map(Address::family) {
            if !v.contains(&f) {
                v.push(f);
            }
        }
        v
    }
}
