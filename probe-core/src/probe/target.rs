//! Probe targets and their command-line grammar (`host:port`, lists,
//! ranges, `/tls`, `/udp`, bracketed IPv6), so that every caller names a target the
//! same way and bad input is rejected with the offending text.

use std::fmt;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::Arc;

use crate::port::{Port, PortError, PortRange, Protocol};

/// Where a target lives: an address literal or a DNS name resolved at probe
/// time.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Host {
    /// An IPv4 or IPv6 literal.
    Ip(IpAddr),
    /// A DNS name (also used as the TLS server name).
    Name(Arc<str>),
}

/// A plan address as a probe host: the literal, or the name resolved at
/// probe time.
impl From<&crate::plan::Address> for Host {
    fn from(address: &crate::plan::Address) -> Host {
        match address {
            crate::plan::Address::Ip(ip) => Host::Ip(*ip),
            crate::plan::Address::Dns(name) => Host::Name(Arc::from(name.as_str())),
        }
    }
}

impl fmt::Display for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Host::Ip(IpAddr::V6(a)) => write!(f, "[{a}]"),
            Host::Ip(IpAddr::V4(a)) => write!(f, "{a}"),
            Host::Name(n) => f.write_str(n),
        }
    }
}

/// One thing to probe: a host, a port and how to speak to it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Target {
    /// The host.
    pub host: Host,
    /// The port.
    pub port: Port,
    /// Bare TCP, TCP then TLS, or UDP.
    pub protocol: Protocol,
    /// The TLS server name to send (SNI) and check the certificate against
    /// when it differs from the host, e.g. an agent probing a plan host's
    /// address by its name. `None` uses the host's name, if it has one.
    pub server_name: Option<Arc<str>>,
}

impl Target {
    /// A target with no separate TLS server name.
    pub fn new(host: Host, port: Port, protocol: Protocol) -> Target {
        Target {
            host,
            port,
            protocol,
            server_name: None,
        }
    }

    /// The same target, with a TLS server name to use instead of the host.
    pub fn with_server_name(mut self, name: impl Into<Arc<str>>) -> Target {
        self.server_name = Some(name.into());
        self
    }

    /// The name to send as SNI and check the certificate against, if any.
    pub fn tls_name(&self) -> Option<&str> {
        match (&self.server_name, &self.host) {
            (Some(n), _) => Some(n),
            (None, Host::Name(n)) => Some(n),
            (None, Host::Ip(_)) => None,
        }
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.host, self.port)?;
        if self.protocol != Protocol::Tcp {
            write!(f, "/{}", self.protocol)?;
        }
        Ok(())
    }
}

/// Why a target specification was rejected. Every variant carries the whole
/// specification so the message names it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TargetError {
    /// No `:port` part.
    #[error("target {spec:?}: expected HOST:PORT (e.g. db1:3306 or [::1]:443)")]
    MissingPort {
        /// The specification as given.
        spec: String,
    },
    /// The host part is empty or not an address or DNS name.
    #[error("target {spec:?}: {host:?} is not an IPv4 address, bracketed IPv6 address or DNS name")]
    BadHost {
        /// The specification as given.
        spec: String,
        /// The host part.
        host: String,
    },
    /// An IPv6 address without brackets, where the port cannot be told apart.
    #[error("target {spec:?}: an IPv6 address needs brackets, e.g. [::1]:443")]
    UnbracketedIpv6 {
        /// The specification as given.
        spec: String,
    },
    /// A port item that is not a number.
    #[error("target {spec:?}: {item:?} is not a port number, list or range")]
    BadPortSyntax {
        /// The specification as given.
        spec: String,
        /// The offending item of the port list.
        item: String,
    },
    /// A port number out of range.
    #[error("target {spec:?}: {error}")]
    BadPort {
        /// The specification as given.
        spec: String,
        /// Why the number is not a port.
        error: PortError,
    },
    /// A range whose end is below its start.
    #[error("target {spec:?}: range {item:?} ends before it starts")]
    BackwardRange {
        /// The specification as given.
        spec: String,
        /// The offending range.
        item: String,
    },
    /// A `/suffix` other than `/tcp`, `/tls` or `/udp`.
    #[error("target {spec:?}: unknown protocol {proto:?} (expected tcp, tls or udp)")]
    BadProtocol {
        /// The specification as given.
        spec: String,
        /// The suffix after `/`.
        proto: String,
    },
}

