//! The Carbon kernel's files: `repository/conf/carbon.xml` (product name,
//! version, host names, port offset), `repository/conf/axis2/axis2.xml`
//! (the NIO transports and Hazelcast clustering) and `bin/wso2server.sh`
//! (system properties given at start-up, which win over the files).
//!
//! Element names as carbon-kernel 4.4's `carbon.xml.j2` renders them
//! (`<Server><Name>`, `<Version>`, `<HostName>{{server.hostname}}`,
//! `<MgtHostName>`, `<Ports><Offset>{{server.offset}}`) and as WSO2's
//! published API-M 2.1/2.6 configurations (wso2/kubernetes-apim,
//! wso2/docker-apim) write them.

use std::collections::BTreeMap;
use std::path::Path;

use super::error::ScanError;
use super::locator::Locator;
use super::source::{Setting, Source};
use super::values::Vars;
use super::xml::{Element, parse_xml};

/// What `carbon.xml` says.
#[derive(Debug, Default)]
pub(crate) struct CarbonXml {
    /// `<Server><Name>`, e.g. "WSO2 API Manager" or "WSO2 API Manager
    /// Analytics Server" (API-M Analytics 2.1 carbon.xml).
    pub name: Option<String>,
    /// `<Server><Version>`.
    pub version: Option<String>,
    /// `<Server><Ports><Offset>`: the Carbon kernel adds it to every port
    /// it opens (WSO2 docs, "Changing the Default Ports with Offset").
    pub offset: Option<Setting<u16>>,
    /// `<HostName>` and `<MgtHostName>`: the names this node is reached by
    /// (`wso2apim-analytics` in API-M Analytics 2.1's published carbon.xml).
    pub hostnames: Vec<Setting<String>>,
    /// Placeholders these settings use that no scanned file sets.
    pub unresolved: Vec<String>,
}

pub(crate) fn read_carbon(file: &Path, text: &str, vars: &Vars) -> Result<CarbonXml, ScanError> {
    let root = parse_xml(file, text)?;
    let mut unresolved = Vec::new();
    let offset = match root.path(&["Ports", "Offset"]) {
        Some(e) => e.number::<u16>("a port offset (0..=65535)", vars, &mut unresolved)?,
        None => None,
    };
    let mut hostnames = Vec::new();
    for name in ["HostName", "MgtHostName"] {
        if let Some(e) = root.child(name) {
            host_setting(e, vars, &mut hostnames, &mut unresolved);
        }
    }
    Ok(CarbonXml {
        name: root.child("Name").map(|e| e.text.clone()),
        version: root.child("Version").map(|e| e.text.clone()),
        offset,
        hostnames,
        unresolved,
    })
}

/// A host-name element, its placeholders expanded; an unresolved one is
/// recorded, not guessed.
fn host_setting(
    e: &Element,
    vars: &Vars,
    into: &mut Vec<Setting<String>>,
    unresolved: &mut Vec<String>,
) {
    let (value, missing) = vars.expand(e.text.trim());
    if !missing.is_empty() {
        unresolved.push(format!(
            "{}: <{}> {} is not set in the scanned files",
            e.at().line_only(),
            e.name,
            missing.join(", ")
        ));
    } else if !value.is_empty() && !into.iter().any(|s| s.value == value) {
        into.push(Setting {
            value,
            source: e.at().line_only(),
        });
    }
}

/// A well-known member of a Hazelcast cluster.
#[derive(Debug, Clone)]
pub(crate) struct Member {
    pub host: String,
    pub port: u16,
    pub source: Source,
}

/// What `axis2.xml` says.
#[derive(Debug, Default)]
pub(crate) struct Axis2Xml {
    /// `<transportReceiver name="http">` `<parameter name="port">` (the
    /// pass-through NIO listener, 8280 by default, moved by the offset).
    pub http: Option<Setting<u16>>,
    /// The same for `https` (8243).
    pub https: Option<Setting<u16>>,
    /// `<clustering enable="true">`: the member port and well-known members.
    pub cluster: Option<Cluster>,
    /// Placeholders that no scanned file sets.
    pub unresolved: Vec<String>,
}

