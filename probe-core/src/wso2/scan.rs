//! `portcall wso2 scan`: reads each installation's files, works out its
//! offset, the names it answers to, the ports it will open and the
//! endpoints it will dial, then matches every dial to the installation
//! that claims its host (client/server mismatches, dials outside the
//! scan) and, when given, compares with a plan. Renders `portcall.wso2/v1`
//! JSON, a table, or a plan in TOML.

use std::io::{self, Write};
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::install::{self, Files};
use super::{ScanError, matching, plan_out};
use crate::plan::Plan;
use crate::port::Protocol;
use crate::render::Table;

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

/// Splits `HOST=PRODUCT_HOME`.
pub fn parse_arg(arg: &str) -> Result<(String, PathBuf), ScanError> {
    match arg.split_once('=') {
        Some((h, p))
            if !h.is_empty()
                && !p.is_empty()
                && !h.contains(['/', ' '])
                && !h.chars().any(char::is_control) =>
        {
            Ok((h.to_owned(), PathBuf::from(p)))
        }
        _ => Err(ScanError::BadArgument {
            arg: arg.to_owned(),
        }),
    }
}

/// Scans every installation and compares them (and the plan, if any).
pub fn scan(installs: &[(String, PathBuf)], plan: Option<&Plan>) -> Result<Scan, ScanError> {
    let mut out: Vec<Install> = Vec::new();
    let mut files: Vec<Files> = Vec::new();
    for (host, home) in installs {
        if out.iter().any(|i| &i.host == host) {
            return Err(ScanError::DuplicateHost { host: host.clone() });
        }
        let (i, f) = read_install(host, home)?;
        out.push(i);
        files.push(f);
    }
    matching::reach(&mut out, plan);
    if matching::refine_roles(&mut out) {
        for (i, f) in out.iter_mut().zip(&files) {
            i.ports = install::ports(i, f);
        }
    }
    full_distribution(&mut out, &files);
    let mut differences = Vec::new();
    let mismatches = matching::compare(&out, &mut differences);
    let outside = matching::outside(&out);
    if let Some(plan) = plan {
        plan_out::differences(&out, plan, &mut differences);
    }
    Ok(Scan {
        schema: SCHEMA,
        installs: out,
        mismatches,
        differences,
        outside,
    })
}

/// Adds to each node started without `-Dprofile` the ports of the full
/// distribution that its peers dial.
fn full_distribution(installs: &mut [Install], files: &[Files]) {
    for s in 0..installs.len() {
        let wanted: Vec<String> = installs
            .iter()
            .flat_map(|c| c.dials.iter())
            .filter(|d| d.reaches == installs[s].host)
            .filter(|d| !installs[s].ports.iter().any(|p| p.name == d.name))
            .map(|d| d.name.clone())
            .collect();
        for name in wanted {
            if installs[s].ports.iter().any(|p| p.name == name) {
                continue;
            }
            if let Some(p) = install::full_distribution_port(&installs[s], &files[s], &name) {
                installs[s].ports.push(p);
            }
        }
    }
}

fn read_install(host: &str, home: &Path) -> Result<(Install, Files), ScanError> {
    let f = install::read_files(home)?;
    let names: Vec<String> = install::names(&f)
        .into_iter()
        .map(|s| s.value)
        .filter(|n| !n.eq_ignore_ascii_case(host))
        .collect();
    let id = install::identify(&f, &names);
    let offset = install::offset(&f);
    let mut unresolved: Vec<String> = f
        .start
        .unresolved
        .iter()
        .chain(f.carbon.iter().flat_map(|c| c.unresolved.iter()))
        .chain(f.apim.iter().flat_map(|a| a.unresolved.iter()))
        .chain(f.axis2.iter().flat_map(|a| a.unresolved.iter()))
        .chain(f.deployment.iter().flat_map(|d| d.unresolved.iter()))
        .cloned()
        .collect();
    let mut i = Install {
        host: host.to_owned(),
        names,
        home: home.display().to_string(),
        product: id.product,
        profile: id.profile,
        profile_source: id.profile_source,
        role: id.role.to_owned(),
        offset: offset.as_ref().map_or(0, |o| o.value),
        offset_source: offset.map_or_else(|| "default".to_owned(), |o| o.source.to_string()),
        ports: Vec::new(),
        dials: Vec::new(),
        unresolved: Vec::new(),
        cluster: f.axis2.as_ref().is_some_and(|a| a.cluster.is_some()),
    };
    if i.role == "wso2-apim-analytics" && i.offset == 0 {
        // Moved below its shipped offset 1: plain DAS ports at offset 0.
        i.role = "wso2-das".into();
    }
    i.ports = install::ports(&i, &f);
    i.dials = install::dials(&i, &f, &mut unresolved);
    i.unresolved = unresolved;
    Ok((i, f))
}

