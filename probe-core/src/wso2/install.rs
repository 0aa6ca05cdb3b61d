//! One installation: its files read, then what it is (product, profile,
//! catalog role), its offset, the names it answers to, the ports it opens
//! and the endpoints it dials.

use std::path::Path;

use super::apim::{ApiManagerXml, UrlSetting, read_api_manager};
use super::carbon::{Axis2Xml, CarbonXml, StartScript, read_axis2, read_carbon, read_start_script};
use super::datasource::{DbSetting, jdbc, read_datasources};
use super::deployment::{DeploymentToml, read_deployment};
use super::error::ScanError;
use super::esb::read_event_publisher;
use super::files::{join, read_optional};
use super::model::{DialFinding, Install, PortFinding};
use super::source::Setting;
use super::sp::{SpWorker, read_sp_worker};
use super::values::{Vars, endpoints, is_local};
use crate::plan::Catalog;
use crate::port::Protocol;

/// The most datasource files read from `repository/conf/datasources/`.
const MAX_DATASOURCE_FILES: usize = 16;

/// Everything read from one product home.
pub(crate) struct Files {
    pub carbon: Option<CarbonXml>,
    pub apim: Option<ApiManagerXml>,
    pub axis2: Option<Axis2Xml>,
    pub deployment: Option<DeploymentToml>,
    pub datasources: Vec<DbSetting>,
    /// ESB/EI analytics publishers (`eventpublishers/*.xml`).
    pub publishers: Vec<UrlSetting>,
    /// The Stream Processor based API-M Analytics worker's
    /// `conf/worker/deployment.yaml` (API-M Analytics 2.5 to 3.x).
    pub sp: Option<SpWorker>,
    pub start: StartScript,
}

/// The start scripts of Carbon 4.x (`wso2server.sh`) and API-M 3.x/4.x
/// (`api-manager.sh`), and a `.conf` beside them; later files win.
fn read_start(home: &Path) -> Result<StartScript, ScanError> {
    let mut start = StartScript::default();
    for rel in [
        "bin/wso2server.sh",
        "bin/api-manager.sh",
        "bin/wso2server.conf",
    ] {
        let path = join(home, rel);
        let Some(t) = read_optional(&path)? else {
            continue;
        };
        let s = read_start_script(&path, &t)?;
        start.offset = s.offset.or(start.offset);
        start.profile = s.profile.or(start.profile);
        start.props.extend(s.props);
        start.env.extend(s.env);
        start.unresolved.extend(s.unresolved);
    }
    Ok(start)
}

fn read_datasource_dir(home: &Path, vars: &Vars) -> Result<Vec<DbSetting>, ScanError> {
    let dir = join(home, "repository/conf/datasources");
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Ok(Vec::new());
    };
    let mut names: Vec<_> = entries
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with("datasources.xml"))
        .collect();
    names.sort();
    let mut out = Vec::new();
    for name in names.into_iter().take(MAX_DATASOURCE_FILES) {
        let path = dir.join(&name);
        if let Some(t) = read_optional(&path)? {
            out.extend(read_datasources(&path, &t, vars)?);
        }
    }
    Ok(out)
}

/// The ESB's analytics event publishers, sorted by name.
fn read_publishers(home: &Path) -> Result<Vec<UrlSetting>, ScanError> {
    let dir = join(home, "repository/deployment/server/eventpublishers");
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Ok(Vec::new());
    };
    let mut names: Vec<_> = entries
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".xml"))
        .collect();
    names.sort();
    let mut out = Vec::new();
    for name in names.into_iter().take(MAX_DATASOURCE_FILES) {
        let path = dir.join(&name);
        if let Some(t) = read_optional(&path)? {
            out.extend(read_event_publisher(&path, &t)?);
        }
    }
    Ok(out)
}

