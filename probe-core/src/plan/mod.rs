//! The plan: hosts, the roles they serve, zones, and the flows that must or
//! must not pass, parsed from TOML into a validated model and expanded into
//! the concrete paths a check measures.
//!
//! Parsing never stops at the first problem: [`analyze`] returns every
//! diagnostic it can find, each with its file, line and column, so that
//! `plan lint` can show them all at once.

pub mod catalog;
mod diag;
mod digest;
mod flows;
mod hosts;
mod only;
pub(crate) mod raw;
pub(crate) mod roles;
mod ssh;

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;

use serde::Serialize;

use crate::port::{Port, Protocol};

pub use catalog::Catalog;
pub use diag::{
    CollisionFix, Diagnostic, DialFix, Location, Problem, Severity, Suggestion, escape_controls,
};
pub use only::{Only, OnlyError};
pub use roles::RoleOrigin;
pub use ssh::SshTarget;

/// A validated, expanded plan.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The plan's `name`.
    pub name: String,
    /// The file it was read from, as the user named it.
    pub source: Arc<str>,
    /// Settings every round uses unless told otherwise.
    pub defaults: Defaults,
    /// Zones and their descriptions (declared or implied by hosts).
    pub zones: BTreeMap<String, String>,
    /// The hosts, in file order.
    pub hosts: Vec<Host>,
    /// The roles the hosts use, resolved, by name.
    pub roles: BTreeMap<String, Role>,
    /// The flows, in file order.
    pub flows: Vec<Flow>,
    /// Every path the flows expand into, merged and deduplicated, in the
    /// order the flows first produce them; for a plan read with
    /// [`PathScope::Host`], only that host's paths (see
    /// [`Plan::path_index`]), and none with [`PathScope::Lazy`] (see
    /// [`Plan::for_each_path`]).
    pub paths: Vec<Path>,
    /// `[defaults] snmp_community`: the community a UDP probe of port 161
    /// may send in an SNMP get of sysDescr.0. `None`: no SNMP request.
    pub snmp_community: Option<String>,
    /// What `paths` holds of the whole expansion.
    held: Held,
}

/// Which of a plan's paths [`analyze_scoped`] materializes into
/// [`Plan::paths`]. The plan's memory follows what is kept: a 200-host
/// full mesh over 20 ports is 796,000 paths, of which one host's are 8,000.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum PathScope {
    /// Every path (the coordinator, `plan show` as a table).
    #[default]
    All,
    /// Only the paths from or to this host (an agent): its outgoing paths
    /// and those its canaries answer. Their positions in the whole plan
    /// stay known ([`Plan::path_index`]), as does the whole plan's digest.
    Host(String),
    /// None: [`Plan::for_each_path`] produces them one at a time
    /// (`plan show --format json`, `plan lint`).
    Lazy,
}

/// What [`Plan::paths`] holds.
#[derive(Debug, Clone, Default)]
enum Held {
    /// Every path, in order.
    #[default]
    All,
    /// One host's paths.
    Host {
        /// Each held path's position in the whole plan.
        indices: Vec<usize>,
        /// The whole plan's path count.
        total: usize,
        /// The whole plan's digest.
        digest: String,
    },
    /// None; the expansion walks them on demand.
    Lazy(Arc<flows::Expansion>),
}

/// `[defaults]`, filled in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Defaults {
    /// Per-attempt timeout, in milliseconds.
    pub timeout_ms: u64,
    /// Extra attempts for silent (timed-out) paths.
    pub retries: u32,
    /// Where agents serve their control endpoint.
    pub control_port: Port,
    /// Derive each connect deadline from measured round trips, with
    /// `timeout_ms` as the upper bound (`adaptive = false`: every attempt
    /// waits `timeout_ms`).
    pub adaptive: bool,
}

impl Default for Defaults {
    fn default() -> Self {
        Defaults {
            timeout_ms: 1000,
            retries: 1,
            control_port: Port::new(7400).expect("7400 is a port"),
            adaptive: true,
        }
    }
}

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

