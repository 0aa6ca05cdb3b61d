//! What a planned port must answer with: the `service` key of a port
//! (`http`, `https`, `thrift`, `amqp`, `mysql`, `tls`, `none`). It selects
//! the protocol probe that proves the right service answered where a real
//! service holds the port (`probe::service`), so that an open port is not
//! taken for the planned service.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::port::Protocol;

/// The application protocol a planned port speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ServiceKind {
    /// HTTP/1.1 in clear: one `HEAD` (a `GET` where `HEAD` is refused).
    Http,
    /// HTTP/1.1 over TLS (the port's `protocol` is `tls`).
    Https,
    /// Apache Thrift's binary protocol, framed or unframed.
    Thrift,
    /// AMQP 0-9-1: the protocol header, then the server's `Connection.Start`.
    Amqp,
    /// MySQL or MariaDB: the server's greeting.
    Mysql,
    /// A TLS server and nothing more is known (the handshake is the proof).
    Tls,
    /// No protocol probe: the connection is the whole proof.
    None,
}

impl ServiceKind {
    /// Every kind, in declaration order.
    pub const ALL: [ServiceKind; 7] = [
        ServiceKind::Http,
        ServiceKind::Https,
        ServiceKind::Thrift,
        ServiceKind::Amqp,
        ServiceKind::Mysql,
        ServiceKind::Tls,
        ServiceKind::None,
    ];

    /// The lowercase name used in plans and reports.
    pub const fn as_str(self) -> &'static str {
        match self {
            ServiceKind::Http => "http",
            ServiceKind::Https => "https",
            ServiceKind::Thrift => "thrift",
            ServiceKind::Amqp => "amqp",
            ServiceKind::Mysql => "mysql",
            ServiceKind::Tls => "tls",
            ServiceKind::None => "none",
        }
    }

    /// Whether the service can run on a port of `protocol`: `https` and
    /// `tls` only over TLS, `http` and `mysql` only over plain TCP,
    /// `thrift` and `amqp` over either (WSO2's key manager serves Thrift
    /// inside TLS), `none` over anything.
    pub const fn runs_over(self, protocol: Protocol) -> bool {
        match self {
            ServiceKind::Https | ServiceKind::Tls => matches!(protocol, Protocol::Tls),
            ServiceKind::Http | ServiceKind::Mysql => matches!(protocol, Protocol::Tcp),
            ServiceKind::Thrift | ServiceKind::Amqp => protocol.is_tcp(),
            ServiceKind::None => true,
        }
    }

    /// The protocols it runs over, in words, for diagnostics.
    pub const fn transports(self) -> &'static str {
        match self {
            ServiceKind::Https | ServiceKind::Tls => "\"tls\"",
            ServiceKind::Http | ServiceKind::Mysql => "\"tcp\"",
            ServiceKind::Thrift | ServiceKind::Amqp => "\"tcp\" or \"tls\"",
            ServiceKind::None => "any protocol",
        }
    }

    /// The kind a port without a `service` key is taken to speak: a port
    /// named `mysql` or `mariadb` greets as MySQL (as portcall always read
    /// it); any other is `None` here, so only the connection is proven.
    pub fn inferred(port_name: &str) -> Option<ServiceKind> {
        match port_name {
            "mysql" | "mariadb" => Some(ServiceKind::Mysql),
            _ => None,
        }
    }
}

impl fmt::Display for ServiceKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_serialize_as_their_plan_names() {
        for k in ServiceKind::ALL {
            let json = serde_json::to_string(&k).unwrap();
            assert_eq!(json, format!("\"{}\"", k.as_str()));
            assert_eq!(serde_json::from_str::<ServiceKind>(&json).unwrap(), k);
        }
        assert!(ServiceKind::Https.runs_over(Protocol::Tls));
        assert!(!ServiceKind::Https.runs_over(Protocol::Tcp));
        assert!(ServiceKind::Thrift.runs_over(Protocol::Tls));
        assert!(!ServiceKind::Thrift.runs_over(Protocol::Udp));
        assert!(!ServiceKind::Http.runs_over(Protocol::Tls));
        assert!(ServiceKind::None.runs_over(Protocol::Udp));
        assert_eq!(ServiceKind::inferred("mysql"), Some(ServiceKind::Mysql));
        assert_eq!(ServiceKind::inferred("thrift-km"), None);
    }
}
