//! Diagnostics about a plan: every problem names where it is (file, line,
//! column) and what was expected, so an operator can fix it without guessing.

use std::fmt;
use std::sync::Arc;

use crate::port::PortError;

/// A position in a plan file, 1-based line and column (in characters).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Location {
    /// The file as the user named it.
    pub file: Arc<str>,
    /// Line, starting at 1.
    pub line: usize,
    /// Column in characters, starting at 1.
    pub col: usize,
}

impl Location {
    /// The location of byte `offset` in `src`.
    pub fn of_offset(file: &Arc<str>, src: &str, offset: usize) -> Location {
        let offset = offset.min(src.len());
        // Step back to a char boundary so slicing cannot panic on a span that
        // ends inside a multi-byte character.
        let mut offset = offset;
        while !src.is_char_boundary(offset) {
            offset -= 1;
        }
        let before = &src[..offset];
        let line = before.matches('\n').count() + 1;
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        let col = src[line_start..offset].chars().count() + 1;
        Location {
            file: Arc::clone(file),
            line,
            col,
        }
    }
}

/// Where each line of a source starts, to locate many offsets without
/// scanning the text from its top for each (see [`Location::of_offset`]).
#[derive(Debug, Clone)]
pub(crate) struct LineStarts(Vec<usize>);

impl LineStarts {
    pub(crate) fn new(src: &str) -> LineStarts {
        LineStarts(
            std::iter::once(0)
                .chain(src.match_indices('\n').map(|(i, _)| i + 1))
                .collect(),
        )
    }

    /// The same location as [`Location::of_offset`], in logarithmic time
    /// plus the length of one line.
    pub(crate) fn locate(&self, file: &Arc<str>, src: &str, offset: usize) -> Location {
        let mut offset = offset.min(src.len());
        while !src.is_char_boundary(offset) {
            offset -= 1;
        }
        let line = self.0.partition_point(|&s| s <= offset).max(1);
        let line_start = self.0.get(line - 1).copied().unwrap_or(0).min(offset);
        let col = src[line_start..offset].chars().count() + 1;
        Location {
            file: Arc::clone(file),
            line,
            col,
        }
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.file, self.line, self.col)
    }
}

/// How bad a diagnostic is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    /// The plan is usable, but probably not what the author meant.
    Warning,
    /// The plan cannot be used.
    Error,
}

/// One finding about a plan, with its place in the file when known.
#[derive(Debug, Clone, PartialEq)]
pub struct Diagnostic {
    /// Error or warning.
    pub severity: Severity,
    /// Where the problem is; `None` only for whole-file problems.
    pub location: Option<Location>,
    /// What is wrong.
    pub problem: Problem,
}

/// Whether `c` is a control character or a bidirectional formatting
/// character (U+200E/F marks, U+202A–U+202E embeddings and overrides,
/// U+2066–U+2069 isolates): either can make text read as something it is
/// not (a right-to-left override reverses what follows on screen).
pub fn is_control(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{200E}' | '\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
}

/// `s` with every control character except newline and tab (and every
/// bidirectional formatting character, see [`is_control`]) written as a
/// Rust escape (`\u{1b}`), so text from a file or a peer can never drive a
/// terminal or reorder what a reader sees.
pub fn escape_controls(s: &str) -> std::borrow::Cow<'_, str> {
    if !s.chars().any(|c| is_control(c) && c != '\n' && c != '\t') {
        return std::borrow::Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if is_control(c) && c != '\n' && c != '\t' {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    std::borrow::Cow::Owned(out)
}

/// `Some(escaped)` when `s` holds any control character at all.
pub(crate) fn has_controls(s: &str) -> Option<String> {
    s.chars()
        .any(is_control)
        .then(|| escape_controls(&format!("{s:?}")).into_owned())
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sev = match self.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        // Problems quote what the plan says; a control character there must
        // not reach the terminal raw.
        let problem = escape_controls(&self.problem.to_string()).into_owned();
        match &self.location {
            Some(loc) => write!(f, "{loc}: {sev}: {problem}"),
            None => write!(f, "{sev}: {problem}"),
        }
    }
}