/// A role: a named set of ports, from the catalog or the plan.
#[derive(Debug, Clone, PartialEq)]
pub struct Role {
    /// The role's name.
    pub name: String,
    /// What it is, in a few words.
    pub description: String,
    /// Its ports, before any offset.
    pub ports: Vec<PortDef>,
    /// Catalog or plan.
    pub origin: RoleOrigin,
    /// The role it `use`s, if any.
    pub based_on: Option<String>,
    /// The ports it dials on other roles, as its clients are configured.
    pub dials: Vec<DialDef>,
}

/// A client port as a role defines it: the port a client of this role is
/// configured to dial on a role `to`, before the client host's offset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DialDef {
    /// The dial's name: the port name it reaches on the target role.
    pub name: String,
    /// The target role (or a role built on it with `use`).
    pub to: String,
    /// The configured client port.
    pub port: Port,
    /// Whether the *client host's* offset moves it.
    pub offset: bool,
    /// The product's name for the client setting (e.g. `ThriftClientPort`),
    /// used when naming a fix.
    pub client_setting: Option<String>,
    /// The product's name for the server setting (e.g. `ThriftServerPort`).
    pub server_setting: Option<String>,
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

/// A port as a role defines it, before offsets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortDef {
    /// The port's name, e.g. `https-servlet`.
    pub name: String,
    /// The default number.
    pub port: Port,
    /// TCP or TLS.
    pub protocol: Protocol,
    /// Whether the server's port offset shifts it.
    pub offset: bool,
}

/// One role on one host, with its own offset.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RoleInstance {
    /// The role's name.
    pub role: String,
    /// The offset added to its offset-able ports.
    pub port_offset: u16,
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
        }
    }
}

/// A list of diagnostics, displayed one per line.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Diagnostics(pub Vec<Diagnostic>);

impl Diagnostics {
    /// Whether any diagnostic is an error.
    pub fn has_errors(&self) -> bool {
        self.0.iter().any(|d| d.severity == Severity::Error)
    }

    /// Whether any error makes the plan unusable. A client/server port
    /// mismatch is an error about the deployment, not the plan: `lint`
    /// fails on it, but a check still runs and measures the dialled port.
    pub fn has_blocking_errors(&self) -> bool {
        self.0
            .iter()
            .any(|d| d.severity == Severity::Error && d.problem.blocks_plan())
    }
}

impl fmt::Display for Diagnostics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, d) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            d.fmt(f)?;
        }
        Ok(())
    }
}

/// Why a plan could not be loaded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PlanError {
    /// The file could not be read.
    #[error("read plan {path}")]
    Io {
        /// The path as given.
        path: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The plan has errors; every one is listed.
    #[error("{0}")]
    Invalid(Diagnostics),
}

/// The result of reading a plan: the plan if it has no errors, and every
/// diagnostic (errors and warnings) in file order.
#[derive(Debug)]
pub struct Analysis {
    /// The plan, present only when there are no errors.
    pub plan: Option<Plan>,
    /// Everything found, sorted by position.
    pub diagnostics: Diagnostics,
}

impl Plan {
    /// Reads and validates a plan file against the built-in catalog.
    /// Warnings are dropped; use [`analyze`] to see them.
    pub fn load(path: &std::path::Path) -> Result<Plan, PlanError> {
        let src = std::fs::read_to_string(path).map_err(|source| PlanError::Io {
            path: path.display().to_string(),
            source,
        })?;
        Plan::parse(&src, &path.display().to_string())
    }

    /// Reads and validates a plan file, keeping the paths `scope` says.
    pub fn load_scoped(path: &std::path::Path, scope: &PathScope) -> Result<Plan, PlanError> {
        let src = std::fs::read_to_string(path).map_err(|source| PlanError::Io {
            path: path.display().to_string(),
            source,
        })?;
        Plan::parse_scoped(&src, &path.display().to_string(), scope)
    }

    /// Validates plan text; `file` names it in diagnostics.
    pub fn parse(src: &str, file: &str) -> Result<Plan, PlanError> {
        Plan::parse_scoped(src, file, &PathScope::All)
    }

    /// Validates plan text, keeping the paths `scope` says.
    pub fn parse_scoped(src: &str, file: &str, scope: &PathScope) -> Result<Plan, PlanError> {
        let a = analyze_scoped(src, file, Catalog::builtin(), scope);
        match a.plan {
            Some(p) => Ok(p),
            None => Err(PlanError::Invalid(Diagnostics(
                a.diagnostics
                    .0
                    .into_iter()
                    .filter(|d| d.severity == Severity::Error && d.problem.blocks_plan())
                    .collect(),
            ))),
        }
    }

