//! API Manager 3.x/4.x `repository/conf/deployment.toml`, the one file the
//! server renders its XML configuration from: `[server] offset` (rendered
//! into carbon.xml `<Ports><Offset>`) and `server_role`,
//! `[apim.key_manager] service_url`, and the throttling receivers
//! `[[apim.throttling.url_group]] traffic_manager_urls` /
//! `traffic_manager_auth_urls` (as in wso2/docs-apim's distributed
//! deployment pages). Read with the `toml` crate's spanned document so
//! every value keeps its line.

use std::path::Path;

use toml::Spanned;
use toml::de::{DeTable, DeValue};

use super::{ScanError, Setting, Source};

/// The settings of `deployment.toml` that open or dial ports.
#[derive(Debug, Default)]
pub(crate) struct DeploymentToml {
    /// `[server] offset`.
    pub offset: Option<Setting<u16>>,
    /// `[server] server_role`.
    pub server_role: Option<Setting<String>>,
    /// `[apim.key_manager] service_url`.
    pub key_manager_url: Option<Setting<String>>,
    /// Every `traffic_manager_urls` item of `[[apim.throttling.url_group]]`.
    pub tm_urls: Vec<Setting<String>>,
    /// Every `traffic_manager_auth_urls` item.
    pub tm_auth_urls: Vec<Setting<String>>,
}

fn get<'a, 'i>(t: &'a DeTable<'i>, key: &str) -> Option<&'a Spanned<DeValue<'i>>> {
    t.iter().find(|(k, _)| k.get_ref() == key).map(|(_, v)| v)
}

pub(crate) fn read_deployment(file: &Path, text: &str) -> Result<DeploymentToml, ScanError> {
    let doc = DeTable::parse(text).map_err(|e| ScanError::Malformed {
        at: Source::at(file, text, e.span().map_or(0, |s| s.start)),
        message: e.message().trim_end().replace('\n', "; "),
    })?;
    let at = |v: &Spanned<DeValue<'_>>| Source::at(file, text, v.span().start);
    let wrong = |v: &Spanned<DeValue<'_>>, what: &str| ScanError::Malformed {
        at: at(v),
        message: format!("expected {what}, found a {}", v.get_ref().type_str()),
    };
    let string = |v: &Spanned<DeValue<'_>>| -> Result<Setting<String>, ScanError> {
        match v.get_ref().as_str() {
            Some(s) => Ok(Setting {
                value: s.to_owned(),
                source: at(v).line_only(),
            }),
            None => Err(wrong(v, "a string")),
        }
    };
    let table = |v: &'_ Spanned<DeValue<'_>>| v.get_ref().as_table().is_some();
    let root = doc.get_ref();
    let mut out = DeploymentToml::default();
    if let Some(server) = get(root, "server") {
        let Some(s) = server.get_ref().as_table() else {
            return Err(wrong(server, "a table"));
        };
        if let Some(o) = get(s, "offset") {
            let parsed = o
                .get_ref()
                .as_integer()
                .and_then(|i| u16::from_str_radix(&i.as_str().replace('_', ""), i.radix()).ok());
            match parsed {
                Some(value) => {
                    out.offset = Some(Setting {
                        value,
                        source: at(o).line_only(),
                    });
                }
                None => return Err(wrong(o, "a port offset (0..=65535)")),
            }
        }
        if let Some(r) = get(s, "server_role") {
            out.server_role = Some(string(r)?);
        }
    }
    let apim = get(root, "apim").filter(|v| table(v));
    let apim = apim.and_then(|v| v.get_ref().as_table());
    if let Some(km) = apim.and_then(|a| get(a, "key_manager")) {
        if let Some(url) = km.get_ref().as_table().and_then(|t| get(t, "service_url")) {
            out.key_manager_url = Some(string(url)?);
        }
    }
    let throttling = apim
        .and_then(|a| get(a, "throttling"))
        .and_then(|t| t.get_ref().as_table());
    if let Some(groups) = throttling.and_then(|t| get(t, "url_group")) {
        let Some(groups) = groups.get_ref().as_array() else {
            return Err(wrong(
                groups,
                "an array of tables ([[apim.throttling.url_group]])",
            ));
        };
        for g in groups.iter() {
            let Some(g) = g.get_ref().as_table() else {
                return Err(wrong(g, "a table"));
            };
            for (key, into) in [
                ("traffic_manager_urls", &mut out.tm_urls),
                ("traffic_manager_auth_urls", &mut out.tm_auth_urls),
            ] {
                if let Some(v) = get(g, key) {
                    match v.get_ref().as_array() {
                        Some(items) => {
                            for item in items.iter() {
                                into.push(string(item)?);
                            }
                        }
                        None => into.push(string(v)?),
                    }
                }
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offset_role_and_urls_keep_their_lines() {
        let d = read_deployment(
            Path::new("d.toml"),
            "[server]\noffset = 1\nserver_role = \"traffic-manager\"\n\n[[apim.throttling.url_group]]\ntraffic_manager_urls = [\"tcp://tm:9612\"]\n",
        )
        .unwrap();
        let o = d.offset.unwrap();
        assert_eq!((o.value, o.source.to_string()), (1, "d.toml:2".into()));
        assert_eq!(d.tm_urls[0].source.line, 6);
        let err = read_deployment(Path::new("d.toml"), "[server]\noffset = \"x\"\n").unwrap_err();
        assert_eq!(
            err.to_string(),
            "d.toml:2:10: expected a port offset (0..=65535), found a string"
        );
        let err = read_deployment(Path::new("d.toml"), "[server]\noffset = two\n").unwrap_err();
        assert!(err.to_string().starts_with("d.toml:2:10: "), "{err}");
    }
}