/// Everything that can be wrong with a plan. Warnings and errors share this
/// type; [`Problem::severity`] says which is which.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum Problem {
    /// The file is not valid TOML, or a value has the wrong type or a key is
    /// unknown; the message is the TOML parser's.
    #[error("{message}{hint}{snippet}")]
    Syntax {
        /// The parser's explanation.
        message: String,
        /// An extra hint from portcall (may be empty).
        hint: String,
        /// The source line with a caret under the problem, on lines of its
        /// own after the message (empty when the position is unknown).
        snippet: String,
    },
    /// A port number is outside 1..=65535.
    #[error("{what}: {error}")]
    BadPort {
        /// What the number was for, e.g. "port `thrift` of role `wso2-das`".
        what: String,
        /// Why it is not a port.
        error: PortError,
    },
    /// A port offset is outside 0..=65535.
    #[error("port_offset {value} is out of range (expected 0..=65535)")]
    BadOffset {
        /// The offending value.
        value: i64,
    },
    /// A default setting is out of range.
    #[error("defaults.{key} = {value} is out of range (expected {expected})")]
    BadDefault {
        /// The key in `[defaults]`.
        key: &'static str,
        /// The offending value.
        value: i64,
        /// The accepted range, in words.
        expected: &'static str,
    },
    /// A text default setting that cannot be used.
    #[error("defaults.{key} = {value:?}: {why}")]
    BadDefaultText {
        /// The key in `[defaults]`.
        key: &'static str,
        /// The offending value.
        value: String,
        /// What is wrong with it.
        why: &'static str,
    },
    /// The file holds nothing but blanks and comments.
    #[error("the plan is empty (expected at least name, [[hosts]] and [[flows]])")]
    EmptyPlan,
    /// The plan's name is empty.
    #[error("name must not be empty")]
    EmptyPlanName,
    /// A name holds a control character (an escape sequence would reach
    /// every terminal that shows it).
    #[error("{what} {shown} contains a control character; names are text, not terminal commands")]
    ControlCharacter {
        /// What kind of name, e.g. "plan name".
        what: &'static str,
        /// The name, escaped.
        shown: String,
    },
    /// The flows would expand into more paths than the cap allows; nothing
    /// was expanded (the cap bounds the expander's memory).
    #[error(
        "the flows expand into {paths} paths (before merging duplicates), over the limit of {limit} from flow {flow} on; nothing was expanded: split the plan, or raise [defaults] max_paths"
    )]
    TooManyPaths {
        /// Paths the flows would produce, before merging duplicates.
        paths: u64,
        /// The flow (1-based) whose paths pass the limit.
        flow: usize,
        /// The cap.
        limit: u64,
    },
    /// A host name is not usable (empty or with characters outside
    /// `A-Za-z0-9._-`).
    #[error(
        "host name `{name}` is not valid (expected letters, digits, `.`, `_` or `-`, not starting with `-`)"
    )]
    BadHostName {
        /// The name as written.
        name: String,
    },
    /// A host takes the coordinator's certificate name.
    #[error(
        "host name `{name}` is reserved for the coordinator's certificate (pki issue --plan would give this host the coordinator's client key): rename the host"
    )]
    ReservedHostName {
        /// The name as written.
        name: String,
    },
    /// A host's address is neither an IP literal nor a DNS name.
    #[error("address `{address}` of host `{host}` is not an IPv4/IPv6 literal or a DNS name")]
    BadAddress {
        /// The host.
        host: String,
        /// The address as written.
        address: String,
    },
    /// An `ssh` destination or `ssh_user` that ssh would not take.
    #[error("{what} = `{value}`: {why}")]
    BadSsh {
        /// Which setting, e.g. "host `gw1`: ssh".
        what: String,
        /// The value as written.
        value: String,
        /// What is wrong with it.
        why: super::ssh::SshTargetError,
    },
    /// A host's address list is empty.
    #[error("host `{host}` has an empty address list; give at least one address, primary first")]
    EmptyAddressList {
        /// The host.
        host: String,
    },
    /// A host lists the same address twice.
    #[error("host `{host}` lists address {address} twice")]
    RepeatedAddress {
        /// The host.
        host: String,
        /// The repeated address.
        address: String,
    },
    /// A DNS name among several addresses: a list is of IP literals, a
    /// name stands alone (it resolves to its own families).
    #[error(
        "address `{address}` of host `{host}` is a DNS name in a list; a list holds IPv4/IPv6 literals, a DNS name stands alone (address = \"{address}\")"
    )]
    NameInAddressList {
        /// The host.
        host: String,
        /// The name as written.
        address: String,
    },
    /// A flow's quality threshold (`max_loss_pct`, `max_rtt_ms`) is out
    /// of range.
    #[error("{key} = {value} is out of range (expected {expected})")]
    BadThreshold {
        /// The key in the flow.
        key: &'static str,
        /// The offending value, as written.
        value: String,
        /// The accepted range, in words.
        expected: &'static str,
    },
    /// A flow's `family` is not one of the accepted values.
    #[error("family `{value}` is not one of ipv4, ipv6, both")]
    BadFamily {
        /// The value as written.
        value: String,
    },
    /// Two hosts have the same name.
    #[error("host `{name}` is defined twice (first at {first})")]
    DuplicateHost {
        /// The repeated name.
        name: String,
        /// Where it was first defined.
        first: Location,
    },
    /// Two hosts have the same address.
    #[error("host `{host}` has address {address}, already used by host `{other}` (at {first})")]
    DuplicateAddress {
        /// The later host.
        host: String,
        /// The shared address.
        address: String,
        /// The earlier host.
        other: String,
        /// Where the earlier host is.
        first: Location,
    },
    /// A host names a zone that `[zones]` does not declare.
    #[error("host `{host}` is in zone `{zone}`, which [zones] does not declare{suggestion}")]
    UnknownZone {
        /// The host.
        host: String,
        /// The undeclared zone.
        zone: String,
        /// "; did you mean ..." or empty.
        suggestion: Suggestion,
    },
    /// A role name is neither defined in the plan nor in the catalog.
    #[error("unknown role `{role}` (not in the plan's [roles] nor in the catalog){suggestion}")]
    UnknownRole {
        /// The name as written.
        role: String,
        /// "; did you mean ..." or empty.
        suggestion: Suggestion,
    },
    /// Roles `use` each other in a circle.
    #[error("roles use each other in a cycle: {}", chain.join(" -> "))]
    UseCycle {
        /// The roles in the cycle, the first repeated at the end.
        chain: Vec<String>,
    },
    /// One role defines a port name twice.
    #[error("role `{role}` defines port `{name}` twice")]
    DuplicatePortName {
        /// The role.
        role: String,
        /// The repeated port name.
        name: String,
    },
    /// A port's `service` needs another transport than its `protocol`
    /// (`https` on a plain TCP port, `thrift` on a TLS or UDP one).
    #[error(
        "port `{name}` of role `{role}` has service = \"{service}\" on protocol = \"{protocol}\": {service} runs over {} (set the port's protocol, or another service)",
        service.transports()
    )]
    ServiceTransport {
        /// The role.
        role: String,
        /// The port's name.
        name: String,
        /// The service as written.
        service: super::ServiceKind,
        /// The port's protocol.
        protocol: crate::port::Protocol,
    },
    /// A port name is not a usable identifier.
    #[error(
        "port name `{name}` in role `{role}` is not valid (expected letters, digits, `_` or `-`, not only digits)"
    )]
    BadPortName {
        /// The role.
        role: String,
        /// The name as written.
        name: String,
    },
    /// A port plus its offset passes 65535.
    #[error(
        "port `{port_name}` of role `{role}` on host `{host}` is {base} + offset {offset} = {sum}, above 65535"
    )]
    EffectivePortTooLarge {
        /// The host.
        host: String,
        /// The role instance.
        role: String,
        /// The port's name.
        port_name: String,
        /// The catalog or plan port before the offset.
        base: u16,
        /// The role instance's offset.
        offset: u16,
        /// The sum.
        sum: u32,
    },
    /// `port_overrides` names a port no role of the host defines.
    #[error(
        "port_overrides of host `{host}` names `{name}`, which none of its roles define (they define: {known})"
    )]
    UnknownOverride {
        /// The host.
        host: String,
        /// The unknown port name.
        name: String,
        /// The names that do exist, comma-separated.
        known: String,
    },
    /// Two role instances on one host end up on the same port.
    #[error(
        "on host `{host}`, port {port} is both `{first_port}` of role `{first_role}` and `{second_port}` of role `{second_role}`; {fix}"
    )]
    PortCollision {
        /// The host.
        host: String,
        /// The contested port.
        port: u16,
        /// The earlier role instance.
        first_role: String,
        /// Its port name.
        first_port: String,
        /// The later role instance.
        second_role: String,
        /// Its port name.
        second_port: String,
        /// How to fix it.
        fix: CollisionFix,
    },
    /// A planned port is the agents' control port.
    #[error(
        "on host `{host}`, port {port} (`{port_name}` of role `{role}`) is the agents' control_port; set [defaults] control_port to a free port"
    )]
    ControlPortCollision {
        /// The host.
        host: String,
        /// The port.
        port: u16,
        /// The role.
        role: String,
        /// The port's name.
        port_name: String,
    },
    /// A flow selector is not of the form `host:NAME`, `role:NAME`,
    /// `zone:NAME` or `all`.
    #[error("selector `{text}` is not valid (expected host:NAME, role:NAME, zone:NAME or all)")]
    BadSelector {
        /// The selector as written.
        text: String,
    },
    /// A flow selector matches no host.
    #[error("selector `{text}` matches no host{suggestion}")]
    SelectorMatchesNothing {
        /// The selector as written.
        text: String,
        /// "; did you mean ..." or empty.
        suggestion: Suggestion,
    },
    /// A flow lists no ports.
    #[error("flow has no ports (expected a list of port names or numbers)")]
    EmptyPorts,
    /// A flow port name resolves on none of the flow's target hosts.
    #[error(
        "port `{name}` is not defined by any role of the flow's targets ({targets}){suggestion}"
    )]
    UnknownPortName {
        /// The port name.
        name: String,
        /// The flow's target hosts, comma-separated.
        targets: String,
        /// "; did you mean ..." or empty.
        suggestion: Suggestion,
    },
    /// Two flows give one path opposite expectations.
    #[error(
        "path {from} -> {to}:{port} is expected {first_expect} by the flow at {first} but {second_expect} by this flow"
    )]
    ConflictingExpectations {
        /// The source host.
        from: String,
        /// The target host.
        to: String,
        /// The port.
        port: u16,
        /// The earlier flow.
        first: Location,
        /// The earlier flow's expectation.
        first_expect: &'static str,
        /// This flow's expectation.
        second_expect: &'static str,
    },
    /// A role defined in the plan is used by no host (warning).
    #[error("role `{role}` is defined but no host uses it")]
    UnusedRole {
        /// The role.
        role: String,
    },
    /// A zone has no hosts (warning).
    #[error("zone `{zone}` has no hosts")]
    ZoneWithoutHosts {
        /// The zone.
        zone: String,
    },
    /// A flow produces no path, e.g. a host to itself only (warning).
    #[error("flow produces no path (its only source is its only target)")]
    FlowWithoutPaths,
    /// One role declares the same dial (name and target role) twice.
    #[error("role `{role}` declares dial `{name}` to `{to}` twice")]
    DuplicateDial {
        /// The role.
        role: String,
        /// The dial's name.
        name: String,
        /// The target role.
        to: String,
    },
    /// `dial_overrides` names a dial no role of the host declares.
    #[error(
        "dial_overrides of host `{host}` names `{name}`, which none of its roles dial (they dial: {known})"
    )]
    UnknownDialOverride {
        /// The host.
        host: String,
        /// The unknown dial name.
        name: String,
        /// The dials that do exist, comma-separated.
        known: String,
    },
    /// A client dials a port the server does not listen on: the WSO2
    /// Thrift client/server mismatch. An error for `lint`, but it does not
    /// stop a check, which probes the dialled port.
    #[error(
        "{client} dials {name} on {client_port} ({client_how}) but {server} listens on {server_port} ({server_how}): {fix}"
    )]
    DialMismatch {
        /// The client host.
        client: String,
        /// The dial (and target port) name.
        name: String,
        /// The port the client dials.
        client_port: u16,
        /// How the client port came about, e.g. "10397 + its offset 2".
        client_how: String,
        /// The server host.
        server: String,
        /// The port the server listens on.
        server_port: u16,
        /// How the server port came about.
        server_how: String,
        /// Both ways to make them agree.
        fix: DialFix,
    },
    /// A numeric flow port is not a planned port of the target host, so no
    /// canary will hold it (warning).
    #[error(
        "port {port} is not a planned port of host `{host}`: no canary will listen there, only a live service can answer"
    )]
    UnplannedPort {
        /// The target host.
        host: String,
        /// The port.
        port: u16,
    },
}

