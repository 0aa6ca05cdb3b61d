//! `portcall wso2 scan`: reads each installation's files, works out its
//! offset, the ports it will open and the endpoints it will dial, then
//! compares installations with each other (client/server mismatches) and,
//! when given, with a plan. Renders `portcall.wso2/v1` JSON, a table, or a
//! plan fragment in TOML.

use std::collections::BTreeMap;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::apim::{ApiManagerXml, read_api_manager};
use super::carbon::{Axis2Xml, StartScript, read_axis2, read_carbon, read_start_script};
use super::deployment::{DeploymentToml, read_deployment};
use super::{ScanError, Setting, Source, join, read_optional, url_endpoints};
use crate::catalog::Catalog;
use crate::plan::{Address, Plan};
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
}

/// One installation.
#[derive(Debug, Clone, Serialize)]
pub struct Install {
    /// The host name given on the command line.
    pub host: String,
    /// The product home as given.
    pub home: String,
    /// The product, as `carbon.xml` names it or as the files tell.
    pub product: String,
    /// The API-M profile (`-Dprofile`, `[server] server_role`, or inferred
    /// from what the node does), when it can be told.
    pub profile: Option<String>,
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
    #[serde(skip)]
    cluster: bool,
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
    setting: Option<String>,
    /// The port before the offset, when the offset moves it.
    #[serde(skip)]
    base: Option<u16>,
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
    /// The product's setting for the client side, for fixes.
    #[serde(skip)]
    setting: String,
}

/// A client that dials a port its server does not listen on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Mismatch {
    /// The client installation.
    pub client_host: String,
    /// The server installation.
    pub server_host: String,
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
    /// `dial-to-nothing`, `port-not-opened`, `dial-differs`,
    /// `offset-differs` or `host-not-in-plan`.
    pub kind: &'static str,
    /// What differs, in words, with `file:line` where there is one.
    pub detail: String,
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
        Some((h, p)) if !h.is_empty() && !p.is_empty() && !h.contains(['/', ' ']) => {
            Ok((h.to_owned(), PathBuf::from(p)))
        }
        _ => Err(ScanError::BadArgument {
            arg: arg.to_owned(),
        }),
    }
}

/// Scans every installation and compares them (and the plan, if any).
pub fn scan(installs: &[(String, PathBuf)], plan: Option<&Plan>) -> Result<Scan, ScanError> {
    let mut out = Vec::new();
    for (host, home) in installs {
        if out.iter().any(|i: &Install| &i.host == host) {
            return Err(ScanError::DuplicateHost { host: host.clone() });
        }
        out.push(read_install(host, home)?);
    }
    let mut differences = Vec::new();
    let mismatches = compare(&out, plan, &mut differences);
    if let Some(plan) = plan {
        plan_differences(&out, plan, &mut differences);
    }
    Ok(Scan {
        schema: SCHEMA,
        installs: out,
        mismatches,
        differences,
    })
}

/// Everything read from one product home.
struct Files {
    carbon: Option<(Source, super::carbon::CarbonXml)>,
    apim: Option<ApiManagerXml>,
    axis2: Option<Axis2Xml>,
    deployment: Option<DeploymentToml>,
    start: StartScript,
}

fn read_files(home: &Path) -> Result<Files, ScanError> {
    let carbon_path = join(home, "repository/conf/carbon.xml");
    let carbon = read_optional(&carbon_path)?
        .map(|t| read_carbon(&carbon_path, &t))
        .transpose()?
        .map(|c| {
            (
                Source {
                    file: carbon_path.display().to_string(),
                    line: 0,
                    col: 0,
                },
                c,
            )
        });
    let apim_path = join(home, "repository/conf/api-manager.xml");
    let apim = read_optional(&apim_path)?
        .map(|t| read_api_manager(&apim_path, &t))
        .transpose()?;
    let axis2_path = join(home, "repository/conf/axis2/axis2.xml");
    let axis2 = read_optional(&axis2_path)?
        .map(|t| read_axis2(&axis2_path, &t))
        .transpose()?;
    let toml_path = join(home, "repository/conf/deployment.toml");
    let deployment = read_optional(&toml_path)?
        .map(|t| read_deployment(&toml_path, &t))
        .transpose()?;
    // The start scripts of Carbon 4.x (wso2server.sh) and API-M 3.x/4.x
    // (api-manager.sh), and a .conf beside them; later files win.
    let mut start = StartScript::default();
    for rel in [
        "bin/wso2server.sh",
        "bin/api-manager.sh",
        "bin/wso2server.conf",
    ] {
        let path = join(home, rel);
        if let Some(t) = read_optional(&path)? {
            let s = read_start_script(&path, &t)?;
            if s.offset.is_some() {
                start.offset = s.offset;
            }
            if s.profile.is_some() {
                start.profile = s.profile;
            }
        }
    }
    if carbon.is_none() && apim.is_none() && axis2.is_none() && deployment.is_none() {
        return Err(ScanError::NotAnInstallation {
            home: home.display().to_string(),
        });
    }
    Ok(Files {
        carbon,
        apim,
        axis2,
        deployment,
        start,
    })
}