/// A target file that could not be read as targets.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TargetListError {
    /// One entry of the list is not a valid target.
    #[error("line {line}: {error}")]
    Entry {
        /// 1-based line number.
        line: usize,
        /// What is wrong with the entry.
        error: TargetError,
    },
}

/// Expands one specification such as `db1:3306`, `host:7611,7711/tls`,
/// `198.18.0.5:30000-30999` or `[::1]:443` into targets, in the order given.
pub fn parse_target(spec: &str) -> Result<Vec<Target>, TargetError> {
    let owned = || spec.to_string();
    let s = spec.trim();
    let (s, protocol) = match s.rsplit_once('/') {
        Some((rest, proto)) => {
            let protocol = match proto.to_ascii_lowercase().as_str() {
                "tcp" => Protocol::Tcp,
                "tls" => Protocol::Tls,
                "udp" => Protocol::Udp,
                _ => {
                    return Err(TargetError::BadProtocol {
                        spec: owned(),
                        proto: proto.to_string(),
                    });
                }
            };
            (rest, protocol)
        }
        None => (s, Protocol::Tcp),
    };
    let (host, ports) = split_host_port(spec, s)?;
    let mut out = Vec::new();
    for item in ports.split(',') {
        for port in parse_port_item(spec, item.trim())?.iter() {
            out.push(Target::new(host.clone(), port, protocol));
        }
    }
    Ok(out)
}

/// Reads a target list: whitespace-separated specifications, `#` starts a
/// comment that runs to the end of the line.
pub fn parse_target_list(text: &str) -> Result<Vec<Target>, TargetListError> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or("");
        for spec in line.split_whitespace() {
            let targets = parse_target(spec)
                .map_err(|error| TargetListError::Entry { line: i + 1, error })?;
            out.extend(targets);
        }
    }
    Ok(out)
}

fn split_host_port<'a>(spec: &str, s: &'a str) -> Result<(Host, &'a str), TargetError> {
    if let Some(rest) = s.strip_prefix('[') {
        let (addr, after) = rest.split_once(']').ok_or_else(|| TargetError::BadHost {
            spec: spec.to_string(),
            host: s.to_string(),
        })?;
        let ip: Ipv6Addr = addr.parse().map_err(|_| TargetError::BadHost {
            spec: spec.to_string(),
            host: format!("[{addr}]"),
        })?;
        let ports = after
            .strip_prefix(':')
            .filter(|p| !p.is_empty())
            .ok_or_else(|| TargetError::MissingPort {
                spec: spec.to_string(),
            })?;
        return Ok((Host::Ip(IpAddr::V6(ip)), ports));
    }
    if s.matches(':').count() > 1 {
        return Err(TargetError::UnbracketedIpv6 {
            spec: spec.to_string(),
        });
    }
    let (host, ports) = s
        .split_once(':')
        .filter(|(_, p)| !p.is_empty())
        .ok_or_else(|| TargetError::MissingPort {
            spec: spec.to_string(),
        })?;
    let bad_host = || TargetError::BadHost {
        spec: spec.to_string(),
        host: host.to_string(),
    };
    let host = if host.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        // All digits and dots: an IPv4 literal or nothing (never a DNS name,
        // which would make "198.18.0.256" silently resolve elsewhere).
        Host::Ip(IpAddr::V4(host.parse().map_err(|_| bad_host())?))
    } else if is_dns_name(host) {
        Host::Name(Arc::from(host.to_ascii_lowercase()))
    } else {
        return Err(bad_host());
    };
    Ok((host, ports))
}