impl Problem {
    /// Whether this error stops the plan from being used. A client/server
    /// port mismatch does not: the plan describes a deployment that will
    /// fail, and a check must still be able to measure it.
    pub fn blocks_plan(&self) -> bool {
        !matches!(self, Problem::DialMismatch { .. })
    }

    /// Whether this problem makes the plan unusable.
    pub fn severity(&self) -> Severity {
        match self {
            Problem::UnusedRole { .. }
            | Problem::ZoneWithoutHosts { .. }
            | Problem::FlowWithoutPaths
            | Problem::UnplannedPort { .. } => Severity::Warning,
            _ => Severity::Error,
        }
    }
}

/// How to resolve a port collision.
#[derive(Debug, Clone, PartialEq)]
pub enum CollisionFix {
    /// Give a role instance of the pair this offset. The offsets of every
    /// collision on the host are computed together, so applying all of them
    /// at once clears them all (`roles` is the host's list with them).
    Offset {
        /// The role instance to move.
        role: String,
        /// The offset to use.
        offset: u16,
        /// Every role instance of the host with the offsets that clear all
        /// its collisions at once.
        roles: Vec<super::instance::RoleInstance>,
        /// The host's own `port_offset` (items at this offset need no
        /// explicit one).
        host_offset: u16,
    },
    /// No offset helps (the colliding port is not offset-able, or no offset
    /// stays below 65536); a `port_overrides` entry is needed.
    Override {
        /// The port name to pin.
        port_name: String,
    },
}