fn read_install(host: &str, home: &Path) -> Result<Install, ScanError> {
    let f = read_files(home)?;
    // Precedence: -DportOffset at start-up, then deployment.toml (which
    // API-M 3.x/4.x renders into carbon.xml), then carbon.xml.
    let offset: Option<Setting<u16>> = f
        .start
        .offset
        .clone()
        .or_else(|| f.deployment.as_ref().and_then(|d| d.offset.clone()))
        .or_else(|| f.carbon.as_ref().and_then(|(_, c)| c.offset.clone()));
    let (off, offset_source) = match &offset {
        Some(s) => (s.value, s.source.to_string()),
        None => (0, "default".to_owned()),
    };
    let carbon_name = f.carbon.as_ref().and_then(|(_, c)| {
        c.name
            .as_ref()
            .map(|n| format!("{n} {}", c.version.clone().unwrap_or_default()))
    });
    let product = match (&carbon_name, &f.apim, &f.deployment) {
        (Some(n), _, _) => n.trim().to_owned(),
        (None, Some(_), _) => "WSO2 API Manager 2.x".to_owned(),
        (None, None, Some(_)) => "WSO2 API Manager 3.x/4.x".to_owned(),
        (None, None, None) => "WSO2 Carbon".to_owned(),
    };
    let apim = f.apim.as_ref();
    let remote = |h: &str| !matches!(h, "localhost" | "127.0.0.1" | "::1" | "");
    let profile = f
        .start
        .profile
        .as_ref()
        .map(|p| p.value.clone())
        .or_else(|| {
            f.deployment
                .as_ref()
                .and_then(|d| d.server_role.as_ref())
                .map(|r| r.value.clone())
                .filter(|r| r != "default")
        })
        .or_else(|| {
            // Inferred from what the node does.
            let thrift_server = apim
                .and_then(|a| a.enable_thrift_server.as_ref())
                .is_some_and(|e| e.value);
            let dials_km = apim
                .and_then(|a| a.thrift_server_host.as_ref())
                .is_some_and(|h| remote(&h.value));
            let dials_tm = f.deployment.as_ref().is_some_and(|d| !d.tm_urls.is_empty());
            if thrift_server {
                Some("api-key-manager".to_owned())
            } else if dials_km || dials_tm {
                Some("gateway-worker".to_owned())
            } else {
                None
            }
        });
    let role = role_of(profile.as_deref()).to_owned();

    // Server ports: the catalog role's, moved by the offset, then replaced
    // by explicit settings.
    let catalog = Catalog::builtin();
    let offset_how = |base: u16| match &offset {
        Some(_) => format!("default {base} + offset {off}"),
        None => format!("default {base}"),
    };
    let mut ports: Vec<PortFinding> = Vec::new();
    if let Some(r) = catalog.get(&role) {
        for def in &r.ports {
            let base = def.port.get();
            let (port, how, base_kept) = if def.offset {
                (
                    base.checked_add(off).unwrap_or(base),
                    offset_how(base),
                    Some(base),
                )
            } else {
                (base, format!("fixed {base}"), None)
            };
            ports.push(PortFinding {
                name: def.name.clone(),
                port,
                protocol: def.protocol,
                source: if def.offset {
                    offset_source.clone()
                } else {
                    "default".to_owned()
                },
                how,
                setting: None,
                base: base_kept,
            });
        }
    }
    let set =
        |ports: &mut Vec<PortFinding>, name: &str, port: u16, source: &Source, how: String| {
            if let Some(p) = ports.iter_mut().find(|p| p.name == name) {
                p.port = port;
                p.source = source.to_string();
                p.how = how;
                p.base = None;
            }
        };
    let api_m_2 = apim.is_some();
    if let Some(p) = ports.iter_mut().find(|p| p.name == "thrift-km") {
        p.setting = Some("ThriftServerPort".to_owned());
    }
    if let Some(a) = apim {
        if let Some(sp) = &a.thrift_server_port {
            set(
                &mut ports,
                "thrift-km",
                sp.value,
                &sp.source,
                "ThriftServerPort".into(),
            );
        }
        if a.enable_thrift_server.as_ref().is_some_and(|e| !e.value) {
            ports.retain(|p| p.name != "thrift-km");
        }
    }
    if !api_m_2 {
        // API-M 3.x/4.x validate keys without the Thrift server.
        ports.retain(|p| p.name != "thrift-km");
    }
    let mut cluster = false;
    if let Some(ax) = &f.axis2 {
        for (name, s) in [("nio-http", &ax.http), ("nio-https", &ax.https)] {
            if let Some(s) = s {
                let port = s.value.checked_add(off).unwrap_or(s.value);
                set(
                    &mut ports,
                    name,
                    port,
                    &s.source,
                    format!("{} + offset {off}", s.value),
                );
                if let Some(p) = ports.iter_mut().find(|p| p.name == name) {
                    p.base = Some(s.value);
                }
            }
        }
        if let Some(c) = &ax.cluster {
            cluster = true;
            ports.push(PortFinding {
                name: "cluster".into(),
                port: c.local_port.value,
                protocol: Protocol::Tcp,
                source: c.local_port.source.to_string(),
                how: format!(
                    "localMemberPort ({} membership; not moved by the offset)",
                    c.scheme.as_deref().unwrap_or("wka")
                ),
                setting: Some("localMemberPort".into()),
                base: None,
            });
        }
    }

    // Dials.
    let mut dials: Vec<DialFinding> = Vec::new();
    let resolve = |key: &str| -> Option<String> {
        let plus = |base: u16| Some(base.saturating_add(off).to_string());
        match key {
            "mgt.transport.https.port" => plus(9443),
            "mgt.transport.http.port" => plus(9763),
            "receiver.url.port" => plus(9611),
            "auth.url.port" => plus(9711),
            "carbon.context" => Some("/".into()),
            _ => None,
        }
    };
    let from_url =
        |dials: &mut Vec<DialFinding>, name: &str, s: &Setting<String>, setting: &str| {
            for (h, p) in url_endpoints(&s.value, &resolve) {
                dials.push(DialFinding {
                    name: name.to_owned(),
                    to_host: h,
                    to_port: p,
                    source: s.source.to_string(),
                    how: setting.to_owned(),
                    setting: format!("the port in {setting}"),
                });
            }
        };
    let is_gateway = role == "wso2-apim-gateway";
    if let Some(a) = apim {
        if is_gateway {
            if let Some(u) = &a.server_url {
                from_url(&mut dials, "https-servlet", u, "APIKeyValidator ServerURL");
            }
            let thrift_client = a
                .client_type
                .as_ref()
                .is_none_or(|t| t.value == "ThriftClient");
            if thrift_client {
                let host = a.thrift_server_host.as_ref();
                let (port, source, how) = match &a.thrift_client_port {
                    Some(p) => (p.value, p.source.to_string(), "ThriftClientPort".to_owned()),
                    None => (
                        10397u16.saturating_add(off),
                        host.map_or(offset_source.clone(), |h| h.source.to_string()),
                        format!(
                            "ThriftServerHost; ThriftClientPort unset: {}",
                            offset_how(10397)
                        ),
                    ),
                };
                dials.push(DialFinding {
                    name: "thrift-km".into(),
                    to_host: host.map_or("localhost".to_owned(), |h| h.value.clone()),
                    to_port: port,
                    source,
                    how,
                    setting: "ThriftClientPort".into(),
                });
            }
        }
        if let Some(u) = &a.receiver_urls {
            from_url(&mut dials, "binary", u, "TrafficManager ReceiverUrlGroup");
        }
        if let Some(u) = &a.auth_urls {
            from_url(&mut dials, "binary-ssl", u, "TrafficManager AuthUrlGroup");
        }
        if let Some(u) = &a.das_url {
            from_url(&mut dials, "thrift", u, "Analytics DASServerURL");
        }
        if let Some(u) = &a.das_auth_url {
            from_url(&mut dials, "thrift-ssl", u, "Analytics DASAuthServerURL");
        }
    }
    if let Some(d) = &f.deployment {
        if let Some(u) = &d.key_manager_url {
            from_url(
                &mut dials,
                "https-servlet",
                u,
                "[apim.key_manager] service_url",
            );
        }
        for u in &d.tm_urls {
            from_url(&mut dials, "binary", u, "traffic_manager_urls");
        }
        for u in &d.tm_auth_urls {
            from_url(&mut dials, "binary-ssl", u, "traffic_manager_auth_urls");
        }
    }
    if let Some(c) = f.axis2.as_ref().and_then(|a| a.cluster.as_ref()) {
        for m in &c.members {
            if m.host == host && m.port == c.local_port.value {
                continue;
            }
            dials.push(DialFinding {
                name: "cluster".into(),
                to_host: m.host.clone(),
                to_port: m.port,
                source: m.source.to_string(),
                how: "well-known member".into(),
                setting: "the member's <port>".into(),
            });
        }
    }
    Ok(Install {
        host: host.to_owned(),
        home: home.display().to_string(),
        product,
        profile,
        role,
        offset: off,
        offset_source,
        ports,
        dials,
        cluster,
    })
}

