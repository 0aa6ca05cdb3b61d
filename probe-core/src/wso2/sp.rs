//! The Stream Processor based API-M Analytics worker (API-M Analytics 2.5
//! to 3.x, the `wso2am-analytics` distribution on WSO2 SP): its
//! `conf/worker/deployment.yaml`.
//!
//! Keys as WSO2 publishes the file (wso2/docker-apim
//! `docker-compose/apim-with-analytics/apim-analytics-worker/conf/worker/
//! deployment.yaml`, wso2/kubernetes-apim's `apim-analytics-worker`
//! ConfigMaps): `wso2.carbon` `type: wso2-apim-analytics`, `id:
//! wso2-am-analytics`, `name: WSO2 API Manager Analytics Server`, `ports:
//! offset: 1`; `databridge.config` `dataReceivers[].dataReceiver` `type:
//! Thrift` (`tcpPort: '7611'`, `sslPort: '7711'`) and `type: Binary`
//! (`'9611'`, `'9711'`), which the data bridge moves by the offset, so a
//! shipped worker receives on 7612/7712 — what a shipped gateway dials
//! (`[[apim.analytics.url_group]] analytics_url = ["tcp://…:7612"]`; API-M
//! Analytics 3.0 docs, "Default Ports of WSO2 API-M Analytics": 7612,
//! 7712, 7444, 9444); `wso2.transport.http` `listenerConfigurations[]`
//! (`default` 9091, `msf4j-https` 9444 with `scheme: https`), written at
//! their effective value (the same file's Siddhi store API listener says
//! 7444 and the shipped gateway's `store_api_url` dials 7444); and
//! `wso2.datasources` `dataSources[]` `definition.configuration.jdbcUrl`.

use std::path::Path;

use super::datasource::DbSetting;
use super::error::ScanError;
use super::source::Setting;
use super::values::Vars;
use super::yaml::{Node, parse_yaml};

/// One `databridge.config` data receiver.
#[derive(Debug)]
pub(crate) struct Receiver {
    /// `Thrift` or `Binary`.
    pub kind: String,
    /// `properties: tcpPort`, before the offset.
    pub tcp: Option<Setting<u16>>,
    /// `properties: sslPort`, before the offset.
    pub ssl: Option<Setting<u16>>,
}

/// One `wso2.transport.http` listener.
#[derive(Debug)]
pub(crate) struct Listener {
    /// `scheme: https`.
    pub https: bool,
    /// `port`, as written (not moved by the offset).
    pub port: Setting<u16>,
}

/// What a worker's `deployment.yaml` says.
#[derive(Debug, Default)]
pub(crate) struct SpWorker {
    /// `wso2.carbon: name`, e.g. "WSO2 API Manager Analytics Server".
    pub name: Option<Setting<String>>,
    /// `wso2.carbon: type`, e.g. `wso2-apim-analytics`.
    pub kind: Option<String>,
    /// `wso2.carbon: ports: offset`.
    pub offset: Option<Setting<u16>>,
    /// `databridge.config: dataReceivers`; empty when the file has none
    /// (the data bridge then uses its defaults).
    pub receivers: Vec<Receiver>,
    /// `wso2.transport.http: listenerConfigurations`.
    pub listeners: Vec<Listener>,
    /// `wso2.datasources: dataSources[]` JDBC URLs.
    pub databases: Vec<DbSetting>,
    /// Placeholders no scanned file sets.
    pub unresolved: Vec<String>,
}

/// A port-like scalar, placeholders expanded; an unresolved one is
/// recorded, not guessed.
fn port(
    n: &Node,
    key: &str,
    vars: &Vars,
    unresolved: &mut Vec<String>,
) -> Result<Option<Setting<u16>>, ScanError> {
    let Some(t) = n.text() else { return Ok(None) };
    let (value, missing) = vars.expand(t);
    if !missing.is_empty() {
        unresolved.push(format!(
            "{}: `{key}` {} is not set in the scanned files",
            n.at().line_only(),
            missing.join(", ")
        ));
        return Ok(None);
    }
    match value.trim().parse::<u16>() {
        Ok(value) => Ok(Some(Setting {
            value,
            source: n.at().line_only(),
        })),
        Err(_) => Err(ScanError::Malformed {
            at: n.at(),
            message: format!("`{key}` must be a port (0..=65535), found `{t}`"),
        }),
    }
}

pub(crate) fn read_sp_worker(file: &Path, text: &str, vars: &Vars) -> Result<SpWorker, ScanError> {
    let root = parse_yaml(file, text)?;
    let mut out = SpWorker::default();
    if let Some(c) = root.get("wso2.carbon") {
        out.name = c.get("name").and_then(Node::setting);
        out.kind = c.get("type").and_then(Node::text).map(str::to_owned);
        if let Some(o) = c.path(&["ports", "offset"]) {
            out.offset = port(o, "ports: offset", vars, &mut out.unresolved)?;
        }
    }
    let receivers = root
        .path(&["databridge.config", "dataReceivers"])
        .map(Node::items)
        .unwrap_or_default();
    for r in receivers.iter().filter_map(|r| r.get("dataReceiver")) {
        let Some(kind) = r.get("type").and_then(Node::text) else {
            continue;
        };
        let props = r.get("properties");
        let mut get = |key: &str| match props.and_then(|p| p.get(key)) {
            Some(n) => port(n, key, vars, &mut out.unresolved),
            None => Ok(None),
        };
        let (tcp, ssl) = (get("tcpPort")?, get("sslPort")?);
        out.receivers.push(Receiver {
            kind: kind.trim().to_owned(),
            tcp,
            ssl,
        });
    }
    let listeners = root
        .path(&["wso2.transport.http", "listenerConfigurations"])
        .map(Node::items)
        .unwrap_or_default();
    for l in listeners {
        let Some(p) = l.get("port") else { continue };
        if let Some(port) = port(p, "port", vars, &mut out.unresolved)? {
            let https = l
                .get("scheme")
                .and_then(Node::text)
                .is_some_and(|s| s.trim().eq_ignore_ascii_case("https"));
            out.listeners.push(Listener { https, port });
        }
    }
    let sources = root
        .path(&["wso2.datasources", "dataSources"])
        .map(Node::items)
        .unwrap_or_default();
    for d in sources {
        let url = d.path(&["definition", "configuration", "jdbcUrl"]);
        if let Some(url) = url.and_then(Node::setting) {
            let name = d.get("name").and_then(Node::text).unwrap_or("datasource");
            out.databases.push(DbSetting {
                name: name.trim().to_owned(),
                url,
            });
        }
    }
    Ok(out)
}
