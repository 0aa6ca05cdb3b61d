//! API Manager 2.x `repository/conf/api-manager.xml`: how a node validates
//! keys (`<APIKeyValidator>`: `ServerURL`, `KeyValidatorClientType`,
//! `ThriftClientPort`, `ThriftServerPort`, `ThriftServerHost`,
//! `EnableThriftServer`), where it sends throttling events
//! (`<ThrottlingConfigurations><TrafficManager>` `ReceiverUrlGroup` and
//! `AuthUrlGroup`) and analytics (`<Analytics>` `DASServerURL`,
//! `DASAuthServerURL`). Element names as in carbon-apimgt's shipped
//! api-manager.xml and the API-M 2.6 documentation (wso2/docs-apim).

use std::path::Path;

use super::{ScanError, Setting, parse_xml};

/// The settings of `api-manager.xml` that open or dial ports.
#[derive(Debug, Default)]
pub(crate) struct ApiManagerXml {
    /// `<APIKeyValidator><ServerURL>`: the key manager's admin services.
    pub server_url: Option<Setting<String>>,
    /// `<KeyValidatorClientType>`: `ThriftClient` or `WSClient`.
    pub client_type: Option<Setting<String>>,
    /// `<ThriftClientPort>`; when absent the client dials 10397 plus the
    /// node's own offset (API-M 2.6 docs: "The port offset ... affects the
    /// ports of the Thrift client and server as well").
    pub thrift_client_port: Option<Setting<u16>>,
    /// `<ThriftServerPort>`; when absent 10397 plus the offset.
    pub thrift_server_port: Option<Setting<u16>>,
    /// `<ThriftServerHost>`: where the Thrift server binds on a key manager,
    /// and the host a gateway's Thrift client connects to (API-M 2.6
    /// distributed-deployment guide: "Gateway uses this parameter to connect
    /// to the key validation Thrift service").
    pub thrift_server_host: Option<Setting<String>>,
    /// `<EnableThriftServer>`.
    pub enable_thrift_server: Option<Setting<bool>>,
    /// `<ThrottlingConfigurations><TrafficManager><ReceiverUrlGroup>`.
    pub receiver_urls: Option<Setting<String>>,
    /// `<ThrottlingConfigurations><TrafficManager><AuthUrlGroup>`.
    pub auth_urls: Option<Setting<String>>,
    /// `<Analytics><DASServerURL>`.
    pub das_url: Option<Setting<String>>,
    /// `<Analytics><DASAuthServerURL>`.
    pub das_auth_url: Option<Setting<String>>,
}

pub(crate) fn read_api_manager(file: &Path, text: &str) -> Result<ApiManagerXml, ScanError> {
    let root = parse_xml(file, text)?;
    let text_at = |path: &[&str]| root.path(path).map(super::Element::setting);
    let kv = |name: &str| root.path(&["APIKeyValidator", name]);
    let enable = match kv("EnableThriftServer") {
        Some(e) => Some(e.number::<bool>("true or false")?),
        None => None,
    };
    Ok(ApiManagerXml {
        server_url: text_at(&["APIKeyValidator", "ServerURL"]),
        client_type: text_at(&["APIKeyValidator", "KeyValidatorClientType"]),
        thrift_client_port: kv("ThriftClientPort")
            .map(|e| e.number::<u16>("a port (1..=65535)"))
            .transpose()?,
        thrift_server_port: kv("ThriftServerPort")
            .map(|e| e.number::<u16>("a port (1..=65535)"))
            .transpose()?,
        thrift_server_host: text_at(&["APIKeyValidator", "ThriftServerHost"]),
        enable_thrift_server: enable,
        receiver_urls: text_at(&[
            "ThrottlingConfigurations",
            "TrafficManager",
            "ReceiverUrlGroup",
        ]),
        auth_urls: text_at(&["ThrottlingConfigurations", "TrafficManager", "AuthUrlGroup"]),
        das_url: text_at(&["Analytics", "DASServerURL"]),
        das_auth_url: text_at(&["Analytics", "DASAuthServerURL"]),
    })
}