    /// A host by name.
    pub fn host(&self, name: &str) -> Option<&Host> {
        self.hosts.iter().find(|h| h.name == name)
    }

    /// A flow by its 1-based index.
    pub fn flow(&self, index: usize) -> Option<&Flow> {
        index.checked_sub(1).and_then(|i| self.flows.get(i))
    }

    /// The number of paths of the whole plan (also when [`Plan::paths`]
    /// holds only some or none).
    pub fn path_count(&self) -> usize {
        match &self.held {
            Held::All => self.paths.len(),
            Held::Host { total, .. } => *total,
            Held::Lazy(x) => x.total(),
        }
    }

    /// The position in the whole plan of `paths[k]` (`k` itself unless the
    /// plan holds one host's paths): what the control protocol names.
    pub fn path_index(&self, k: usize) -> usize {
        match &self.held {
            Held::Host { indices, .. } => indices.get(k).copied().unwrap_or(usize::MAX),
            _ => k,
        }
    }

    /// This plan keeping only the paths `scope` says: an agent reads a
    /// plan with [`PathScope::Lazy`], finds which host it plays, and keeps
    /// that host's paths. A plan can only give up paths this way, never
    /// get back ones it no longer holds (asking for more keeps it as is).
    pub fn scoped(mut self, scope: &PathScope) -> Plan {
        match (std::mem::take(&mut self.held), scope) {
            (Held::Lazy(x), _) => materialize(&mut self, x, scope),
            (Held::All, PathScope::Host(host)) => {
                let digest = self.digest();
                let total = self.paths.len();
                let mut indices = Vec::new();
                let mut k = 0;
                self.paths.retain(|p| {
                    let keep = p.from == *host || p.to == *host;
                    if keep {
                        indices.push(k);
                    }
                    k += 1;
                    keep
                });
                self.paths.shrink_to_fit();
                self.held = Held::Host {
                    indices,
                    total,
                    digest,
                };
            }
            (held, _) => self.held = held,
        }
        self
    }

    /// Whether [`Plan::paths`] holds every path of the plan.
    pub fn holds_every_path(&self) -> bool {
        matches!(self.held, Held::All)
    }

