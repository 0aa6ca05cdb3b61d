//! API Manager 2.x `repository/conf/api-manager.xml`. Element names as in
//! WSO2's published 2.1.0 and 2.6.0 configurations (wso2/kubernetes-apim
//! `pattern-1/confs/*/repository/conf/api-manager.xml` at v2.1.0.2,
//! `advanced/helm/am-pattern-2/confs/*/api-manager.xml` at v2.6.0.9):
//!
//! - `<APIKeyValidator>`: `ServerURL` (the key manager's admin services),
//!   `KeyValidatorClientType` (`ThriftClient` or `WSClient`),
//!   `ThriftClientPort`, `ThriftServerPort` (both shipped commented out:
//!   10397 plus the offset), `ThriftServerHost` ("Gateway uses this
//!   parameter to connect to the key validation Thrift service"),
//!   `EnableThriftServer`;
//! - `<APIGateway><Environments><Environment><ServerURL>`: the gateway
//!   manager a publisher deploys to;
//! - throttling: 2.2+ `<ThrottlingConfigurations><TrafficManager>`
//!   `ReceiverUrlGroup`/`AuthUrlGroup`; 2.0/2.1 the same two under
//!   `<ThrottlingConfigurations><DataPublisher>` (whose `<Enabled>` turns
//!   publishing off); the JMS throttle-decision subscription
//!   `<JMSConnectionDetails>` (`Enabled`, `ServiceURL`,
//!   `<JMSConnectionParameters><connectionfactory.TopicConnectionFactory>`
//!   with its `brokerlist`);
//! - analytics: `<Analytics><Enabled>` and `DASServerURL`/`DASAuthServerURL`
//!   (2.0–2.2), `StreamProcessorServerURL`/`StreamProcessorAuthServerURL`
//!   (2.5/2.6); nothing is dialled when `Enabled` is not `true`, as
//!   shipped.

use std::path::Path;

use super::error::ScanError;
use super::source::Setting;
use super::values::Vars;
use super::xml::{Element, parse_xml};

/// A setting holding endpoint URLs, and the port name its endpoints reach.
#[derive(Debug, Clone)]
pub(crate) struct UrlSetting {
    /// The catalog's name of the server port it dials.
    pub name: &'static str,
    /// The element or key, for findings and fixes.
    pub setting: String,
    /// The value and where.
    pub value: Setting<String>,
}

/// The settings of `api-manager.xml` that open or dial ports.
#[derive(Debug, Default)]
pub(crate) struct ApiManagerXml {
    /// `<KeyValidatorClientType>`: `ThriftClient` or `WSClient`.
    pub client_type: Option<Setting<String>>,
    /// `<ThriftClientPort>`; when absent the client dials 10397 plus the
    /// node's own offset (API-M 2.6 docs: "The port offset ... affects the
    /// ports of the Thrift client and server as well").
    pub thrift_client_port: Option<Setting<u16>>,
    /// `<ThriftServerPort>`; when absent 10397 plus the offset.
    pub thrift_server_port: Option<Setting<u16>>,
    /// `<ThriftServerHost>`.
    pub thrift_server_host: Option<Setting<String>>,
    /// `<EnableThriftServer>`.
    pub enable_thrift_server: Option<Setting<bool>>,
    /// `<Analytics><Enabled>`.
    pub analytics: Option<Setting<bool>>,
    /// Every URL this node dials, with the port name it reaches.
    pub urls: Vec<UrlSetting>,
    /// Placeholders that no scanned file sets.
    pub unresolved: Vec<String>,
}

/// Is `<Enabled>` under `e` true (`default` when absent)?
fn enabled(e: Option<&Element>, default: bool) -> bool {
    e.and_then(|e| e.child("Enabled"))
        .and_then(Element::flag)
        .map_or(default, |f| f.value)
}

/// Collects the URL settings of one file.
#[derive(Default)]
struct Urls(Vec<UrlSetting>);

impl Urls {
    fn add(&mut self, name: &'static str, setting: &str, e: Option<&Element>) {
        if let Some(e) = e.filter(|e| !e.text.is_empty()) {
            self.0.push(UrlSetting {
                name,
                setting: setting.to_owned(),
                value: e.setting(),
            });
        }
    }
}

