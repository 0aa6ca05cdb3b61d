//! API Manager 3.x/4.x `repository/conf/deployment.toml`, the one file the
//! server renders its XML configuration from. Keys as in WSO2's published
//! configurations (wso2/kubernetes-apim v3.1.0.4 `am-pattern-2` gateway,
//! v4.2.0.2 `am-pattern-3` gateway and control plane):
//!
//! - `[server]` `offset` (an integer, or a string such as `"0"` as the 3.1
//!   Kubernetes resources ship it; rendered into carbon.xml
//!   `<Ports><Offset>`), `hostname`, `node_ip` (`"$env{NODE_IP}"`),
//!   `server_role`;
//! - `[apim.key_manager] service_url`; `[apim.throttling] service_url` and
//!   `throttle_decision_endpoints` (the JMS broker, `tcp://TM:5672`);
//!   `[[apim.throttling.url_group]] traffic_manager_urls` /
//!   `traffic_manager_auth_urls`;
//! - 4.x `[apim.event_hub]` `enable`, `service_url`,
//!   `event_listening_endpoints`, and `[[apim.event_hub.publish.url_group]]`
//!   `urls` / `auth_urls`;
//! - 3.x `[apim.analytics] enable` (`true` or `"True"`) and
//!   `[[apim.analytics.url_group]] analytics_url` / `analytics_auth_url`;
//! - `[database.NAME] url` (and `type`);
//! - the Identity Server as key manager (API-M 3.2/4.x, wso2/docker-apim
//!   `apim-is-as-km-with-analytics` `is-as-km` deployment.toml): its
//!   `[database.identity_db]` (API-M itself has `apim_db`) and
//!   `[tenant_context.rewrite] custom_webapps = ["/keymanager-operations/"]`,
//!   the web app API-M calls on a WSO2 IS key manager.
//!
//! Read with the `toml` crate's spanned document so every value keeps its
//! line.

use std::path::Path;

use toml::Spanned;
use toml::de::{DeTable, DeValue};

use super::apim::UrlSetting;
use super::datasource::DbSetting;
use super::error::ScanError;
use super::locator::Locator;
use super::source::Setting;
use super::values::Vars;

/// The settings of `deployment.toml` that open or dial ports.
#[derive(Debug, Default)]
pub(crate) struct DeploymentToml {
    /// `[server] offset`.
    pub offset: Option<Setting<u16>>,
    /// `[server] server_role`.
    pub server_role: Option<Setting<String>>,
    /// `[server] hostname` and `node_ip`, placeholders expanded.
    pub hostnames: Vec<Setting<String>>,
    /// Every URL this node dials, with the port name it reaches.
    pub urls: Vec<UrlSetting>,
    /// `[database.*] url`.
    pub databases: Vec<DbSetting>,
    /// Placeholders that no scanned file sets.
    pub unresolved: Vec<String>,
    /// `[apim.analytics] enable`.
    pub analytics: Option<Setting<bool>>,
    /// Where `[database.identity_db]` is: a WSO2 Identity Server.
    pub identity_db: Option<Setting<String>>,
    /// Where `[tenant_context.rewrite] custom_webapps` names
    /// `/keymanager-operations/`: an Identity Server set up as API-M's key
    /// manager.
    pub km_operations: Option<Setting<String>>,
}

/// The deepest `[`/`{` nesting accepted in TOML values, checked before
/// parsing so that no nesting reaches the parser's recursion.
const MAX_TOML_NESTING: usize = 64;

type Value<'i> = Spanned<DeValue<'i>>;

fn get<'a, 'i>(t: &'a DeTable<'i>, key: &str) -> Option<&'a Value<'i>> {
    t.iter().find(|(k, _)| k.get_ref() == key).map(|(_, v)| v)
}

fn table<'a, 'i>(t: Option<&'a DeTable<'i>>, key: &str) -> Option<&'a DeTable<'i>> {
    t.and_then(|t| get(t, key))
        .and_then(|v| v.get_ref().as_table())
}

/// Reads one file's values against its locator.
struct Reader<'l, 't> {
    loc: &'l Locator<'t>,
    vars: &'l Vars,
}

impl Reader<'_, '_> {
    fn wrong(&self, v: &Value<'_>, what: &str) -> ScanError {
        ScanError::Malformed {
            at: self.loc.at(v.span().start),
            message: format!("expected {what}, found a {}", v.get_ref().type_str()),
        }
    }