/// Hazelcast clustering as `axis2.xml` enables it.
#[derive(Debug)]
pub(crate) struct Cluster {
    /// `<parameter name="localMemberPort">`. carbon-kernel's
    /// `HazelcastClusteringAgent` uses 4000 when it is absent and does not
    /// add the port offset to it.
    pub local_port: Setting<u16>,
    /// `<parameter name="membershipScheme">` (`wka` or `multicast`).
    pub scheme: Option<String>,
    /// `<members><member><hostName>/<port>`: the well-known addresses.
    pub members: Vec<Member>,
}

fn param<'a>(e: &'a Element, name: &str) -> Option<&'a Element> {
    e.children
        .iter()
        .find(|c| c.name == "parameter" && c.attr("name") == Some(name))
}

pub(crate) fn read_axis2(file: &Path, text: &str, vars: &Vars) -> Result<Axis2Xml, ScanError> {
    let root = parse_xml(file, text)?;
    let mut out = Axis2Xml::default();
    let port = "a port (1..=65535)";
    for t in root
        .children
        .iter()
        .filter(|c| c.name == "transportReceiver")
    {
        let p = match param(t, "port") {
            Some(p) => p.number::<u16>(port, vars, &mut out.unresolved)?,
            None => None,
        };
        match t.attr("name") {
            Some("http") => out.http = p,
            Some("https") => out.https = p,
            _ => {}
        }
    }
    let Some(c) = root.child("clustering") else {
        return Ok(out);
    };
    if !c
        .attr("enable")
        .is_some_and(|v| v.eq_ignore_ascii_case("true"))
    {
        return Ok(out);
    }
    let local_port = match param(c, "localMemberPort") {
        Some(p) => p.number::<u16>(port, vars, &mut out.unresolved)?,
        None => None,
    }
    .unwrap_or_else(|| Setting {
        value: 4000,
        source: c.at().line_only(),
    });
    let mut members = Vec::new();
    for m in c
        .child("members")
        .into_iter()
        .flat_map(|ms| ms.children.iter().filter(|m| m.name == "member"))
    {
        let (Some(h), Some(p)) = (m.child("hostName"), m.child("port")) else {
            continue;
        };
        let (host, missing) = vars.expand(h.text.trim());
        let Some(p) = p.number::<u16>(port, vars, &mut out.unresolved)? else {
            continue;
        };
        if missing.is_empty() {
            members.push(Member {
                host,
                port: p.value,
                source: m.at().line_only(),
            });
        } else {
            out.unresolved.push(format!(
                "{}: <hostName> {} is not set in the scanned files",
                h.at().line_only(),
                missing.join(", ")
            ));
        }
    }
    out.cluster = Some(Cluster {
        local_port,
        scheme: param(c, "membershipScheme").map(|p| p.text.clone()),
        members,
    });
    Ok(out)
}

/// System properties and variables of the start-up command line.
#[derive(Debug, Default)]
pub(crate) struct StartScript {
    /// `-DportOffset=N`: wins over `carbon.xml` and `deployment.toml`.
    pub offset: Option<Setting<u16>>,
    /// `-Dprofile=NAME` (API-M 2.x profiles: gateway-worker,
    /// api-key-manager, traffic-manager, ...).
    pub profile: Option<Setting<String>>,
    /// Every `-Dname=value`, for `${name}` and `$sys{name}`.
    pub props: BTreeMap<String, String>,
    /// Every `NAME=value` and `export NAME=value`, for `$env{NAME}`.
    pub env: BTreeMap<String, String>,
    /// `-DportOffset=$VAR` with no value for `VAR` in the script.
    pub unresolved: Vec<String>,
}

/// One `-DportOffset=` seen: its value as written and where.
struct OffsetWord {
    value: String,
    at: Source,
}