pub(crate) fn read_api_manager(
    file: &Path,
    text: &str,
    vars: &Vars,
) -> Result<ApiManagerXml, ScanError> {
    let root = parse_xml(file, text)?;
    let mut out = ApiManagerXml::default();
    let kv = root.child("APIKeyValidator");
    key_validator(kv, vars, &mut out)?;
    let mut urls = Urls::default();
    urls.add(
        "https-servlet",
        "APIKeyValidator ServerURL",
        kv.and_then(|k| k.child("ServerURL")),
    );
    for env in root
        .path(&["APIGateway", "Environments"])
        .into_iter()
        .flat_map(|e| e.children.iter().filter(|c| c.name == "Environment"))
    {
        urls.add(
            "https-servlet",
            "APIGateway Environment ServerURL",
            env.child("ServerURL"),
        );
    }
    throttling(root.child("ThrottlingConfigurations"), &mut urls);
    let analytics = root.child("Analytics");
    out.analytics = analytics
        .and_then(|a| a.child("Enabled"))
        .and_then(Element::flag);
    if out.analytics.as_ref().is_some_and(|f| f.value) {
        let a = |n: &str| analytics.and_then(|a| a.child(n));
        for (name, element) in [
            ("thrift", "DASServerURL"),
            ("thrift-ssl", "DASAuthServerURL"),
            ("thrift", "StreamProcessorServerURL"),
            ("thrift-ssl", "StreamProcessorAuthServerURL"),
        ] {
            urls.add(name, &format!("Analytics {element}"), a(element));
        }
    }
    out.urls = urls.0;
    Ok(out)
}

/// `<APIKeyValidator>`'s Thrift settings.
fn key_validator(
    kv: Option<&Element>,
    vars: &Vars,
    out: &mut ApiManagerXml,
) -> Result<(), ScanError> {
    let port = "a port (1..=65535)";
    let kv_child = |name: &str| kv.and_then(|k| k.child(name));
    out.client_type = kv_child("KeyValidatorClientType").map(Element::setting);
    if let Some(e) = kv_child("ThriftClientPort") {
        out.thrift_client_port = e.number(port, vars, &mut out.unresolved)?;
    }
    if let Some(e) = kv_child("ThriftServerPort") {
        out.thrift_server_port = e.number(port, vars, &mut out.unresolved)?;
    }
    out.thrift_server_host = kv_child("ThriftServerHost").map(Element::setting);
    if let Some(e) = kv_child("EnableThriftServer") {
        out.enable_thrift_server = match e.flag() {
            Some(f) => Some(f),
            None => {
                return Err(ScanError::Malformed {
                    at: e.at(),
                    message: format!(
                        "<EnableThriftServer> must be true or false, found `{}`",
                        e.text
                    ),
                });
            }
        };
    }
    Ok(())
}

/// `<ThrottlingConfigurations>`: the event publishers of both layouts
/// and the JMS throttle-decision subscription.
fn throttling(throttling: Option<&Element>, urls: &mut Urls) {
    // 2.0/2.1 keep the receivers under <DataPublisher>, whose <Enabled>
    // turns publishing off; 2.2+ moved them to <TrafficManager>.
    let publishing = enabled(throttling.and_then(|t| t.child("DataPublisher")), true);
    for layout in ["TrafficManager", "DataPublisher"] {
        if !publishing {
            break;
        }
        let parent = throttling.and_then(|t| t.child(layout));
        let child = |n: &str| parent.and_then(|p| p.child(n));
        urls.add(
            "binary",
            &format!("ThrottlingConfigurations {layout} ReceiverUrlGroup"),
            child("ReceiverUrlGroup"),
        );
        urls.add(
            "binary-ssl",
            &format!("ThrottlingConfigurations {layout} AuthUrlGroup"),
            child("AuthUrlGroup"),
        );
    }
    let jms = throttling.and_then(|t| t.child("JMSConnectionDetails"));
    if jms.is_some() && enabled(jms, true) {
        let jms_child = |path: &[&str]| jms.and_then(|j| j.path(path));
        urls.add(
            "broker",
            "JMSConnectionDetails ServiceURL",
            jms_child(&["ServiceURL"]),
        );
        urls.add(
            "broker",
            "JMSConnectionDetails connectionfactory.TopicConnectionFactory brokerlist",
            jms_child(&[
                "JMSConnectionParameters",
                "connectionfactory.TopicConnectionFactory",
            ]),
        );
    }
}
