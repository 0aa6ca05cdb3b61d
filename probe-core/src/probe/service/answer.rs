//! The typed results of a protocol probe, shared by every protocol file
//! and read by the join: the proof level, what answered, the judgement.

use serde::{Deserialize, Serialize};

use super::io::End;
use crate::plan::ServiceKind;

/// An answer a protocol file did not recognise as its own: the bytes and
/// how the read ended, for [`super::sniff`] to say what answered instead.
pub(super) struct Unrecognised {
    pub(super) bytes: Vec<u8>,
    pub(super) end: End,
    pub(super) waited_ms: u128,
}

/// A protocol file's judgement: its own check, or the answer it did not
/// recognise.
pub(super) type Judged = Result<ServiceCheck, Unrecognised>;

/// The answer of `bytes` was not the protocol's.
pub(super) fn unrecognised(bytes: Vec<u8>, end: End, started: tokio::time::Instant) -> Judged {
    Err(Unrecognised {
        bytes,
        end,
        waited_ms: started.elapsed().as_millis(),
    })
}

/// How far a connected path proved the planned service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Proof {
    /// The connection completed; nothing more is proven (no protocol was
    /// planned, or the planned one did not answer).
    #[serde(rename = "l4")]
    L4,
    /// The planned protocol answered.
    #[serde(rename = "identified")]
    Identified,
    /// The planned protocol's own "ready" answer was read.
    #[serde(rename = "healthy")]
    Healthy,
}

impl Proof {
    /// `l4`, `identified` or `healthy`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Proof::L4 => "l4",
            Proof::Identified => "identified",
            Proof::Healthy => "healthy",
        }
    }

    /// The metric value: 1, 2 or 3 (0 is left for "did not connect").
    pub const fn level(self) -> u8 {
        match self {
            Proof::L4 => 1,
            Proof::Identified => 2,
            Proof::Healthy => 3,
        }
    }
}

impl std::fmt::Display for Proof {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What answered on a port, as read from its bytes: the report's
/// `service_answer`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceAnswer {
    /// The protocol the answer is in: `http`, `https`, `thrift`, `amqp`,
    /// `mysql`, `tls`, `ssh`, or `unknown`.
    pub protocol: String,
    /// The product it names (`Server` header, AMQP `product`, `MariaDB`).
    #[serde(default)]
    pub product: Option<String>,
    /// Its version, where the answer gives one.
    #[serde(default)]
    pub version: Option<String>,
    /// The protocol's own status: an HTTP status code, a MySQL error
    /// code, a Thrift exception type.
    #[serde(default)]
    pub status: Option<String>,
    /// The rest in words (a redirect's target, an error's message).
    #[serde(default)]
    pub detail: String,
}

impl ServiceAnswer {
    /// An answer of `protocol` with nothing else known yet.
    pub(crate) fn of(protocol: &str) -> ServiceAnswer {
        ServiceAnswer {
            protocol: protocol.to_owned(),
            product: None,
            version: None,
            status: None,
            detail: String::new(),
        }
    }

    /// One line for people: `http 302 (Apache-Coyote/1.1): redirect to /carbon/`.
    pub fn summary(&self) -> String {
        let mut s = self.protocol.clone();
        if let Some(st) = &self.status {
            s.push(' ');
            s.push_str(st);
        }
        match (&self.product, &self.version) {
            (Some(p), Some(v)) => s.push_str(&format!(" ({p} {v})")),
            (Some(p), None) => s.push_str(&format!(" ({p})")),
            (None, Some(v)) => s.push_str(&format!(" ({v})")),
            (None, None) => {}
        }
        if !self.detail.is_empty() {
            s.push_str(": ");
            s.push_str(&self.detail);
        }
        s
    }
}

/// The judgement of one protocol probe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceCheck {
    /// How far the planned service is proven.
    pub proof: Proof,
    /// What answered, where anything did.
    pub answer: Option<ServiceAnswer>,
    /// Set when the port answered as another service than planned (or
    /// not at all where the protocol must answer): why, in words.
    pub wrong: Option<String>,
    /// The request must be repeated on a new connection in another form
    /// (HTTP `GET` after `HEAD` was refused, Thrift framed after the
    /// unframed call was dropped); the next pass does.
    pub again: Option<Retry>,
}

/// The form of a second request, on a new connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retry {
    /// HTTP `GET` (the server refused `HEAD` with 405 or 501).
    HttpGet,
    /// Thrift with a frame length (the unframed call got no answer).
    ThriftFramed,
}

impl ServiceCheck {
    pub(super) fn wrong(answer: Option<ServiceAnswer>, why: String) -> ServiceCheck {
        ServiceCheck {
            proof: Proof::L4,
            answer,
            wrong: Some(why),
            again: None,
        }
    }

    pub(super) fn proven(proof: Proof, answer: ServiceAnswer) -> ServiceCheck {
        ServiceCheck {
            proof,
            answer: Some(answer),
            wrong: None,
            again: None,
        }
    }
}

/// What to prove on one target: its planned service and the host name an
/// HTTP request names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServicePlan {
    /// The planned service.
    pub kind: ServiceKind,
    /// The planned host name (HTTP `Host`).
    pub host: String,
    /// Whether the plan said `service` (else it was inferred from the
    /// port's name): only a planned service makes a `wrong-service`; an
    /// inferred one is read for evidence and never accuses.
    pub planned: bool,
}

impl ServicePlan {
    /// The plan of a path to `host` whose port is `port_name`, planned as
    /// `kind`: the planned service, else the one its name implies
    /// ([`ServiceKind::inferred`]); `None` when neither says, or `none`.
    pub fn of(kind: Option<ServiceKind>, port_name: &str, host: &str) -> Option<ServicePlan> {
        let (kind, planned) = match kind {
            Some(k) => (k, true),
            None => (ServiceKind::inferred(port_name)?, false),
        };
        (kind != ServiceKind::None).then(|| ServicePlan {
            kind,
            host: host.to_owned(),
            planned,
        })
    }
}