pub(crate) fn read_files(home: &Path) -> Result<Files, ScanError> {
    let mut start = read_start(home)?;
    let mut vars = Vars {
        props: start.props.clone(),
        env: start.env.clone(),
        ..Vars::default()
    };
    // The Stream Processor's own properties (`${sys:carbon.home}`,
    // `${sys:wso2.runtime}` in the worker's deployment.yaml): the product
    // home and the worker runtime.
    for (k, v) in [
        ("sys:carbon.home", home.display().to_string()),
        ("sys:wso2.runtime", "worker".to_owned()),
    ] {
        vars.props.entry(k.to_owned()).or_insert(v);
    }
    let read = |rel: &str| -> Result<Option<(std::path::PathBuf, String)>, ScanError> {
        let path = join(home, rel);
        Ok(read_optional(&path)?.map(|t| (path, t)))
    };
    let carbon = read("repository/conf/carbon.xml")?
        .map(|(p, t)| read_carbon(&p, &t, &vars))
        .transpose()?;
    let apim = read("repository/conf/api-manager.xml")?
        .map(|(p, t)| read_api_manager(&p, &t, &vars))
        .transpose()?;
    let axis2 = read("repository/conf/axis2/axis2.xml")?
        .map(|(p, t)| read_axis2(&p, &t, &vars))
        .transpose()?;
    let deployment = read("repository/conf/deployment.toml")?
        .map(|(p, t)| read_deployment(&p, &t, &vars))
        .transpose()?;
    let sp = read("conf/worker/deployment.yaml")?
        .map(|(p, t)| read_sp_worker(&p, &t, &vars))
        .transpose()?;
    if sp.is_some() {
        // The worker's JDBC URLs are expanded later with the start-up
        // properties: they need its own too.
        for k in ["sys:carbon.home", "sys:wso2.runtime"] {
            if let Some(v) = vars.props.get(k) {
                start.props.entry(k.to_owned()).or_insert_with(|| v.clone());
            }
        }
    }
    if carbon.is_none() && apim.is_none() && axis2.is_none() && deployment.is_none() && sp.is_none()
    {
        return Err(ScanError::NotAnInstallation {
            home: home.display().to_string(),
        });
    }
    let datasources = read_datasource_dir(home, &vars)?;
    let publishers = read_publishers(home)?;
    Ok(Files {
        carbon,
        apim,
        axis2,
        deployment,
        datasources,
        publishers,
        sp,
        start,
    })
}

/// The catalog role an API-M profile plays.
pub(crate) fn role_of(profile: &str) -> &'static str {
    let p = profile.to_ascii_lowercase();
    match () {
        _ if p.contains("gateway") => "wso2-apim-gateway",
        _ if p.contains("key-manager") || p.contains("keymanager") => "wso2-apim-keymanager",
        // 4.x control plane: key manager, portals and the event hub (the
        // traffic manager's binary receivers and JMS broker).
        _ if p.contains("traffic-manager") || p.contains("control-plane") => {
            "wso2-apim-trafficmanager"
        }
        _ if p.contains("publisher") => "wso2-apim-publisher",
        _ if p.contains("store") || p.contains("devportal") => "wso2-apim-store",
        _ if p.contains("analytics") => "wso2-apim-analytics",
        _ => "wso2-carbon",
    }
}

/// What the installation is.
pub(crate) struct Identity {
    pub product: String,
    pub profile: Option<String>,
    pub profile_source: String,
    pub role: &'static str,
}