impl fmt::Display for CollisionFix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CollisionFix::Offset {
                role,
                offset,
                roles,
                host_offset,
            } => {
                let items: Vec<String> = roles
                    .iter()
                    .map(|r| {
                        if r.port_offset == *host_offset {
                            format!("\"{}\"", r.role)
                        } else {
                            format!(
                                "{{ role = \"{}\", port_offset = {} }}",
                                r.role, r.port_offset
                            )
                        }
                    })
                    .collect();
                write!(
                    f,
                    "give `{role}` port_offset = {offset}; every collision on this host clears at once with roles = [{}]",
                    items.join(", ")
                )
            }
            CollisionFix::Override { port_name } => write!(
                f,
                "no offset resolves it because the port is not offset-able; pin one with port_overrides = {{ {port_name} = PORT }}"
            ),
        }
    }
}

/// The two ways to make a client and a server agree on a port: the client
/// dials the server's port, or the server listens on the client's.
#[derive(Debug, Clone, PartialEq)]
pub struct DialFix {
    /// The client host.
    pub client: String,
    /// The server host.
    pub server: String,
    /// The dial (and port) name.
    pub name: String,
    /// The product's client setting, if the catalog names it.
    pub client_setting: Option<String>,
    /// The product's server setting, if the catalog names it.
    pub server_setting: Option<String>,
    /// The port the client dials.
    pub client_port: u16,
    /// The port the server listens on.
    pub server_port: u16,
}