/// The catalog role an API-M profile plays.
fn role_of(profile: Option<&str>) -> &'static str {
    match profile {
        Some(p) if p.contains("gateway") => "wso2-apim-gateway",
        Some(p) if p.contains("key-manager") || p.contains("keymanager") => "wso2-apim-keymanager",
        Some(p) if p.contains("traffic-manager") => "wso2-apim-trafficmanager",
        Some(p) if p.contains("publisher") => "wso2-apim-publisher",
        Some(p) if p.contains("store") || p.contains("devportal") => "wso2-apim-store",
        Some(p) if p.contains("analytics") => "wso2-das",
        _ => "wso2-carbon",
    }
}

/// Which scanned installation a dialled host means: its host name, or the
/// plan address of that host.
fn target<'a>(installs: &'a [Install], plan: Option<&Plan>, to_host: &str) -> Option<&'a Install> {
    installs
        .iter()
        .find(|i| i.host.eq_ignore_ascii_case(to_host))
        .or_else(|| {
            let p = plan?;
            let h = p.hosts.iter().find(|h| match &h.address {
                Address::Ip(ip) => ip.to_string() == to_host,
                Address::Dns(n) => n.eq_ignore_ascii_case(to_host),
            })?;
            installs.iter().find(|i| i.host == h.name)
        })
}

