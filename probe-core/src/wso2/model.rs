//! What a scan finds, as data: the installations with their ports and
//! dials, the client/server mismatches, the differences and the endpoints
//! outside the scan (the `portcall.wso2/v1` JSON shape). A leaf below
//! `install`, `matching`, `plan_out` and `scan`, which all build or read
//! these types.

use serde::Serialize;

use crate::port::Protocol;

/// The `schema` value of scan JSON.
pub const SCHEMA: &str = "portcall.wso2/v1";

/// Everything a scan found.
#[derive(Debug, Clone, Serialize)]
pub struct Scan {
    /// [`SCHEMA`].
    pub schema: &'static str,
    /// One entry per `HOST=PRODUCT_HOME`, in argument order.
    pub installs: Vec<Install>,
    /// Clients dialling a port their server does not listen on.
    pub mismatches: Vec<Mismatch>,
    /// Dials to nothing, and (with `--plan`) every way the plan and the
    /// installations disagree.
    pub differences: Vec<Difference>,
    /// Endpoints dialled on hosts that no scanned installation claims.
    pub outside: Vec<Outside>,
}

/// One installation.
#[derive(Debug, Clone, Serialize)]
pub struct Install {
    /// The name given on the command line (`NAME=`).
    pub host: String,
    /// The host names its own files give it (`carbon.xml <HostName>`,
    /// `<MgtHostName>`, `deployment.toml [server] hostname`, `node_ip`).
    pub names: Vec<String>,
    /// The product home as given.
    pub home: String,
    /// The product, as `carbon.xml` names it or as the files tell.
    pub product: String,
    /// The API-M profile, when it can be told.
    pub profile: Option<String>,
    /// Where the profile comes from: `-Dprofile (file:line)`,
    /// `[server] server_role (file:line)`, `inferred: …` or `none given`.
    pub profile_source: String,
    /// The catalog role this installation plays.
    pub role: String,
    /// The port offset in effect.
    pub offset: u16,
    /// Where the offset comes from (`file:line`), or `default`.
    pub offset_source: String,
    /// Every server port it will open.
    pub ports: Vec<PortFinding>,
    /// Every endpoint it will dial.
    pub dials: Vec<DialFinding>,
    /// Placeholders its settings use that no scanned file sets.
    pub unresolved: Vec<String>,
    #[serde(skip)]
    pub(crate) cluster: bool,
}

impl Install {
    /// Does `host` name this installation (its `NAME=` or its own names)?
    pub fn answers_to(&self, host: &str) -> bool {
        self.host.eq_ignore_ascii_case(host)
            || self.names.iter().any(|n| n.eq_ignore_ascii_case(host))
    }
}

/// A port an installation will open.
#[derive(Debug, Clone, Serialize)]
pub struct PortFinding {
    /// The catalog's name for it.
    pub name: String,
    /// The number it will listen on.
    pub port: u16,
    /// TCP or TLS.
    pub protocol: Protocol,
    /// The setting that decides it, `file:line` (or `default`).
    pub source: String,
    /// How the number comes about, e.g. "default 10397 + offset 5".
    pub how: String,
    /// The product's setting that would pin it, for fixes.
    #[serde(skip)]
    pub(crate) setting: Option<String>,
    /// The port before the offset, when the offset moves it.
    #[serde(skip)]
    pub(crate) base: Option<u16>,
}

/// An endpoint an installation will dial.
#[derive(Debug, Clone, Serialize)]
pub struct DialFinding {
    /// The port name it reaches (the catalog's name on the server).
    pub name: String,
    /// The host it dials, as configured.
    pub to_host: String,
    /// The port it dials.
    pub to_port: u16,
    /// The setting, `file:line`.
    pub source: String,
    /// How the port comes about, e.g. "ThriftClientPort" or "default 10397
    /// + offset 2".
    pub how: String,
    /// The database type of a JDBC URL (`mysql`, `postgresql`, …).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub database: Option<String>,
    /// What the host is: `local` (the node itself), the `NAME` of the
    /// scanned installation that claims it, or `outside` the scan.
    pub reaches: String,
    /// The product's setting for the client side, for fixes.
    #[serde(skip)]
    pub(crate) setting: String,
}

/// A client that dials a port its server does not listen on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Mismatch {
    /// The client installation.
    pub client_host: String,
    /// The server installation.
    pub server_host: String,
    /// The host name the client dials (one of the server's names).
    pub dialled_host: String,
    /// The port name.
    pub name: String,
    /// The port the client dials.
    pub client_port: u16,
    /// The port the server listens on.
    pub server_port: u16,
    /// Both ways to make them agree.
    pub fix: String,
}

/// A disagreement that is not a named client/server pair: a dial to
/// nothing, or a difference from the plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Difference {
    /// The installation (or plan host) concerned.
    pub host: String,
    /// `dial-to-nothing`, `port-not-opened`, `port-not-planned`,
    /// `dial-differs`, `dial-not-planned`, `dial-not-configured`,
    /// `offset-differs` or `host-not-in-plan`.
    pub kind: &'static str,
    /// What differs, in words, with `file:line` where there is one.
    pub detail: String,
}

/// An endpoint on a host no scanned installation claims.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Outside {
    /// The host, as configured.
    pub host: String,
    /// The port.
    pub port: u16,
    /// The port name.
    pub name: String,
    /// The database type, for a JDBC URL.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub database: Option<String>,
    /// `NAME (file:line)` of every installation that dials it.
    pub dialled_by: Vec<String>,
}

impl Scan {
    /// 1 when anything disagrees, else 0.
    pub fn exit_code(&self) -> u8 {
        u8::from(!self.mismatches.is_empty() || !self.differences.is_empty())
    }
}