fn is_dns_name(s: &str) -> bool {
    let s = s.strip_suffix('.').unwrap_or(s);
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

fn parse_port_item(spec: &str, item: &str) -> Result<PortRange, TargetError> {
    let number = |text: &str| -> Result<Port, TargetError> {
        if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
            return Err(TargetError::BadPortSyntax {
                spec: spec.to_string(),
                item: item.to_string(),
            });
        }
        // More digits than fit in u64 are certainly above 65535.
        let n = text.parse::<u64>().unwrap_or(u64::MAX);
        Port::from_u64(n).map_err(|error| TargetError::BadPort {
            spec: spec.to_string(),
            error,
        })
    };
    match item.split_once('-') {
        Some((a, b)) => {
            let (a, b) = (number(a.trim())?, number(b.trim())?);
            PortRange::new(a, b).ok_or_else(|| TargetError::BackwardRange {
                spec: spec.to_string(),
                item: item.to_string(),
            })
        }
        None => {
            let p = number(item)?;
            Ok(PortRange::new(p, p).expect("a one-port range is never backward"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn render(spec: &str) -> Vec<String> {
        parse_target(spec)
            .unwrap()
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    #[test]
    fn grammar_covers_names_lists_ranges_tls_and_ipv6() {
        assert_eq!(render("db1:3306"), ["db1:3306"]);
        assert_eq!(render("198.18.0.5:9443/tls"), ["198.18.0.5:9443/tls"]);
        assert_eq!(render("host:7611,7711"), ["host:7611", "host:7711"]);
        assert_eq!(render("h:80/tcp"), ["h:80"]);
        assert_eq!(
            render("Example.COM:30000-30002"),
            [
                "example.com:30000",
                "example.com:30001",
                "example.com:30002"
            ]
        );
        assert_eq!(render("[::1]:443/TLS"), ["[::1]:443/tls"]);
        assert_eq!(render("[::1]:1,5-6"), ["[::1]:1", "[::1]:5", "[::1]:6"]);
        assert_eq!(
            render("198.18.0.5:53,123/UDP"),
            ["198.18.0.5:53/udp", "198.18.0.5:123/udp"]
        );
        assert_eq!(render("h:7000-7001/udp"), ["h:7000/udp", "h:7001/udp"]);
        assert_eq!(parse_target("h:53/udp").unwrap()[0].protocol, Protocol::Udp);
        assert_eq!(parse_target("h:65535-65535").unwrap().len(), 1);
        assert_eq!(parse_target("h:1-65535").unwrap().len(), 65535);
    }

    #[test]
    fn plan_addresses_become_hosts() {
        use crate::plan::Address;
        let ip: IpAddr = "2001:2::1".parse().unwrap();
        assert_eq!(Host::from(&Address::Ip(ip)), Host::Ip(ip));
        assert_eq!(
            Host::from(&Address::Dns("db.internal".into())),
            Host::Name(Arc::from("db.internal"))
        );
    }

    #[test]
    fn ip_hosts_have_no_tls_name_unless_given() {
        let t = &parse_target("127.0.0.1:443/tls").unwrap()[0];
        assert_eq!(t.host, Host::Ip("127.0.0.1".parse().unwrap()));
        assert_eq!(t.tls_name(), None);
        assert_eq!(t.clone().with_server_name("db1").tls_name(), Some("db1"));
        let t = &parse_target("db1:443/tls").unwrap()[0];
        assert_eq!(t.tls_name(), Some("db1"));
        assert_eq!(t.protocol, Protocol::Tls);
    }

    #[test]
    fn bad_targets_are_rejected_with_the_spec_named() {
        let cases: &[(&str, &str)] = &[
            ("db1", "expected HOST:PORT"),
            ("db1:", "expected HOST:PORT"),
            (":80", "is not an IPv4 address"),
            ("db1:0", "port 0"),
            ("db1:65536", "above 65535"),
            ("db1:99999999999999999999999", "above 65535"),
            ("db1:http", "is not a port number"),
            ("db1:80,", "is not a port number"),
            ("db1:90-80", "ends before it starts"),
            ("db1:80/sctp", "unknown protocol"),
            ("::1:443", "needs brackets"),
            ("[::1:443", "is not an IPv4 address"),
            ("[::1]443", "expected HOST:PORT"),
            ("[zz]:443", "is not an IPv4 address"),
            ("198.18.0.256:80", "is not an IPv4 address"),
            ("bad host:80", "is not an IPv4 address"),
            ("-bad:80", "is not an IPv4 address"),
        ];
        for (spec, want) in cases {
            let err = parse_target(spec).expect_err(spec).to_string();
            assert!(err.contains(want), "{spec}: {err}");
            assert!(err.contains(&format!("{spec:?}")), "{spec}: {err}");
        }
    }

    #[test]
    fn target_lists_skip_comments_and_name_the_bad_line() {
        let text = "# targets\ndb1:3306 db2:3306\n\n[::1]:443/tls # local\n";
        let v = parse_target_list(text).unwrap();
        assert_eq!(v.len(), 3);
        assert_eq!(v[2].to_string(), "[::1]:443/tls");
        let err = parse_target_list("a:1\nb:0\n").unwrap_err().to_string();
        assert!(err.starts_with("line 2: target \"b:0\""), "{err}");
    }
}