/// The product from `carbon.xml <Name>` (or the files present), the
/// profile from `-Dprofile`, `[server] server_role`, or what the node
/// dials, and the catalog role.
pub(crate) fn identify(f: &Files, names: &[String]) -> Identity {
    if let Some(sp) = &f.sp {
        return sp_identity(sp);
    }
    let carbon_name = f.carbon.as_ref().and_then(|c| c.name.clone());
    let version = f.carbon.as_ref().and_then(|c| c.version.clone());
    let product = match (&carbon_name, &f.apim, &f.deployment) {
        (Some(n), _, _) => format!("{n} {}", version.unwrap_or_default())
            .trim()
            .to_owned(),
        (None, Some(_), _) => "WSO2 API Manager 2.x".to_owned(),
        (None, None, Some(d)) if d.identity_db.is_some() => "WSO2 Identity Server".to_owned(),
        (None, None, Some(_)) => "WSO2 API Manager 3.x/4.x".to_owned(),
        (None, None, None) => "WSO2 Carbon".to_owned(),
    };
    let lower = carbon_name.unwrap_or_default().to_ascii_lowercase();
    let fixed = |role: &'static str, how: &str| Identity {
        product: product.clone(),
        profile: None,
        profile_source: how.to_owned(),
        role,
    };
    // API-M Analytics 2.1 carbon.xml: "WSO2 API Manager Analytics Server".
    if lower.contains("analytics") && lower.contains("api manager") {
        return fixed("wso2-apim-analytics", "carbon.xml <Name>");
    }
    if lower.contains("analytics") {
        return fixed("wso2-das", "carbon.xml <Name>");
    }
    if lower.contains("enterprise service bus") || lower.contains("enterprise integrator") {
        return fixed("wso2-esb", "carbon.xml <Name>");
    }
    if let Some(p) = &f.start.profile {
        return Identity {
            role: role_of(&p.value),
            profile: Some(p.value.clone()),
            profile_source: format!("-Dprofile ({})", p.source),
            product,
        };
    }
    if let Some(r) = f.deployment.as_ref().and_then(|d| d.server_role.as_ref()) {
        if r.value != "default" {
            return Identity {
                role: role_of(&r.value),
                profile: Some(r.value.clone()),
                profile_source: format!("[server] server_role ({})", r.source),
                product,
            };
        }
    }
    // The Identity Server as key manager carries api-manager.xml (2.x) or
    // serves /keymanager-operations/ (3.2/4.x deployment.toml).
    if lower.contains("identity server") && f.apim.is_some() {
        return fixed(
            "wso2-apim-keymanager",
            "carbon.xml <Name> with api-manager.xml",
        );
    }
    let km_ops = f.deployment.as_ref().and_then(|d| {
        let is = d.identity_db.is_some() || lower.contains("identity server");
        d.km_operations.as_ref().filter(|_| is)
    });
    if let Some(w) = km_ops {
        let how = format!(
            "Identity Server as key manager: [tenant_context.rewrite] custom_webapps {} ({})",
            w.value, w.source
        );
        return fixed("wso2-apim-keymanager", &how);
    }
    match inferred_profile(f, names) {
        Some((profile, role, why)) => Identity {
            product,
            profile: Some(profile.into()),
            profile_source: format!("inferred: {why}"),
            role,
        },
        None => fixed("wso2-carbon", "none given"),
    }
}

/// A Stream Processor worker: API-M Analytics when its `wso2.carbon`
/// `type` or `name` says so (`wso2-apim-analytics`, "WSO2 API Manager
/// Analytics Server"), else a plain data-bridge receiver like DAS.
fn sp_identity(sp: &SpWorker) -> Identity {
    let name = sp.name.as_ref().map(|n| n.value.as_str());
    let product = format!(
        "{} (Stream Processor worker)",
        name.unwrap_or("WSO2 Stream Processor")
    );
    let lower = name.unwrap_or_default().to_ascii_lowercase();
    let apim = sp.kind.as_deref().is_some_and(|k| k.contains("apim"))
        || (lower.contains("api manager") && lower.contains("analytics"));
    let how = sp.name.as_ref().map_or_else(
        || "conf/worker/deployment.yaml".to_owned(),
        |n| format!("wso2.carbon name ({})", n.source),
    );
    Identity {
        product,
        profile: None,
        profile_source: how,
        role: if apim {
            "wso2-apim-analytics"
        } else {
            "wso2-das"
        },
    }
}