fn compare(
    installs: &[Install],
    plan: Option<&Plan>,
    differences: &mut Vec<Difference>,
) -> Vec<Mismatch> {
    let mut out = Vec::new();
    for client in installs {
        for d in &client.dials {
            let Some(server) = target(installs, plan, &d.to_host) else {
                continue;
            };
            if server.ports.iter().any(|p| p.port == d.to_port) {
                continue;
            }
            match server.ports.iter().find(|p| p.name == d.name) {
                Some(p) => out.push(Mismatch {
                    client_host: client.host.clone(),
                    server_host: server.host.clone(),
                    name: d.name.clone(),
                    client_port: d.to_port,
                    server_port: p.port,
                    fix: fix(client, d, server, p),
                }),
                None => differences.push(Difference {
                    host: client.host.clone(),
                    kind: "dial-to-nothing",
                    detail: format!(
                        "{} dials {}:{} ({}, {}) but {} opens nothing there",
                        client.host, d.to_host, d.to_port, d.name, d.source, server.host
                    ),
                }),
            }
        }
    }
    out
}

/// Both fixes: the client dials the server's port, or the server listens
/// on the client's (through its own setting, or an offset that moves it
/// there).
fn fix(client: &Install, d: &DialFinding, server: &Install, p: &PortFinding) -> String {
    let client_fix = format!(
        "set {} {} on {} ({})",
        d.setting, p.port, client.host, d.source
    );
    let server_fix = match (&p.setting, p.base) {
        (Some(s), _) => format!("{s} {} on {}", d.to_port, server.host),
        (None, Some(base)) if d.to_port >= base => format!(
            "give {} offset {} (now {})",
            server.host,
            d.to_port - base,
            server.offset
        ),
        _ => format!("make {} listen on {}", server.host, d.to_port),
    };
    format!("{client_fix}, or {server_fix}")
}

