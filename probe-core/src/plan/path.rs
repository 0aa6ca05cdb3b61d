//! Flows as validated (selectors, port references, expectations) and the
//! concrete paths they expand into, owned ([`Path`]) or borrowed
//! ([`PathView`]).

use std::fmt;

use serde::Serialize;

use super::diag::Location;
use super::host::{Address, Family, FamilyFilter};
use super::service::ServiceKind;
use crate::port::{Port, Protocol};

/// Which hosts a flow endpoint means.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selector {
    /// Every host.
    All,
    /// One host by name.
    Host(String),
    /// Every host with this role.
    Role(String),
    /// Every host in this zone.
    Zone(String),
}

impl fmt::Display for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Selector::All => f.write_str("all"),
            Selector::Host(n) => write!(f, "host:{n}"),
            Selector::Role(n) => write!(f, "role:{n}"),
            Selector::Zone(n) => write!(f, "zone:{n}"),
        }
    }
}

/// A port named in a flow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PortRef {
    /// A port name, resolved on each target host through its roles.
    Name(String),
    /// A literal number.
    Number(Port),
}

impl fmt::Display for PortRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PortRef::Name(n) => f.write_str(n),
            PortRef::Number(p) => p.fmt(f),
        }
    }
}

/// What a path is expected to do.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Expect {
    /// The connection must succeed.
    Open,
    /// The connection must not succeed.
    Blocked,
}

impl Expect {
    /// `open` or `blocked`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Expect::Open => "open",
            Expect::Blocked => "blocked",
        }
    }
}

impl fmt::Display for Expect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A flow: who must (or must not) reach what.
#[derive(Debug, Clone)]
pub struct Flow {
    /// Position in the file, starting at 1.
    pub index: usize,
    /// The flow's optional `name`.
    pub name: Option<String>,
    /// Sources.
    pub from: Vec<Selector>,
    /// Targets.
    pub to: Vec<Selector>,
    /// Ports.
    pub ports: Vec<PortRef>,
    /// Open or blocked.
    pub expect: Expect,
    /// The address families its paths may use.
    pub family: FamilyFilter,
    /// Most loss a path may show in either direction, in percent, where
    /// the round samples (`max_loss_pct`).
    pub max_loss_pct: Option<f64>,
    /// Longest median round trip a path may show, in milliseconds, where
    /// the round samples (`max_rtt_ms`).
    pub max_rtt_ms: Option<f64>,
    /// Where the flow is defined.
    pub location: Location,
}

impl Flow {
    /// A short label for reports: the flow's name, or `from -> to`.
    pub fn label(&self) -> String {
        if let Some(n) = &self.name {
            return n.clone();
        }
        let join = |v: &[Selector]| {
            v.iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("+")
        };
        format!("{} -> {}", join(&self.from), join(&self.to))
    }
}

/// One concrete `(from, to, port)` with its expectation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Path {
    /// Source host name.
    pub from: String,
    /// Target host name.
    pub to: String,
    /// Target address.
    pub address: Address,
    /// The port probed: the one the client dials.
    pub port: Port,
    /// Where the target listens, when a dial of the source makes that
    /// differ from `port` (a client/server mismatch).
    pub server_port: Option<Port>,
    /// The port's name on the target (or its number when it has none).
    pub service: String,
    /// TCP or TLS.
    pub protocol: Protocol,
    /// Open or blocked.
    pub expect: Expect,
    /// The target role serving the port, when the port is planned.
    pub role: Option<String>,
    /// The flows (indices starting at 1) that produce this path.
    pub flows: Vec<usize>,
    /// The address family of `address`; `None` for a DNS name (it takes
    /// the resolved address's).
    pub family: Option<Family>,
    /// What the target must answer with (the port's `service`); `None`:
    /// the plan does not say (see [`ServiceKind::inferred`]).
    pub service_kind: Option<ServiceKind>,
}

/// A path borrowed from wherever it lives (a materialized [`Path`] or the
/// plan's expansion, walked without allocating one).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PathView<'a> {
    /// Its position in the whole plan's path list.
    pub index: usize,
    /// Source host name.
    pub from: &'a str,
    /// Target host name.
    pub to: &'a str,
    /// Target address.
    pub address: &'a Address,
    /// The port probed.
    pub port: Port,
    /// Where the target listens, when it differs from `port`.
    pub server_port: Option<Port>,
    /// The port's name on the target.
    pub service: &'a str,
    /// TCP or TLS.
    pub protocol: Protocol,
    /// Open or blocked.
    pub expect: Expect,
    /// The target role serving the port, when the port is planned.
    pub role: Option<&'a str>,
    /// The flows that produce it.
    pub flows: &'a [usize],
    /// The address family of `address`.
    pub family: Option<Family>,
    /// What the target must answer with.
    pub service_kind: Option<ServiceKind>,
}

impl PathView<'_> {
    /// An owned [`Path`].
    pub fn to_path(&self) -> Path {
        Path {
            from: self.from.to_owned(),
            to: self.to.to_owned(),
            address: self.address.clone(),
            port: self.port,
            server_port: self.server_port,
            service: self.service.to_owned(),
            protocol: self.protocol,
            expect: self.expect,
            role: self.role.map(str::to_owned),
            flows: self.flows.to_vec(),
            family: self.family,
            service_kind: self.service_kind,
        }
    }
}

impl Path {
    /// This path borrowed, at position `index` of the plan.
    pub fn view(&self, index: usize) -> PathView<'_> {
        PathView {
            index,
            from: &self.from,
            to: &self.to,
            address: &self.address,
            port: self.port,
            server_port: self.server_port,
            service: &self.service,
            protocol: self.protocol,
            expect: self.expect,
            role: self.role.as_deref(),
            flows: &self.flows,
            family: self.family,
            service_kind: self.service_kind,
        }
    }
}
