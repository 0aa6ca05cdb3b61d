//! The Carbon kernel's files: `repository/conf/carbon.xml` (product name,
//! version, port offset), `repository/conf/axis2/axis2.xml` (the NIO
//! transports and Hazelcast clustering) and `bin/wso2server.sh` (system
//! properties given at start-up, which win over the files).

use std::path::Path;

use super::{Element, ScanError, Setting, Source, parse_xml};

/// What `carbon.xml` says.
#[derive(Debug, Default)]
pub(crate) struct CarbonXml {
    /// `<Server><Name>`, e.g. "WSO2 API Manager".
    pub name: Option<String>,
    /// `<Server><Version>`.
    pub version: Option<String>,
    /// `<Server><Ports><Offset>`: the Carbon kernel adds it to every port
    /// it opens (WSO2 docs, "Changing the Default Ports with Offset": "Set
    /// the offset in the Ports section of carbon.xml, e.g. <Offset>3</Offset>").
    pub offset: Option<Setting<u16>>,
}

pub(crate) fn read_carbon(file: &Path, text: &str) -> Result<CarbonXml, ScanError> {
    let root = parse_xml(file, text)?;
    Ok(CarbonXml {
        name: root.child("Name").map(|e| e.text.clone()),
        version: root.child("Version").map(|e| e.text.clone()),
        offset: root
            .path(&["Ports", "Offset"])
            .map(|e| e.number::<u16>("a port offset (0..=65535)"))
            .transpose()?,
    })
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

pub(crate) fn read_axis2(file: &Path, text: &str) -> Result<Axis2Xml, ScanError> {
    let root = parse_xml(file, text)?;
    let mut out = Axis2Xml::default();
    for t in root
        .children
        .iter()
        .filter(|c| c.name == "transportReceiver")
    {
        let port = param(t, "port")
            .map(|p| p.number::<u16>("a port (1..=65535)"))
            .transpose()?;
        match t.attr("name") {
            Some("http") => out.http = port,
            Some("https") => out.https = port,
            _ => {}
        }
    }
    if let Some(c) = root.child("clustering") {
        if c.attr("enable") == Some("true") {
            let local_port = match param(c, "localMemberPort") {
                Some(p) => p.number::<u16>("a port (1..=65535)")?,
                None => Setting {
                    value: 4000,
                    source: c.at().line_only(),
                },
            };
            let mut members = Vec::new();
            if let Some(ms) = c.child("members") {
                for m in ms.children.iter().filter(|m| m.name == "member") {
                    let (Some(h), Some(p)) = (m.child("hostName"), m.child("port")) else {
                        continue;
                    };
                    let port = p.number::<u16>("a port (1..=65535)")?;
                    members.push(Member {
                        host: h.text.clone(),
                        port: port.value,
                        source: m.at().line_only(),
                    });
                }
            }
            out.cluster = Some(Cluster {
                local_port,
                scheme: param(c, "membershipScheme").map(|p| p.text.clone()),
                members,
            });
        }
    }
    Ok(out)
}

/// System properties on the start-up command line.
#[derive(Debug, Default)]
pub(crate) struct StartScript {
    /// `-DportOffset=N`: wins over `carbon.xml` and `deployment.toml`.
    pub offset: Option<Setting<u16>>,
    /// `-Dprofile=NAME` (API-M profiles: gateway-worker, api-key-manager,
    /// traffic-manager, ...).
    pub profile: Option<Setting<String>>,
}

/// Reads `-DportOffset` and `-Dprofile` from a start script or `.conf`
/// file: whitespace-separated words, shell comments skipped, quotes
/// stripped. The last occurrence wins, as it would on a java command line.
pub(crate) fn read_start_script(file: &Path, text: &str) -> Result<StartScript, ScanError> {
    let mut out = StartScript::default();
    let mut offset_at = 0usize;
    for line in text.lines() {
        let line_start = offset_at;
        offset_at += line.len() + 1;
        let code = line.split('#').next().unwrap_or("");
        let mut col = 0usize;
        for word in code.split_whitespace() {
            let at = code[col..].find(word).map_or(col, |i| col + i);
            col = at + word.len();
            let word = word.trim_matches(|c| c == '"' || c == '\'');
            let source = Source::at(file, text, line_start + at);
            if let Some(v) = word.strip_prefix("-DportOffset=") {
                let value = v.parse::<u16>().map_err(|_| ScanError::Malformed {
                    at: source.clone(),
                    message: format!("-DportOffset must be 0..=65535, found `{v}`"),
                })?;
                out.offset = Some(Setting {
                    value,
                    source: source.line_only(),
                });
            } else if let Some(v) = word.strip_prefix("-Dprofile=") {
                out.profile = Some(Setting {
                    value: v.to_owned(),
                    source: source.line_only(),
                });
            }
        }
    }
    Ok(out)
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
}