/// Output formats of `wso2 scan`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ScanFormat {
    /// Aligned columns for a terminal.
    #[default]
    Table,
    /// `portcall.wso2/v1` JSON.
    Json,
    /// A plan: hosts, roles, offsets, overrides, flows.
    Toml,
}

/// Writes a scan in `format`.
pub fn render(scan: &Scan, format: ScanFormat, w: &mut impl Write) -> io::Result<()> {
    match format {
        ScanFormat::Json => {
            serde_json::to_writer_pretty(&mut *w, scan)?;
            writeln!(w)
        }
        ScanFormat::Table => table(scan, w),
        ScanFormat::Toml => plan_out::plan(scan, w),
    }
}

fn install_table(i: &Install, w: &mut impl Write) -> io::Result<()> {
    let names = if i.names.is_empty() {
        String::new()
    } else {
        format!(" [{}]", i.names.join(", "))
    };
    writeln!(
        w,
        "{}{names} ({}): {}, profile {} ({}), role {}, offset {} ({})",
        i.host,
        i.home,
        i.product,
        i.profile.as_deref().unwrap_or("unknown"),
        i.profile_source,
        i.role,
        i.offset,
        i.offset_source
    )?;
    let mut t = Table::with_header(["", "NAME", "PORT", "REACHES", "HOW", "SOURCE"]);
    for p in &i.ports {
        let port = match p.protocol {
            Protocol::Tls => format!("{}/tls", p.port),
            _ => p.port.to_string(),
        };
        t.row([
            "listens".into(),
            p.name.clone(),
            port,
            String::new(),
            p.how.clone(),
            p.source.clone(),
        ]);
    }
    for d in &i.dials {
        t.row([
            "dials".into(),
            d.name.clone(),
            format!("{}:{}", d.to_host, d.to_port),
            d.reaches.clone(),
            d.how.clone(),
            d.source.clone(),
        ]);
    }
    t.write_to(w)?;
    for u in &i.unresolved {
        writeln!(w, "  unresolved: {u}")?;
    }
    writeln!(w)
}

fn table(scan: &Scan, w: &mut impl Write) -> io::Result<()> {
    for i in &scan.installs {
        install_table(i, w)?;
    }
    for m in &scan.mismatches {
        let dialled = if m.dialled_host.eq_ignore_ascii_case(&m.server_host) {
            String::new()
        } else {
            format!(" (dialled as {})", m.dialled_host)
        };
        writeln!(
            w,
            "mismatch: {} dials {} on {} but {} listens on {}{dialled}: {}",
            m.client_host, m.name, m.client_port, m.server_host, m.server_port, m.fix
        )?;
    }
    for d in &scan.differences {
        writeln!(w, "difference ({}): {}", d.kind, d.detail)?;
    }
    for o in &scan.outside {
        let db = match &o.database {
            Some(d) if *d != o.name => format!(", {d}"),
            _ => String::new(),
        };
        writeln!(
            w,
            "outside the scan: {}:{} ({}{db}) dialled by {}",
            o.host,
            o.port,
            o.name,
            o.dialled_by.join(", ")
        )?;
    }
    let plural =
        |n: usize, one: &str, many: &str| format!("{n} {}", if n == 1 { one } else { many });
    writeln!(
        w,
        "{}, {}, {}, {} outside the scan",
        plural(scan.installs.len(), "installation", "installations"),
        plural(scan.mismatches.len(), "mismatch", "mismatches"),
        plural(scan.differences.len(), "difference", "differences"),
        plural(scan.outside.len(), "endpoint", "endpoints")
    )
}