/// What a node with no profile is, from whom it dials (most 2.x installs
/// start without `-Dprofile`): validating keys at a remote key manager
/// (`<APIKeyValidator><ServerURL>`, `ThriftServerHost`) and talking to a
/// remote gateway (`<APIGateway><Environments><Environment><ServerURL>`)
/// is a publisher or store; the first alone a gateway; the second alone
/// (keys validated locally, gateway caches cleared remotely) a key manager.
fn inferred_profile(f: &Files, names: &[String]) -> Option<(&'static str, &'static str, String)> {
    let vars = carbon_vars(f, 0);
    let remote = |u: &UrlSetting| {
        let (eps, _) = endpoints(&u.value.value, &vars);
        eps.iter()
            .any(|e| !is_local(&e.host) && !names.iter().any(|n| n.eq_ignore_ascii_case(&e.host)))
    };
    let urls = || {
        f.apim
            .iter()
            .flat_map(|a| a.urls.iter())
            .chain(f.deployment.iter().flat_map(|d| d.urls.iter()))
    };
    let named = |u: &UrlSetting, what: &str| {
        format!("{} names a remote {what} ({})", u.setting, u.value.source)
    };
    let key = |u: &&UrlSetting| {
        u.setting.contains("APIKeyValidator") || u.setting.contains("key_manager")
    };
    let remote_km = urls()
        .filter(key)
        .find(|u| remote(u))
        .map(|u| named(u, "key manager"))
        .or_else(|| {
            let h = f.apim.as_ref()?.thrift_server_host.as_ref()?;
            (!is_local(&h.value) && !h.value.contains('$'))
                .then(|| format!("ThriftServerHost names {} ({})", h.value, h.source))
        });
    let remote_gw = urls()
        .find(|u| u.setting.contains("APIGateway Environment") && remote(u))
        .map(|u| named(u, "gateway"));
    match (remote_km, remote_gw) {
        (Some(km), Some(gw)) => Some(("publisher", "wso2-apim-publisher", format!("{km}; {gw}"))),
        (Some(km), None) => Some(("gateway", "wso2-apim-gateway", km)),
        (None, Some(gw)) => Some(("api-key-manager", "wso2-apim-keymanager", gw)),
        (None, None) => None,
    }
}

/// The properties WSO2's 2.x files use, at this node's offset.
pub(crate) fn carbon_vars(f: &Files, off: u16) -> Vars {
    let mut vars = Vars {
        props: f.start.props.clone(),
        env: f.start.env.clone(),
        ..Vars::default()
    };
    let plus = |base: u16| base.saturating_add(off).to_string();
    // The defaults behind each property: catalina-server.xml `<Connector
    // port="9443" scheme="https">` / `port="9763"`; data-bridge-config.xml
    // `<dataReceiver name="Binary">` `<config name="tcpPort">9611` /
    // `"sslPort">9711`; broker.xml `<transports><amqp><defaultConnection
    // port="5672"/>`; axis2.xml `<transportReceiver name="https"|"http">`
    // `<parameter name="port">8243|8280` (all Carbon 4.4, moved by the
    // offset).
    for (k, base) in [
        ("mgt.transport.https.port", 9443),
        ("mgt.transport.http.port", 9763),
        ("receiver.url.port", 9611),
        ("auth.url.port", 9711),
        ("jms.port", 5672),
        ("https.nio.port", 8243),
        ("http.nio.port", 8280),
    ] {
        vars.props.entry(k.to_owned()).or_insert_with(|| plus(base));
    }
    vars.props
        .entry("carbon.context".into())
        .or_insert_with(|| "/".into());
    // ${carbon.local.ip} is the node's own address: a dial to it never
    // crosses the network.
    vars.props
        .entry("carbon.local.ip".into())
        .or_insert_with(|| "localhost".into());
    vars
}

/// The offset in effect: `-DportOffset` at start-up, then
/// `deployment.toml` (which API-M 3.x/4.x renders into carbon.xml), then
/// carbon.xml.
pub(crate) fn offset(f: &Files) -> Option<Setting<u16>> {
    f.start
        .offset
        .clone()
        .or_else(|| f.deployment.as_ref().and_then(|d| d.offset.clone()))
        .or_else(|| f.carbon.as_ref().and_then(|c| c.offset.clone()))
        .or_else(|| f.sp.as_ref().and_then(|s| s.offset.clone()))
}