impl fmt::Display for DialFix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let DialFix {
            client,
            server,
            name,
            client_port,
            server_port,
            ..
        } = self;
        let client_plan = format!("dial_overrides = {{ {name} = {server_port} }}");
        let server_plan = format!("port_overrides = {{ {name} = {client_port} }}");
        f.write_str("set ")?;
        match &self.client_setting {
            Some(s) => write!(f, "{s} {server_port} on {client} (plan: {client_plan})")?,
            None => write!(f, "{client_plan} on {client}")?,
        }
        f.write_str(", or ")?;
        match &self.server_setting {
            Some(s) => write!(f, "{s} {client_port} on {server} (plan: {server_plan})"),
            None => write!(f, "{server_plan} on {server}"),
        }
    }
}

/// A "did you mean" hint; displays as nothing when there is no close match.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Suggestion(pub Option<String>);

impl Suggestion {
    /// The closest of `candidates` to `word`, if one is close enough to be a
    /// likely typo.
    pub fn closest<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> Suggestion {
        let best = candidates
            .into_iter()
            .map(|c| (edit_distance(word, c), c))
            .filter(|(d, c)| *d > 0 && *d <= (word.len().max(c.len()) / 3).max(1))
            .min_by_key(|(d, _)| *d);
        Suggestion(best.map(|(_, c)| c.to_owned()))
    }
}