    /// Calls `f` with every path of the plan in order, until it breaks; a
    /// plan read with [`PathScope::Lazy`] produces them one at a time,
    /// without holding them. For a plan holding one host's paths, only
    /// those.
    pub fn for_each_path<B>(
        &self,
        mut f: impl FnMut(PathView<'_>) -> std::ops::ControlFlow<B>,
    ) -> std::ops::ControlFlow<B> {
        match &self.held {
            Held::Lazy(x) => x.for_each(&self.hosts, f),
            _ => {
                for (k, p) in self.paths.iter().enumerate() {
                    f(p.view(self.path_index(k)))?;
                }
                std::ops::ControlFlow::Continue(())
            }
        }
    }

    /// A fingerprint of everything in the plan that a round depends on
    /// (hosts, addresses, ports, paths, defaults): see
    /// [`crate::control::plan_digest`].
    pub fn digest(&self) -> String {
        if let Held::Host { digest, .. } = &self.held {
            return digest.clone();
        }
        let mut d = digest::Digest::start(self);
        let _ = self.for_each_path(|p| {
            d.path(&p);
            std::ops::ControlFlow::<()>::Continue(())
        });
        d.finish()
    }
}

/// Turns a TOML parser error into a located diagnostic, with a hint for the
/// commonest mistake (an unquoted address or name).
pub(crate) fn syntax_diagnostic(file: &Arc<str>, src: &str, e: &toml::de::Error) -> Diagnostic {
    let mut message = e
        .message()
        .trim_end_matches('\n')
        .replace('\n', "; ")
        .replace("expected i64", "expected an integer")
        .replace("expected u64", "expected a non-negative integer");
    message = plain_words(&message);
    if message == "duplicate key" {
        if let Some(span) = e.span() {
            let key = src.get(span.clone()).unwrap_or("").trim();
            if !key.is_empty() && !key.contains('\n') {
                message = format!("duplicate key `{key}`");
            }
        }
    }
    let mut location = e.span().map(|s| Location::of_offset(file, src, s.start));
    let mut problem = Problem::Syntax {
        message: message.clone(),
        hint: String::new(),
        snippet: String::new(),
    };
    if let Some(span) = e.span() {
        let start = span.start.min(src.len());
        let line_start = src[..start].rfind('\n').map_or(0, |i| i + 1);
        let line = src[line_start..].lines().next().unwrap_or("");
        if let Some((key, value)) = line.split_once('=') {
            let value = value.split('#').next().unwrap_or("").trim();
            let bare = !value.is_empty()
                && !value.starts_with(['"', '\'', '[', '{'])
                && value
                    .chars()
                    .any(|c| c.is_ascii_alphabetic() || c == '.' || c == ':')
                && value.parse::<f64>().is_err()
                && !matches!(value, "true" | "false" | "inf" | "nan");
            if bare {
                // Point at the value itself, not wherever the parser gave up.
                let value_at = line_start + line.find(value).unwrap_or(0);
                location = Some(Location::of_offset(file, src, value_at));
                problem = Problem::Syntax {
                    message: format!(
                        "expected a quoted string, found unquoted `{value}` ({message})"
                    ),
                    hint: format!("; write {} = \"{}\"", key.trim(), value),
                    snippet: String::new(),
                };
            }
        }
    }
    if let Problem::Syntax { message, hint, .. } = problem {
        let at = match (&location, e.span()) {
            (Some(l), Some(span)) => {
                // The caret goes where the location points (it may have been
                // moved to an unquoted value), as wide as the parser's span
                // allows on that line.
                let start = offset_of(src, l.line, l.col);
                let end = if start == span.start.min(src.len()) {
                    span.end
                } else {
                    start
                };
                Some(start..end)
            }
            _ => None,
        };
        problem = Problem::Syntax {
            message,
            hint,
            snippet: at.map(|r| snippet(src, r)).unwrap_or_default(),
        };
    }
    Diagnostic {
        severity: Severity::Error,
        location,
        problem,
    }
}

/// The default cap on the paths a plan may expand into (`[defaults]
/// max_paths`): far above real deployments (a 100-host full mesh over ten
/// ports is 99,000 paths), far below what exhausts memory.
pub const DEFAULT_MAX_PATHS: u64 = 1_000_000;

/// The highest `max_paths` a plan may set.
pub const MAX_PATHS_CEILING: u64 = 100_000_000;

/// Rewrites serde's wording for the two mistakes people make most: an
/// unknown field gets "did you mean" when one of the expected fields is
/// close, and an unknown variant lists the allowed values in plain words.
fn plain_words(message: &str) -> String {
    let backticked =
        |s: &str| -> Vec<String> { s.split('`').skip(1).step_by(2).map(str::to_owned).collect() };
    if let Some(rest) = message.strip_prefix("unknown field `") {
        let words = backticked(message);
        if let Some((field, expected)) = words.split_first() {
            let suggestion = Suggestion::closest(field, expected.iter().map(String::as_str));
            if suggestion.0.is_some() {
                return format!(
                    "unknown field `{field}`{suggestion} (allowed here: {})",
                    expected.join(", ")
                );
            }
        }
        return format!("unknown field `{rest}");
    }
    if message.starts_with("unknown variant `") {
        let words = backticked(message);
        if let Some((value, allowed)) = words.split_first() {
            let allowed: Vec<String> = allowed.iter().map(|a| format!("\"{a}\"")).collect();
            let list = match allowed.as_slice() {
                [] => String::new(),
                [one] => one.clone(),
                [init @ .., last] => format!("{} or {last}", init.join(", ")),
            };
            let suggestion = Suggestion::closest(value, words[1..].iter().map(String::as_str));
            return format!("\"{value}\" is not allowed here; write {list}{suggestion}");
        }
    }
    message.to_owned()
}

/// The byte offset of 1-based `line` and character column `col` in `src`.
fn offset_of(src: &str, line: usize, col: usize) -> usize {
    let line_start: usize = src
        .split_inclusive('\n')
        .take(line.saturating_sub(1))
        .map(str::len)
        .sum();
    let rest = &src[line_start.min(src.len())..];
    line_start
        + rest
            .char_indices()
            .nth(col.saturating_sub(1))
            .map_or(rest.len(), |(i, _)| i)
}

/// The source line holding `span` with a caret under it, rustc-style
/// (without the header line, which the diagnostic already gives as
/// `file:line:col: error: ...`), each line starting with a newline.
pub(crate) fn snippet(src: &str, span: std::ops::Range<usize>) -> String {
    use annotate_snippets::{Level, Renderer, Snippet};
    let mut start = span.start.min(src.len());
    while !src.is_char_boundary(start) {
        start -= 1;
    }
    // One line only: the caret stays under the token the parser stopped at.
    let line_start = src[..start].rfind('\n').map_or(0, |i| i + 1);
    let line_end = src[start..].find('\n').map_or(src.len(), |i| start + i);
    let line = &src[line_start..line_end];
    let line_no = src[..line_start].matches('\n').count() + 1;
    let mut end = span.end.clamp(start, line_end);
    while !src.is_char_boundary(end) {
        end += 1;
    }
    let (s, mut e) = (start - line_start, end - line_start);
    if e == s {
        // An empty span (end of line, end of file) still gets one caret.
        e = line[s..].chars().next().map_or(s + 1, |c| s + c.len_utf8());
    }
    let message = Level::Error.title("").snippet(
        Snippet::source(line)
            .line_start(line_no)
            .annotation(Level::Error.span(s..e)),
    );
    let rendered = Renderer::plain().render(message).to_string();
    let mut out = String::new();
    let body: Vec<&str> = rendered.lines().skip(1).collect();
    let last = body
        .iter()
        .rposition(|l| l.trim() != "|")
        .map_or(0, |i| i + 1);
    for l in &body[..last] {
        out.push('\n');
        out.push_str(l.trim_end());
    }
    out
}

/// Reads plan text against a catalog, collecting every diagnostic.
pub fn analyze(src: &str, file: &str, catalog: &Catalog) -> Analysis {
    analyze_scoped(src, file, catalog, &PathScope::All)
}

/// [`analyze`], keeping the paths `scope` says in the plan.
pub fn analyze_scoped(src: &str, file: &str, catalog: &Catalog, scope: &PathScope) -> Analysis {
    let file: Arc<str> = Arc::from(file);
    let blank = src
        .lines()
        .all(|l| l.trim().is_empty() || l.trim_start().starts_with('#'));
    if blank {
        return Analysis {
            plan: None,
            diagnostics: Diagnostics(vec![Diagnostic {
                severity: Severity::Error,
                location: Some(Location::of_offset(&file, src, 0)),
                problem: Problem::EmptyPlan,
            }]),
        };
    }
    let raw: raw::RawPlan = match toml::from_str(src) {
        Ok(r) => r,
        Err(e) => {
            return Analysis {
                plan: None,
                diagnostics: Diagnostics(vec![syntax_diagnostic(&file, src, &e)]),
            };
        }
    };
    let mut cx = Cx {
        file: &file,
        src,
        diags: Vec::new(),
        broken_roles: std::collections::BTreeSet::new(),
    };
    let name = raw.name.get_ref().trim().to_owned();
    if name.is_empty() {
        cx.push(raw.name.span(), Problem::EmptyPlanName);
    }
    control_characters(&mut cx, &raw);
    let defaults = cx.defaults(raw.defaults.as_ref());

    // Roles: the plan's own tables, resolved over the catalog.
    let mut resolver = roles::Resolver {
        file: &file,
        src,
        raw: &raw.roles,
        base: catalog.map(),
        origin: RoleOrigin::Plan,
        done: BTreeMap::new(),
        diags: Vec::new(),
    };
    resolver.resolve_all();
    cx.diags.append(&mut resolver.diags);
    let plan_roles = resolver.done;

    let (mut hosts, roles, tainted) = hosts::build(&mut cx, &raw, &plan_roles, catalog, defaults);
    ssh::resolve(&mut cx, &raw, &mut hosts);
    // Roles that failed with an error already reported: plan roles with
    // errors, and names hosts gave that resolve to no role. Selectors naming
    // them (or a near miss of them, the name the typo meant) match no host
    // as a consequence, and are not reported again.
    cx.broken_roles = plan_roles
        .iter()
        .filter(|(_, r)| r.is_none())
        .map(|(n, _)| n.clone())
        .chain(
            raw.hosts
                .iter()
                .flat_map(|h| h.get_ref().roles.iter().map(|r| r.get_ref().role.clone()))
                .filter(|n| !roles.contains_key(n)),
        )
        .collect();
    let zones = hosts::zones(&mut cx, &raw, &hosts);
    let max_paths = raw
        .defaults
        .as_ref()
        .and_then(|d| d.get_ref().max_paths.as_ref())
        .and_then(|m| u64::try_from(*m.get_ref()).ok())
        .filter(|m| (1..=MAX_PATHS_CEILING).contains(m))
        .unwrap_or(DEFAULT_MAX_PATHS);
    let known = flows::Known {
        plan: &plan_roles,
        catalog,
    };
    let (flows, expansion) = flows::expand(&mut cx, &raw, &hosts, &tainted, &known, max_paths);

    cx.diags
        .sort_by_key(|d| d.location.as_ref().map(|l| (l.line, l.col)));
    cx.diags.dedup();
    let snmp_community = cx.snmp_community(raw.defaults.as_ref());
    let diagnostics = Diagnostics(cx.diags);
    let plan = (!diagnostics.has_blocking_errors()).then(|| {
        let mut plan = Plan {
            name,
            source: Arc::clone(&file),
            defaults,
            zones,
            hosts,
            roles,
            flows,
            paths: Vec::new(),
            snmp_community,
            held: Held::All,
        };
        materialize(&mut plan, Arc::new(expansion), scope);
        plan
    });
    Analysis { plan, diagnostics }
}

/// Fills [`Plan::paths`] with what `scope` keeps of the expansion.
fn materialize(plan: &mut Plan, expansion: Arc<flows::Expansion>, scope: &PathScope) {
    use std::ops::ControlFlow::Continue;
    match scope {
        PathScope::All => {
            let mut paths = Vec::with_capacity(expansion.total());
            let _ = expansion.for_each(&plan.hosts, |p| {
                paths.push(p.to_path());
                Continue::<()>(())
            });
            plan.paths = paths;
            plan.held = Held::All;
        }
        PathScope::Host(host) => {
            // The digest covers the whole plan, so both ends of a round
            // notice a different plan; it is taken while walking, and only
            // the host's paths are kept.
            let mut d = digest::Digest::start(plan);
            let (mut paths, mut indices) = (Vec::new(), Vec::new());
            let _ = expansion.for_each(&plan.hosts, |p| {
                d.path(&p);
                if p.from == host || p.to == host {
                    paths.push(p.to_path());
                    indices.push(p.index);
                }
                Continue::<()>(())
            });
            paths.shrink_to_fit();
            indices.shrink_to_fit();
            plan.paths = paths;
            plan.held = Held::Host {
                indices,
                total: expansion.total(),
                digest: d.finish(),
            };
        }
        PathScope::Lazy => plan.held = Held::Lazy(expansion),
    }
}

/// Whether `c` can be sent as an SNMP community: 1 to 255 characters, none
/// a control character (shared with `probe --snmp-community`).
pub fn check_snmp_community(c: &str) -> Result<(), &'static str> {
    if c.is_empty() || c.len() > 255 {
        return Err("expected 1 to 255 characters");
    }
    if c.chars().any(char::is_control) {
        return Err("a community must not contain control characters");
    }
    Ok(())
}