/// Reads `-D` properties and variable assignments from a start script or
/// `.conf` file: whitespace-separated words, shell comments skipped, quotes
/// stripped. The last occurrence wins, as it would on a java command line.
pub(crate) fn read_start_script(file: &Path, text: &str) -> Result<StartScript, ScanError> {
    let loc = Locator::new(file, text);
    let mut out = StartScript::default();
    let mut offset_word: Option<OffsetWord> = None;
    let mut line_start = 0usize;
    for line in text.split('\n') {
        let code = line.split('#').next().unwrap_or("");
        let mut col = 0usize;
        let mut first = true;
        for raw in code.split_whitespace() {
            let at = code[col..].find(raw).map_or(col, |i| col + i);
            col = at + raw.len();
            let word = raw.trim_matches(|c| c == '"' || c == '\'');
            let is_first = std::mem::take(&mut first);
            if let Some(v) = word.strip_prefix("-DportOffset=") {
                offset_word = Some(OffsetWord {
                    value: v.to_owned(),
                    at: loc.at(line_start + at),
                });
            } else if let Some(v) = word.strip_prefix("-Dprofile=") {
                out.profile = Some(Setting {
                    value: v.to_owned(),
                    source: loc.at(line_start + at).line_only(),
                });
            }
            if let Some((k, v)) = word.strip_prefix("-D").and_then(|d| d.split_once('=')) {
                out.props.insert(k.to_owned(), v.to_owned());
            } else if is_first || code.trim_start().starts_with("export ") {
                assignment(word, &mut out.env);
            }
        }
        line_start += line.len() + 1;
    }
    if let Some(w) = offset_word {
        out.offset = resolve_offset(&w, &out.env, &mut out.unresolved)?;
    }
    Ok(out)
}

/// `NAME=value` (after an optional `export`) into `env`.
fn assignment(word: &str, env: &mut BTreeMap<String, String>) {
    let Some((k, v)) = word.split_once('=') else {
        return;
    };
    let is_name = !k.is_empty()
        && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !k.starts_with(|c: char| c.is_ascii_digit());
    if is_name {
        env.insert(
            k.to_owned(),
            v.trim_matches(|c| c == '"' || c == '\'').to_owned(),
        );
    }
}

/// `-DportOffset=3`, or `=$VAR` / `=${VAR}` resolved from the script.
fn resolve_offset(
    w: &OffsetWord,
    env: &BTreeMap<String, String>,
    unresolved: &mut Vec<String>,
) -> Result<Option<Setting<u16>>, ScanError> {
    let value = match w.value.strip_prefix('$') {
        Some(var) => {
            let name = var.trim_start_matches('{').trim_end_matches('}');
            match env.get(name) {
                Some(v) => v.clone(),
                None => {
                    unresolved.push(format!(
                        "{}: -DportOffset={} is not set in the scanned files",
                        w.at.clone().line_only(),
                        w.value
                    ));
                    return Ok(None);
                }
            }
        }
        None => w.value.clone(),
    };
    match value.parse::<u16>() {
        Ok(value) => Ok(Some(Setting {
            value,
            source: w.at.clone().line_only(),
        })),
        Err(_) => Err(ScanError::Malformed {
            at: w.at.clone(),
            message: format!("-DportOffset must be 0..=65535, found `{}`", w.value),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_script_properties_and_comments() {
        let s = read_start_script(
            Path::new("wso2server.sh"),
            "# -DportOffset=9\nexec java \\\n  -DportOffset=3 \"-Dprofile=gateway-worker\"\n",
        )
        .unwrap();
        let o = s.offset.unwrap();
        assert_eq!(
            (o.value, o.source.to_string()),
            (3, "wso2server.sh:3".into())
        );
        assert_eq!(s.profile.unwrap().value, "gateway-worker");
        let err = read_start_script(Path::new("x.sh"), "java -DportOffset=x\n").unwrap_err();
        assert_eq!(
            err.to_string(),
            "x.sh:1:6: -DportOffset must be 0..=65535, found `x`"
        );
    }

    #[test]
    fn start_script_variables_resolve_the_offset_or_are_named() {
        let s = read_start_script(
            Path::new("s.sh"),
            "export OFFSET=2\nNODE_IP=198.18.0.1\njava -DportOffset=$OFFSET -Dcarbon.home=/opt\n",
        )
        .unwrap();
        assert_eq!(s.offset.unwrap().value, 2);
        assert_eq!(s.env.get("NODE_IP").map(String::as_str), Some("198.18.0.1"));
        assert_eq!(s.props.get("carbon.home").map(String::as_str), Some("/opt"));
        let s = read_start_script(Path::new("s.sh"), "java -DportOffset=${OFF}\n").unwrap();
        assert!(s.offset.is_none());
        assert_eq!(
            s.unresolved,
            vec!["s.sh:1: -DportOffset=${OFF} is not set in the scanned files"]
        );
    }
}