fn plan_differences(installs: &[Install], plan: &Plan, out: &mut Vec<Difference>) {
    for i in installs {
        let Some(h) = plan.host(&i.host) else {
            out.push(Difference {
                host: i.host.clone(),
                kind: "host-not-in-plan",
                detail: format!(
                    "{} is scanned but the plan has no host of that name",
                    i.host
                ),
            });
            continue;
        };
        let plan_offset = h
            .roles
            .iter()
            .find(|r| r.role == i.role)
            .map_or(h.port_offset, |r| r.port_offset);
        if plan_offset != i.offset {
            out.push(Difference {
                host: i.host.clone(),
                kind: "offset-differs",
                detail: format!(
                    "the plan gives {} offset {plan_offset}, the installation runs at {} ({})",
                    i.host, i.offset, i.offset_source
                ),
            });
        }
        for p in &h.ports {
            if !i.ports.iter().any(|q| q.port == p.port.get()) {
                out.push(Difference {
                    host: i.host.clone(),
                    kind: "port-not-opened",
                    detail: format!(
                        "the plan assumes {} listens on {} ({} of {}), the installation does not open it",
                        i.host, p.port, p.name, p.role
                    ),
                });
            }
        }
        for d in &i.dials {
            let Some(t) = plan.hosts.iter().find(|t| {
                t.name.eq_ignore_ascii_case(&d.to_host) || t.address.to_string() == d.to_host
            }) else {
                continue;
            };
            if let Some(path) = plan
                .paths
                .iter()
                .find(|p| p.from == h.name && p.to == t.name && p.service == d.name)
            {
                if path.port.get() != d.to_port {
                    out.push(Difference {
                        host: i.host.clone(),
                        kind: "dial-differs",
                        detail: format!(
                            "the plan probes {} -> {}:{} for {}, the installation dials {} ({})",
                            h.name, t.name, path.port, d.name, d.to_port, d.source
                        ),
                    });
                }
            } else if !t.ports.iter().any(|p| p.port.get() == d.to_port) {
                out.push(Difference {
                    host: i.host.clone(),
                    kind: "dial-to-nothing",
                    detail: format!(
                        "{} dials {}:{} ({}, {}) but the plan gives {} nothing on that port",
                        i.host, d.to_host, d.to_port, d.name, d.source, t.name
                    ),
                });
            }
        }
    }
}

/// Output formats of `wso2 scan`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ScanFormat {
    /// Aligned columns for a terminal.
    #[default]
    Table,
    /// `portcall.wso2/v1` JSON.
    Json,
    /// A plan fragment: hosts, roles, offsets, overrides, flows.
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
        ScanFormat::Toml => plan_fragment(scan, w),
    }
}

fn table(scan: &Scan, w: &mut impl Write) -> io::Result<()> {
    for i in &scan.installs {
        writeln!(
            w,
            "{} ({}): {}, profile {}, role {}, offset {} ({})",
            i.host,
            i.home,
            i.product,
            i.profile.as_deref().unwrap_or("unknown"),
            i.role,
            i.offset,
            i.offset_source
        )?;
        let mut t = Table::with_header(["", "NAME", "PORT", "HOW", "SOURCE"]);
        for p in &i.ports {
            let port = match p.protocol {
                Protocol::Tls => format!("{}/tls", p.port),
                _ => p.port.to_string(),
            };
            t.row([
                "listens".into(),
                p.name.clone(),
                port,
                p.how.clone(),
                p.source.clone(),
            ]);
        }
        for d in &i.dials {
            t.row([
                "dials".into(),
                d.name.clone(),
                format!("{}:{}", d.to_host, d.to_port),
                d.how.clone(),
                d.source.clone(),
            ]);
        }
        t.write_to(w)?;
        writeln!(w)?;
    }
    for m in &scan.mismatches {
        writeln!(
            w,
            "mismatch: {} dials {} on {} but {} listens on {}: {}",
            m.client_host, m.name, m.client_port, m.server_host, m.server_port, m.fix
        )?;
    }
    for d in &scan.differences {
        writeln!(w, "difference ({}): {}", d.kind, d.detail)?;
    }
    let plural =
        |n: usize, one: &str, many: &str| format!("{n} {}", if n == 1 { one } else { many });
    writeln!(
        w,
        "{}, {}, {}",
        plural(scan.installs.len(), "installation", "installations"),
        plural(scan.mismatches.len(), "mismatch", "mismatches"),
        plural(scan.differences.len(), "difference", "differences")
    )
}