/// Rejects control characters in every name a plan gives (plan, flows,
/// zones, roles, host zones and role items; host and port names have their
/// own stricter grammar), each at its location.
fn control_characters(cx: &mut Cx<'_>, raw: &raw::RawPlan) {
    let check = |cx: &mut Cx<'_>, span: std::ops::Range<usize>, what, s: &str| {
        if let Some(shown) = diag::has_controls(s) {
            cx.push(span, Problem::ControlCharacter { what, shown });
        }
    };
    check(cx, raw.name.span(), "plan name", raw.name.get_ref());
    for rf in &raw.flows {
        if let Some(n) = &rf.get_ref().name {
            check(cx, rf.span(), "flow name", n);
        }
    }
    if let Some(z) = &raw.zones {
        for (name, desc) in z.get_ref() {
            check(cx, desc.span(), "zone name", name);
            check(cx, desc.span(), "zone description", desc.get_ref());
        }
    }
    for (name, role) in &raw.roles {
        check(cx, role.span(), "role name", name);
        if let Some(d) = &role.get_ref().description {
            check(cx, role.span(), "role description", d);
        }
    }
    for rh in &raw.hosts {
        let h = rh.get_ref();
        if let Some(z) = &h.zone {
            check(cx, z.span(), "zone name", z.get_ref());
        }
        for item in &h.roles {
            check(cx, item.span(), "role name", &item.get_ref().role);
        }
    }
}