    fn string(&self, v: &Value<'_>) -> Result<Setting<String>, ScanError> {
        match v.get_ref().as_str() {
            Some(s) => Ok(Setting {
                value: s.to_owned(),
                source: self.loc.at(v.span().start).line_only(),
            }),
            None => Err(self.wrong(v, "a string")),
        }
    }

    /// A string or an array of strings.
    fn strings(&self, v: &Value<'_>) -> Result<Vec<Setting<String>>, ScanError> {
        match v.get_ref().as_array() {
            Some(items) => items.iter().map(|i| self.string(i)).collect(),
            None => Ok(vec![self.string(v)?]),
        }
    }

    /// `true`, `false`, or the strings `"true"`/`"True"`/`"false"`.
    fn flag(&self, v: &Value<'_>) -> Result<Setting<bool>, ScanError> {
        let value = match v.get_ref() {
            DeValue::Boolean(b) => Some(*b),
            DeValue::String(s) if s.eq_ignore_ascii_case("true") => Some(true),
            DeValue::String(s) if s.eq_ignore_ascii_case("false") => Some(false),
            _ => None,
        };
        match value {
            Some(value) => Ok(Setting {
                value,
                source: self.loc.at(v.span().start).line_only(),
            }),
            None => Err(self.wrong(v, "true or false")),
        }
    }

    /// `[server] offset`: an integer or a string holding one or a
    /// placeholder; an unresolved placeholder is recorded, not an error.
    fn offset(&self, v: &Value<'_>, out: &mut DeploymentToml) -> Result<(), ScanError> {
        let source = self.loc.at(v.span().start);
        let text = match v.get_ref() {
            DeValue::Integer(i) => {
                let parsed = u16::from_str_radix(&i.as_str().replace('_', ""), i.radix());
                return match parsed {
                    Ok(value) => {
                        out.offset = Some(Setting {
                            value,
                            source: source.line_only(),
                        });
                        Ok(())
                    }
                    Err(_) => Err(ScanError::Malformed {
                        at: source,
                        message: format!("[server] offset must be 0..=65535, found {}", i.as_str()),
                    }),
                };
            }
            DeValue::String(s) => s.to_string(),
            _ => return Err(self.wrong(v, "a port offset (0..=65535)")),
        };
        let (value, missing) = self.vars.expand(text.trim());
        if !missing.is_empty() {
            out.unresolved.push(format!(
                "{}: [server] offset {} is not set in the scanned files",
                source.line_only(),
                missing.join(", ")
            ));
            return Ok(());
        }
        match value.trim().parse::<u16>() {
            Ok(value) => {
                out.offset = Some(Setting {
                    value,
                    source: source.line_only(),
                });
                Ok(())
            }
            Err(_) => Err(ScanError::Malformed {
                at: source,
                message: format!("[server] offset must be 0..=65535, found \"{text}\""),
            }),
        }
    }

    fn urls(
        &self,
        t: Option<&DeTable<'_>>,
        key: &str,
        name: &'static str,
        setting: &str,
        out: &mut Vec<UrlSetting>,
    ) -> Result<(), ScanError> {
        if let Some(v) = t.and_then(|t| get(t, key)) {
            for value in self.strings(v)? {
                out.push(UrlSetting {
                    name,
                    setting: setting.to_owned(),
                    value,
                });
            }
        }
        Ok(())
    }