/// A TOML string literal.
fn quote(s: &str) -> String {
    toml::Value::String(s.to_owned()).to_string()
}

/// The scan as a plan: one host per installation (addresses to fill in),
/// its catalog role at its offset, overrides where the configuration
/// departs from the catalog, and flows from every dial between scanned
/// hosts. `plan lint` on it reports the same mismatches.
fn plan_fragment(scan: &Scan, w: &mut impl Write) -> io::Result<()> {
    let catalog = Catalog::builtin();
    writeln!(
        w,
        "# portcall wso2 scan: {} installation{}; set each host's real address.",
        scan.installs.len(),
        if scan.installs.len() == 1 { "" } else { "s" }
    )?;
    writeln!(w, "name = \"wso2-scan\"")?;
    // One flow per (client, server) pair, its ports the dial names.
    let mut flows: BTreeMap<(&str, &str), Vec<String>> = BTreeMap::new();
    for i in &scan.installs {
        for d in &i.dials {
            let Some(t) = target(&scan.installs, None, &d.to_host) else {
                continue;
            };
            let item = if t.ports.iter().any(|p| p.name == d.name) {
                quote(&d.name)
            } else {
                d.to_port.to_string()
            };
            let v = flows.entry((&i.host, &t.host)).or_default();
            if !v.contains(&item) {
                v.push(item);
            }
        }
    }
    if flows.is_empty() {
        writeln!(
            w,
            "flows = []   # no installation dials another scanned one"
        )?;
    }
    for i in &scan.installs {
        writeln!(w, "\n[[hosts]]")?;
        writeln!(w, "name = {}", quote(&i.host))?;
        writeln!(w, "address = {}   # {}", quote(&i.host), i.product)?;
        let mut roles = vec![quote(&i.role)];
        if i.cluster {
            roles.push("{ role = \"wso2-cluster-wka\", port_offset = 0 }".into());
        }
        writeln!(w, "roles = [{}]", roles.join(", "))?;
        writeln!(w, "port_offset = {}   # {}", i.offset, i.offset_source)?;
        // Ports the configuration pins away from the catalog's default.
        let role = catalog.get(&i.role);
        let mut pinned: Vec<String> = Vec::new();
        for p in &i.ports {
            let default = if p.name == "cluster" {
                None
            } else {
                role.and_then(|r| r.ports.iter().find(|d| d.name == p.name))
                    .map(|d| {
                        if d.offset {
                            d.port.get().saturating_add(i.offset)
                        } else {
                            d.port.get()
                        }
                    })
            };
            if default != Some(p.port) {
                pinned.push(format!("{} = {}", p.name, p.port));
            }
        }
        if !pinned.is_empty() {
            writeln!(w, "port_overrides = {{ {} }}", pinned.join(", "))?;
        }
        // Dials to scanned hosts the catalog would predict differently.
        let mut overrides: BTreeMap<&str, u16> = BTreeMap::new();
        for d in &i.dials {
            if target(&scan.installs, None, &d.to_host).is_none() {
                continue;
            }
            let predicted = role
                .and_then(|r| r.dials.iter().find(|c| c.name == d.name))
                .map(|c| {
                    if c.offset {
                        c.port.get().saturating_add(i.offset)
                    } else {
                        c.port.get()
                    }
                });
            if predicted.is_some() && predicted != Some(d.to_port) {
                overrides.insert(&d.name, d.to_port);
            }
        }
        if !overrides.is_empty() {
            let items: Vec<String> = overrides
                .iter()
                .map(|(k, v)| format!("{k} = {v}"))
                .collect();
            writeln!(w, "dial_overrides = {{ {} }}", items.join(", "))?;
        }
    }
    for ((from, to), ports) in &flows {
        writeln!(w, "\n[[flows]]")?;
        writeln!(w, "name = {}", quote(&format!("{from} dials {to}")))?;
        writeln!(w, "from = {}", quote(&format!("host:{from}")))?;
        writeln!(w, "to = {}", quote(&format!("host:{to}")))?;
        writeln!(w, "ports = [{}]", ports.join(", "))?;
    }
    Ok(())
}