impl fmt::Display for Suggestion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            Some(s) => write!(f, "; did you mean `{s}`?"),
            None => Ok(()),
        }
    }
}

/// Levenshtein distance, for typo suggestions.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            cur[j + 1] = (prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn location_counts_lines_and_chars() {
        let f: Arc<str> = Arc::from("p.toml");
        let src = "a = 1\nbé = 2\n";
        let loc = Location::of_offset(&f, src, src.find('2').unwrap());
        assert_eq!((loc.line, loc.col), (2, 6));
        assert_eq!(Location::of_offset(&f, src, 0).to_string(), "p.toml:1:1");
        // Offsets past the end or inside a character do not panic.
        let _ = Location::of_offset(&f, src, 999);
        let _ = Location::of_offset(&f, src, 8);
        // The line index agrees with the scan at every offset.
        for src in [src, "", "\n\n", "x\ny\n\nzé\n", "no newline"] {
            let lines = LineStarts::new(src);
            for o in 0..src.len() + 3 {
                assert_eq!(
                    lines.locate(&f, src, o),
                    Location::of_offset(&f, src, o),
                    "{src:?} at {o}"
                );
            }
        }
    }

    #[test]
    fn bidirectional_controls_are_escaped_like_control_characters() {
        // U+202E reverses what follows on screen: "evil\u{202E}txt.exe"
        // reads as "evilexe.txt".
        for c in [
            '\u{202A}', '\u{202E}', '\u{2066}', '\u{2069}', '\u{200E}', '\u{200F}',
        ] {
            let s = format!("db{c}-1");
            let e = escape_controls(&s);
            assert!(!e.contains(c), "{c:?} passed: {e}");
            assert!(e.contains("\\u{"), "{e}");
            assert!(has_controls(&s).is_some_and(|shown| !shown.contains(c)));
        }
        assert_eq!(escape_controls("plain\ttext é"), "plain\ttext é");
    }

    #[test]
    fn suggestion_finds_typos_only() {
        let c = ["wso2-das", "wso2-esb", "mariadb"];
        assert_eq!(
            Suggestion::closest("wso2-dsa", c).0.as_deref(),
            Some("wso2-das")
        );
        assert_eq!(Suggestion::closest("postgres-xyz", c).0, None);
    }
}