    /// The URL keys of every table of `[[path]]` (`url_group` under `parent`).
    fn group_urls(
        &self,
        parent: Option<&DeTable<'_>>,
        path: &str,
        keys: &[(&str, &'static str)],
        out: &mut Vec<UrlSetting>,
    ) -> Result<(), ScanError> {
        for g in self.groups(parent, "url_group")? {
            for (key, name) in keys {
                let setting = format!("[[{path}]] {key}");
                self.urls(Some(g), key, name, &setting, out)?;
            }
        }
        Ok(())
    }

    /// Every table of an array of tables such as `[[apim.throttling.url_group]]`.
    fn groups<'a, 'i>(
        &self,
        t: Option<&'a DeTable<'i>>,
        key: &str,
    ) -> Result<Vec<&'a DeTable<'i>>, ScanError> {
        let Some(v) = t.and_then(|t| get(t, key)) else {
            return Ok(Vec::new());
        };
        let Some(items) = v.get_ref().as_array() else {
            return Err(self.wrong(v, &format!("an array of tables ([[…{key}]])")));
        };
        items
            .iter()
            .map(|g| {
                g.get_ref()
                    .as_table()
                    .ok_or_else(|| self.wrong(g, "a table"))
            })
            .collect()
    }
}

/// Refuses nesting deeper than [`MAX_TOML_NESTING`] (outside strings and
/// comments), at the bracket that passes it.
fn check_nesting(loc: &Locator<'_>, text: &str) -> Result<(), ScanError> {
    let mut depth = 0usize;
    let mut quote: Option<u8> = None;
    let mut comment = false;
    let mut escaped = false;
    for (i, b) in text.bytes().enumerate() {
        match (quote, b) {
            _ if comment => comment = b != b'\n',
            _ if escaped => escaped = false,
            (Some(b'"'), b'\\') => escaped = true,
            (Some(q), _) if b == q => quote = None,
            (Some(_), _) => {}
            (None, b'"' | b'\'') => quote = Some(b),
            (None, b'#') => comment = true,
            (None, b'[' | b'{') => {
                depth += 1;
                if depth > MAX_TOML_NESTING {
                    return Err(loc.malformed(
                        i,
                        format!("arrays or tables nested deeper than {MAX_TOML_NESTING}"),
                    ));
                }
            }
            (None, b']' | b'}') => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    Ok(())
}

pub(crate) fn read_deployment(
    file: &Path,
    text: &str,
    vars: &Vars,
) -> Result<DeploymentToml, ScanError> {
    let loc = Locator::new(file, text);
    check_nesting(&loc, text)?;
    let doc = DeTable::parse(text).map_err(|e| {
        loc.malformed(
            e.span().map_or(0, |s| s.start),
            e.message().trim_end().replace('\n', "; "),
        )
    })?;
    let mut vars = vars.clone();
    let root = doc.get_ref();
    collect_refs(root, "", &mut vars, 0);
    let r = Reader {
        loc: &loc,
        vars: &vars,
    };
    let mut out = DeploymentToml::default();
    read_server(&r, table(Some(root), "server"), &mut out)?;
    read_apim(&r, table(Some(root), "apim"), &mut out)?;
    if let Some(dbs) = table(Some(root), "database") {
        for (name, v) in dbs.iter() {
            let Some(t) = v.get_ref().as_table() else {
                continue;
            };
            if let Some(url) = get(t, "url") {
                let url = r.string(url)?;
                if name.get_ref() == "identity_db" {
                    out.identity_db = Some(url.clone());
                }
                out.databases.push(DbSetting {
                    name: format!("[database.{}]", name.get_ref()),
                    url,
                });
            }
        }
    }
    let rewrite = table(table(Some(root), "tenant_context"), "rewrite");
    if let Some(v) = rewrite.and_then(|t| get(t, "custom_webapps")) {
        out.km_operations = r
            .strings(v)?
            .into_iter()
            .find(|w| w.value.contains("keymanager-operations"));
    }
    Ok(out)
}

/// Every string value as `$ref{table.key}` sees it.
fn collect_refs(t: &DeTable<'_>, prefix: &str, vars: &mut Vars, depth: usize) {
    for (k, v) in t.iter() {
        let key = if prefix.is_empty() {
            k.get_ref().to_string()
        } else {
            format!("{prefix}.{}", k.get_ref())
        };
        match v.get_ref() {
            DeValue::String(s) => {
                vars.refs.insert(key, s.to_string());
            }
            DeValue::Table(inner) if depth < 4 => collect_refs(inner, &key, vars, depth + 1),
            _ => {}
        }
    }
}

fn read_server(
    r: &Reader<'_, '_>,
    server: Option<&DeTable<'_>>,
    out: &mut DeploymentToml,
) -> Result<(), ScanError> {
    let Some(s) = server else {
        return Ok(());
    };
    if let Some(o) = get(s, "offset") {
        r.offset(o, out)?;
    }
    if let Some(role) = get(s, "server_role") {
        out.server_role = Some(r.string(role)?);
    }
    for key in ["hostname", "node_ip"] {
        let Some(v) = get(s, key) else { continue };
        let raw = r.string(v)?;
        let (value, missing) = r.vars.expand(&raw.value);
        if !missing.is_empty() {
            out.unresolved.push(format!(
                "{}: [server] {key} {} is not set in the scanned files",
                raw.source,
                missing.join(", ")
            ));
        } else if !value.is_empty() && !out.hostnames.iter().any(|h| h.value == value) {
            out.hostnames.push(Setting {
                value,
                source: raw.source,
            });
        }
    }
    Ok(())
}

fn read_apim(
    r: &Reader<'_, '_>,
    apim: Option<&DeTable<'_>>,
    out: &mut DeploymentToml,
) -> Result<(), ScanError> {
    for (t, key, name) in [
        ("key_manager", "service_url", "https-servlet"),
        ("throttling", "service_url", "https-servlet"),
        ("throttling", "throttle_decision_endpoints", "broker"),
    ] {
        let setting = format!("[apim.{t}] {key}");
        r.urls(table(apim, t), key, name, &setting, &mut out.urls)?;
    }
    r.group_urls(
        table(apim, "throttling"),
        "apim.throttling.url_group",
        &[
            ("traffic_manager_urls", "binary"),
            ("traffic_manager_auth_urls", "binary-ssl"),
        ],
        &mut out.urls,
    )?;
    let hub = table(apim, "event_hub");
    let hub_on = match hub.and_then(|h| get(h, "enable")) {
        Some(v) => r.flag(v)?.value,
        None => hub.is_some(),
    };
    if hub_on {
        for (key, name) in [
            ("service_url", "https-servlet"),
            ("event_listening_endpoints", "broker"),
        ] {
            let setting = format!("[apim.event_hub] {key}");
            r.urls(hub, key, name, &setting, &mut out.urls)?;
        }
        r.group_urls(
            table(hub, "publish"),
            "apim.event_hub.publish.url_group",
            &[("urls", "binary"), ("auth_urls", "binary-ssl")],
            &mut out.urls,
        )?;
    }
    let analytics = table(apim, "analytics");
    out.analytics = analytics
        .and_then(|a| get(a, "enable"))
        .map(|v| r.flag(v))
        .transpose()?;
    if out.analytics.as_ref().is_some_and(|a| a.value) {
        r.group_urls(
            analytics,
            "apim.analytics.url_group",
            &[
                ("analytics_url", "thrift"),
                ("analytics_auth_url", "thrift-ssl"),
            ],
            &mut out.urls,
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(text: &str) -> Result<DeploymentToml, ScanError> {
        read_deployment(Path::new("d.toml"), text, &Vars::default())
    }

    #[test]
    fn offset_role_and_urls_keep_their_lines() {
        let d = read(
            "[server]\noffset = 1\nserver_role = \"traffic-manager\"\n\n[[apim.throttling.url_group]]\ntraffic_manager_urls = [\"tcp://tm:9612\"]\n",
        )
        .unwrap();
        let o = d.offset.unwrap();
        assert_eq!((o.value, o.source.to_string()), (1, "d.toml:2".into()));
        assert_eq!(d.urls[0].value.source.line, 6);
        let err = read("[server]\noffset = \"x\"\n").unwrap_err();
        assert_eq!(
            err.to_string(),
            "d.toml:2:10: [server] offset must be 0..=65535, found \"x\""
        );
        let err = read("[server]\noffset = two\n").unwrap_err();
        assert!(err.to_string().starts_with("d.toml:2:10: "), "{err}");
    }

    #[test]
    fn quoted_offsets_and_placeholders_as_wso2_ships_them() {
        let d = read("[server]\noffset = \"0\"\nnode_ip = \"$env{NODE_IP}\"\n").unwrap();
        assert_eq!(d.offset.unwrap().value, 0);
        assert_eq!(
            d.unresolved,
            vec!["d.toml:3: [server] node_ip $env{NODE_IP} is not set in the scanned files"]
        );
        let mut vars = Vars::default();
        vars.env.insert("OFF".into(), "4".into());
        let d = read_deployment(
            Path::new("d.toml"),
            "[server]\noffset = \"$env{OFF}\"\n",
            &vars,
        )
        .unwrap();
        assert_eq!(d.offset.unwrap().value, 4);
    }

    #[test]
    fn nesting_is_refused_before_the_parser_sees_it() {
        let text = format!("a = {}{}\n", "[".repeat(100_000), "]".repeat(100_000));
        let err = read(&text).unwrap_err();
        assert!(err.to_string().contains("nested deeper than 64"), "{err}");
    }
}