/// The host names the installation answers to, from its own files.
pub(crate) fn names(f: &Files) -> Vec<Setting<String>> {
    let mut out: Vec<Setting<String>> = Vec::new();
    let all = f
        .carbon
        .iter()
        .flat_map(|c| c.hostnames.iter())
        .chain(f.deployment.iter().flat_map(|d| d.hostnames.iter()));
    for n in all {
        // A template's `{{ GATEWAY_HOSTNAME }}` is not a name yet.
        let template = n.value.contains(['{', '}']) || n.value.contains(char::is_whitespace);
        if !template
            && !is_local(&n.value)
            && !out.iter().any(|o| o.value.eq_ignore_ascii_case(&n.value))
        {
            out.push(n.clone());
        }
    }
    out
}

/// The offset a role's catalog ports already include: API-M Analytics
/// ships at offset 1 (its carbon.xml `<Offset>1</Offset>`).
pub(crate) fn shipped_offset(role: &str) -> u16 {
    u16::from(role == "wso2-apim-analytics")
}

/// The `port_offset` a plan gives the installation's role: its offset
/// counted from the role's shipped one.
pub(crate) fn plan_offset(i: &Install) -> u16 {
    i.offset.saturating_sub(shipped_offset(&i.role))
}

/// Every server port: the catalog role's, moved by the offset, then
/// replaced by explicit settings.
pub(crate) fn ports(i: &Install, f: &Files) -> Vec<PortFinding> {
    if let Some(sp) = &f.sp {
        return sp_ports(i, sp);
    }
    let catalog = Catalog::builtin();
    let shipped = shipped_offset(&i.role);
    let off = plan_offset(i);
    let offset_how = |base: u16| match i.offset_source.as_str() {
        "default" => format!("default {base}"),
        _ => format!("default {} + offset {}", base - shipped, i.offset),
    };
    let mut ports: Vec<PortFinding> = Vec::new();
    for def in catalog
        .get(&i.role)
        .map(|r| r.ports.as_slice())
        .unwrap_or_default()
    {
        let base = def.port.get();
        let moved = def.offset.then_some(base.saturating_sub(shipped));
        ports.push(PortFinding {
            name: def.name.clone(),
            port: if def.offset {
                base.saturating_add(off)
            } else {
                base
            },
            protocol: def.protocol,
            source: if def.offset {
                i.offset_source.clone()
            } else {
                "default".into()
            },
            how: if def.offset {
                offset_how(base)
            } else {
                format!("fixed {base}")
            },
            setting: (def.name == "thrift-km").then(|| "ThriftServerPort".to_owned()),
            base: moved,
        });
    }
    let mut set = |name: &str, s: &Setting<u16>, how: String, base: Option<u16>, port: u16| {
        if let Some(p) = ports.iter_mut().find(|p| p.name == name) {
            p.port = port;
            p.source = s.source.to_string();
            p.how = how;
            p.base = base;
        }
    };
    if let Some(sp) = f.apim.as_ref().and_then(|a| a.thrift_server_port.as_ref()) {
        set("thrift-km", sp, "ThriftServerPort".into(), None, sp.value);
    }
    if let Some(ax) = &f.axis2 {
        for (name, s) in [("nio-http", &ax.http), ("nio-https", &ax.https)] {
            if let Some(s) = s {
                let how = format!("{} + offset {off}", s.value);
                set(name, s, how, Some(s.value), s.value.saturating_add(off));
            }
        }
    }
    let thrift_off = f
        .apim
        .as_ref()
        .and_then(|a| a.enable_thrift_server.as_ref())
        .is_some_and(|e| !e.value);
    if thrift_off || f.apim.is_none() {
        // API-M 3.x/4.x validate keys without the Thrift server.
        ports.retain(|p| p.name != "thrift-km");
    }
    if let Some(c) = f.axis2.as_ref().and_then(|a| a.cluster.as_ref()) {
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
    ports
}

/// A Stream Processor worker's ports: each data receiver's `tcpPort` and
/// `sslPort` moved by the offset (the data bridge's defaults, Thrift
/// 7611/7711 and Binary 9611/9711, when the file names no receivers), and
/// the HTTP listeners as written.
fn sp_ports(i: &Install, sp: &SpWorker) -> Vec<PortFinding> {
    let off = i.offset;
    let mut out = Vec::new();
    let mut push = |name: &str, base: u16, tls: bool, s: Option<&Setting<u16>>, kind: &str| {
        let (base, source, key) = match s {
            Some(s) => (
                s.value,
                s.source.to_string(),
                "databridge.config dataReceivers",
            ),
            None => (base, i.offset_source.clone(), "data bridge default"),
        };
        out.push(PortFinding {
            name: name.to_owned(),
            port: base.saturating_add(off),
            protocol: if tls { Protocol::Tls } else { Protocol::Tcp },
            source,
            how: format!("{key} {kind} {base} + offset {off}"),
            setting: None,
            base: Some(base),
        });
    };
    let defaults = [
        ("Thrift", "thrift", 7611, 7711),
        ("Binary", "binary", 9611, 9711),
    ];
    for (kind, name, tcp, ssl) in defaults {
        let r = sp
            .receivers
            .iter()
            .find(|r| r.kind.eq_ignore_ascii_case(kind));
        if r.is_none() && !sp.receivers.is_empty() {
            continue;
        }
        let ssl_name = format!("{name}-ssl");
        push(name, tcp, false, r.and_then(|r| r.tcp.as_ref()), "tcpPort");
        push(
            &ssl_name,
            ssl,
            true,
            r.and_then(|r| r.ssl.as_ref()),
            "sslPort",
        );
    }
    for l in &sp.listeners {
        let name = if l.https {
            "https-servlet"
        } else {
            "http-servlet"
        };
        if out.iter().any(|p| p.name == name) {
            continue;
        }
        out.push(PortFinding {
            name: name.to_owned(),
            port: l.port.value,
            protocol: if l.https {
                Protocol::Tls
            } else {
                Protocol::Tcp
            },
            source: l.port.source.to_string(),
            how: "wso2.transport.http listenerConfigurations port (not moved by the offset)"
                .to_owned(),
            setting: Some("the listener port".to_owned()),
            base: None,
        });
    }
    out
}

fn dial(
    name: &str,
    host: String,
    port: u16,
    source: String,
    how: String,
    setting: String,
) -> DialFinding {
    DialFinding {
        name: name.to_owned(),
        to_host: host,
        to_port: port,
        source,
        how,
        database: None,
        reaches: String::new(),
        setting,
    }
}

/// Every endpoint the installation dials.
pub(crate) fn dials(i: &Install, f: &Files, unresolved: &mut Vec<String>) -> Vec<DialFinding> {
    let vars = carbon_vars(f, i.offset);
    let mut out = Vec::new();
    let urls = f
        .apim
        .iter()
        .flat_map(|a| a.urls.iter())
        .chain(f.deployment.iter().flat_map(|d| d.urls.iter()))
        .chain(f.publishers.iter());
    for u in urls {
        let (eps, missing) = endpoints(&u.value.value, &vars);
        if !missing.is_empty() {
            unresolved.push(format!(
                "{}: {} {} is not set in the scanned files",
                u.value.source,
                u.setting,
                missing.join(", ")
            ));
        }
        for e in eps {
            let name = if u.name == "https-servlet" && e.scheme == "http" {
                "http-servlet"
            } else {
                u.name
            };
            let setting = format!("the port in {}", u.setting);
            out.push(dial(
                name,
                e.host,
                e.port,
                u.value.source.to_string(),
                u.setting.clone(),
                setting,
            ));
        }
    }
    if let Some(a) = &f.apim {
        thrift_dial(i, a, &vars, &mut out);
    }
    database_dials(f, &vars, unresolved, &mut out);
    if let Some(c) = f.axis2.as_ref().and_then(|a| a.cluster.as_ref()) {
        for m in &c.members {
            if m.host.eq_ignore_ascii_case(&i.host) && m.port == c.local_port.value {
                continue;
            }
            out.push(dial(
                "cluster",
                m.host.clone(),
                m.port,
                m.source.to_string(),
                "well-known member".into(),
                "the member's <port>".into(),
            ));
        }
    }
    out
}

/// The key validation Thrift client of a 2.x gateway: `ThriftServerHost`
/// (else the `ServerURL` host) at `ThriftClientPort`, else 10397 plus the
/// node's own offset.
fn thrift_dial(i: &Install, a: &ApiManagerXml, vars: &Vars, out: &mut Vec<DialFinding>) {
    let thrift_client = a
        .client_type
        .as_ref()
        .is_none_or(|t| t.value.trim() == "ThriftClient");
    if i.role != "wso2-apim-gateway" || !thrift_client {
        return;
    }
    let server_url_host = out
        .iter()
        .find(|d| d.how == "APIKeyValidator ServerURL")
        .map(|d| (d.to_host.clone(), d.source.clone()));
    let host = a
        .thrift_server_host
        .as_ref()
        .map(|h| (vars.expand(&h.value).0, h.source.to_string()))
        .filter(|(h, _)| !h.contains(super::values::UNRESOLVED) && !is_local(h))
        .or(server_url_host);
    let Some((host, host_source)) = host else {
        return;
    };
    let (port, source, how) = match &a.thrift_client_port {
        Some(p) => (p.value, p.source.to_string(), "ThriftClientPort".to_owned()),
        None => (
            10397u16.saturating_add(i.offset),
            host_source,
            format!(
                "ThriftServerHost; ThriftClientPort unset: default 10397 + offset {}",
                i.offset
            ),
        ),
    };
    out.push(dial(
        "thrift-km",
        host,
        port,
        source,
        how,
        "ThriftClientPort".into(),
    ));
}

fn database_dials(
    f: &Files,
    vars: &Vars,
    unresolved: &mut Vec<String>,
    out: &mut Vec<DialFinding>,
) {
    let all = f
        .datasources
        .iter()
        .chain(f.deployment.iter().flat_map(|d| d.databases.iter()))
        .chain(f.sp.iter().flat_map(|s| s.databases.iter()));
    for db in all {
        let (url, missing) = vars.expand(&db.url.value);
        if !missing.is_empty() {
            unresolved.push(format!(
                "{}: {} url {} is not set in the scanned files",
                db.url.source,
                db.name,
                missing.join(", ")
            ));
            continue;
        }
        let Some(j) = jdbc(&url) else { continue };
        for (host, port) in &j.servers {
            let mut d = dial(
                &j.port_name(),
                host.clone(),
                *port,
                db.url.source.to_string(),
                format!("{} JDBC url ({})", db.name, j.kind),
                format!("the port in the {} url", db.name),
            );
            d.database = Some(j.kind.clone());
            out.push(d);
        }
    }
}

/// A port the full API-M 2.x distribution opens when started without
/// `-Dprofile` (every component runs: the traffic manager's receivers and
/// broker, the key manager's Thrift server unless `EnableThriftServer` is
/// false), when a peer dials it there; `None` for a node started with a
/// profile, or a name the full distribution does not open.
pub(crate) fn full_distribution_port(i: &Install, f: &Files, name: &str) -> Option<PortFinding> {
    let apim = f.apim.as_ref()?;
    let started_plain = f.start.profile.is_none()
        && !matches!(
            i.role.as_str(),
            "wso2-apim-analytics" | "wso2-das" | "wso2-esb"
        );
    if !started_plain {
        return None;
    }
    let (role, setting) = match name {
        "binary" | "binary-ssl" | "broker" => ("wso2-apim-trafficmanager", None),
        "thrift-km" if apim.enable_thrift_server.as_ref().is_none_or(|e| e.value) => {
            ("wso2-apim-keymanager", Some("ThriftServerPort".to_owned()))
        }
        _ => return None,
    };
    let def = Catalog::builtin()
        .get(role)?
        .ports
        .iter()
        .find(|p| p.name == name)?
        .clone();
    let base = def.port.get();
    let (port, source, how) = match (&apim.thrift_server_port, name) {
        (Some(sp), "thrift-km") => (
            sp.value,
            sp.source.to_string(),
            "ThriftServerPort".to_owned(),
        ),
        _ => (
            base.saturating_add(i.offset),
            i.offset_source.clone(),
            format!(
                "default {base} + offset {} (full distribution, no -Dprofile)",
                i.offset
            ),
        ),
    };
    Some(PortFinding {
        name: name.to_owned(),
        port,
        protocol: def.protocol,
        source,
        how,
        setting,
        base: Some(base),
    })
}