/// Shared state while validating: where we are and what we found.
pub(crate) struct Cx<'a> {
    pub file: &'a Arc<str>,
    pub src: &'a str,
    pub diags: Vec<Diagnostic>,
    /// Role names whose failure is already reported (see [`analyze`]).
    pub broken_roles: std::collections::BTreeSet<String>,
}

impl Cx<'_> {
    pub fn error_count(&self) -> usize {
        self.diags
            .iter()
            .filter(|d| d.severity == Severity::Error)
            .count()
    }

    pub fn loc(&self, span: std::ops::Range<usize>) -> Location {
        Location::of_offset(self.file, self.src, span.start)
    }

    pub fn push_at(&mut self, location: Location, problem: Problem) {
        self.diags.push(Diagnostic {
            severity: problem.severity(),
            location: Some(location),
            problem,
        });
    }

    pub fn push(&mut self, span: std::ops::Range<usize>, problem: Problem) {
        let location = Some(self.loc(span));
        self.diags.push(Diagnostic {
            severity: problem.severity(),
            location,
            problem,
        });
    }

    /// `[defaults] snmp_community`, when it is one an SNMP message can
    /// carry: 1 to 255 printable characters.
    fn snmp_community(&mut self, raw: Option<&toml::Spanned<raw::RawDefaults>>) -> Option<String> {
        let c = raw?.get_ref().snmp_community.as_ref()?;
        match check_snmp_community(c.get_ref()) {
            Ok(()) => Some(c.get_ref().clone()),
            Err(why) => {
                self.push(
                    c.span(),
                    Problem::BadDefaultText {
                        key: "snmp_community",
                        value: c.get_ref().clone(),
                        why,
                    },
                );
                None
            }
        }
    }

    fn defaults(&mut self, raw: Option<&toml::Spanned<raw::RawDefaults>>) -> Defaults {
        let mut d = Defaults::default();
        let Some(raw) = raw else { return d };
        let raw = raw.get_ref();
        if let Some(t) = &raw.timeout_ms {
            match u64::try_from(*t.get_ref()) {
                Ok(v) if (1..=600_000).contains(&v) => d.timeout_ms = v,
                _ => self.push(
                    t.span(),
                    Problem::BadDefault {
                        key: "timeout_ms",
                        value: *t.get_ref(),
                        expected: "1..=600000",
                    },
                ),
            }
        }
        if let Some(r) = &raw.retries {
            match u32::try_from(*r.get_ref()) {
                Ok(v) if v <= 20 => d.retries = v,
                _ => self.push(
                    r.span(),
                    Problem::BadDefault {
                        key: "retries",
                        value: *r.get_ref(),
                        expected: "0..=20",
                    },
                ),
            }
        }
        if let Some(a) = &raw.adaptive {
            d.adaptive = *a.get_ref();
        }
        if let Some(m) = &raw.max_paths {
            // Checked in `flows::expand`, before any path is allocated.
            if !(1..=MAX_PATHS_CEILING as i64).contains(m.get_ref()) {
                self.push(
                    m.span(),
                    Problem::BadDefault {
                        key: "max_paths",
                        value: *m.get_ref(),
                        expected: "1..=100000000",
                    },
                );
            }
        }
        if let Some(c) = &raw.control_port {
            match Port::from_i64(*c.get_ref()) {
                Ok(p) => d.control_port = p,
                Err(error) => self.push(
                    c.span(),
                    Problem::BadPort {
                        what: "defaults.control_port".into(),
                        error,
                    },
                ),
            }
        }
        d
    }
}
