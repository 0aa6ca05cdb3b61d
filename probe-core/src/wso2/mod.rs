//! Reads real WSO2 installations — `carbon.xml`, `api-manager.xml`,
//! `axis2.xml`, `deployment.toml`, `bin/wso2server.sh` — to find each one's
//! port offset, the ports it will open and the endpoints it will dial, with
//! the `file:line` of every setting. Its findings become plan fragments and
//! client/server mismatches; the probe engine never imports this module.
//!
//! XML goes through `quick-xml` and TOML through `toml`, never through
//! regular expressions, so comments and layout cannot fool the reader.

mod apim;
mod carbon;
mod deployment;
pub mod scan;

use std::fmt;
use std::path::{Path, PathBuf};

pub use scan::{
    DialFinding, Difference, Install, Mismatch, PortFinding, SCHEMA, Scan, ScanFormat, render, scan,
};

/// Why an installation could not be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ScanError {
    /// An argument is not `HOST=PRODUCT_HOME`.
    #[error("`{arg}` is not HOST=PRODUCT_HOME")]
    BadArgument {
        /// The argument as given.
        arg: String,
    },
    /// Two arguments name the same host.
    #[error("host `{host}` is given twice")]
    DuplicateHost {
        /// The host.
        host: String,
    },
    /// The product home holds none of the files portcall reads.
    #[error(
        "{home}: no repository/conf/carbon.xml, api-manager.xml, deployment.toml or axis2/axis2.xml found"
    )]
    NotAnInstallation {
        /// The product home as given.
        home: String,
    },
    /// A file could not be read.
    #[error("read {path}")]
    Io {
        /// The file.
        path: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A file is not well-formed XML or TOML, or a value has the wrong type.
    #[error("{at}: {message}")]
    Malformed {
        /// Where, `file:line:col`.
        at: Source,
        /// What is wrong.
        message: String,
    },
    /// The plan given with `--plan` is not valid.
    #[error("{0}")]
    Plan(#[from] crate::plan::PlanError),
}

/// Where a setting is: a file (as the user named its product home) and a
/// line, and a column for errors.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Source {
    /// The file.
    pub file: String,
    /// Line, from 1.
    pub line: usize,
    /// Column in characters, from 1; 0 when only the line matters.
    pub col: usize,
}

impl Source {
    /// The position of byte `offset` in `text`.
    pub(crate) fn at(file: &Path, text: &str, offset: usize) -> Source {
        let mut offset = offset.min(text.len());
        while !text.is_char_boundary(offset) {
            offset -= 1;
        }
        let before = &text[..offset];
        let line = before.matches('\n').count() + 1;
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        Source {
            file: file.display().to_string(),
            line,
            col: text[line_start..offset].chars().count() + 1,
        }
    }

    /// The same place without its column, for findings.
    pub(crate) fn line_only(mut self) -> Source {
        self.col = 0;
        self
    }
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.col == 0 {
            write!(f, "{}:{}", self.file, self.line)
        } else {
            write!(f, "{}:{}:{}", self.file, self.line, self.col)
        }
    }
}

/// A value read from a file, and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Setting<T> {
    /// The value.
    pub value: T,
    /// Its place.
    pub source: Source,
}

/// Reads a file if it exists: `Ok(None)` when it does not.
pub(crate) fn read_optional(path: &Path) -> Result<Option<String>, ScanError> {
    match std::fs::read_to_string(path) {
        Ok(s) => Ok(Some(s)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(ScanError::Io {
            path: path.display().to_string(),
            source,
        }),
    }
}

/// `home/rel`, as the user would write it.
pub(crate) fn join(home: &Path, rel: &str) -> PathBuf {
    home.join(rel)
}

/// A parsed XML element: its local name, attributes, trimmed text, the line
/// of its start tag and its children. Comments are dropped by the parser,
/// so a commented-out `<!--ThriftClientPort>...-->` is never read.
#[derive(Debug, Clone, Default)]
pub(crate) struct Element {
    pub name: String,
    pub attrs: Vec<(String, String)>,
    pub text: String,
    pub source: Option<Source>,
    pub children: Vec<Element>,
}

impl Element {
    /// The first child named `name`.
    pub fn child(&self, name: &str) -> Option<&Element> {
        self.children.iter().find(|c| c.name == name)
    }

    /// The element at a path of child names.
    pub fn path(&self, names: &[&str]) -> Option<&Element> {
        names.iter().try_fold(self, |e, n| e.child(n))
    }

    /// An attribute's value.
    pub fn attr(&self, name: &str) -> Option<&str> {
        self.attrs
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// Where the element starts, `file:line:col`.
    pub fn at(&self) -> Source {
        self.source.clone().unwrap_or_else(|| Source {
            file: String::new(),
            line: 0,
            col: 0,
        })
    }

    /// The text as a setting at this element's line.
    pub fn setting(&self) -> Setting<String> {
        Setting {
            value: self.text.clone(),
            source: self.at().line_only(),
        }
    }

    /// The text as a number of type `T`, or an error at the element naming
    /// what was expected.
    pub fn number<T: std::str::FromStr>(&self, what: &str) -> Result<Setting<T>, ScanError> {
        match self.text.trim().parse::<T>() {
            Ok(value) => Ok(Setting {
                value,
                source: self.at().line_only(),
            }),
            Err(_) => Err(ScanError::Malformed {
                at: self.at(),
                message: format!("<{}> must be {what}, found `{}`", self.name, self.text),
            }),
        }
    }
}

/// Parses a whole XML document into its root element. Malformed input
/// (mismatched or unclosed tags, bad attributes) is an error at
/// `file:line:col`.
pub(crate) fn parse_xml(file: &Path, text: &str) -> Result<Element, ScanError> {
    use quick_xml::events::Event;
    let mut reader = quick_xml::Reader::from_str(text);
    let malformed = |offset: u64, message: String| ScanError::Malformed {
        at: Source::at(file, text, usize::try_from(offset).unwrap_or(usize::MAX)),
        message,
    };
    let mut stack: Vec<Element> = vec![Element::default()];
    loop {
        let before = reader.buffer_position();
        let event = reader
            .read_event()
            .map_err(|e| malformed(reader.error_position(), e.to_string()))?;
        let open = |e: &quick_xml::events::BytesStart<'_>| -> Result<Element, ScanError> {
            let mut attrs = Vec::new();
            for a in e.attributes() {
                let a = a.map_err(|err| malformed(before, err.to_string()))?;
                let key = String::from_utf8_lossy(a.key.local_name().as_ref()).into_owned();
                let value = a
                    .unescape_value()
                    .map_err(|err| malformed(before, err.to_string()))?
                    .into_owned();
                attrs.push((key, value));
            }
            Ok(Element {
                name: String::from_utf8_lossy(e.local_name().as_ref()).into_owned(),
                attrs,
                text: String::new(),
                source: Some(Source::at(file, text, usize::try_from(before).unwrap_or(0))),
                children: Vec::new(),
            })
        };
        match event {
            Event::Start(e) => {
                let el = open(&e)?;
                stack.push(el);
            }
            Event::Empty(e) => {
                let el = open(&e)?;
                if let Some(parent) = stack.last_mut() {
                    parent.children.push(el);
                }
            }
            Event::End(_) => {
                let mut el = stack.pop().expect("quick-xml checks end names");
                el.text = el.text.trim().to_owned();
                match stack.last_mut() {
                    Some(parent) => parent.children.push(el),
                    None => return Err(malformed(before, "unexpected end tag".into())),
                }
            }
            Event::Text(t) => {
                let raw = t
                    .decode()
                    .map_err(|err| malformed(before, err.to_string()))?;
                let s = quick_xml::escape::unescape(&raw)
                    .map_err(|err| malformed(before, err.to_string()))?;
                if let Some(el) = stack.last_mut() {
                    el.text.push_str(&s);
                }
            }
            Event::CData(t) => {
                if let Some(el) = stack.last_mut() {
                    el.text.push_str(&String::from_utf8_lossy(&t));
                }
            }
            Event::GeneralRef(r) => {
                // Character and predefined entity references inside text.
                let resolved = match r.resolve_char_ref() {
                    Ok(Some(c)) => c.to_string(),
                    _ => match &*String::from_utf8_lossy(&r) {
                        "lt" => "<".into(),
                        "gt" => ">".into(),
                        "amp" => "&".into(),
                        "quot" => "\"".into(),
                        "apos" => "'".into(),
                        other => format!("&{other};"),
                    },
                };
                if let Some(el) = stack.last_mut() {
                    el.text.push_str(&resolved);
                }
            }
            Event::Eof => break,
            Event::Comment(_) | Event::Decl(_) | Event::PI(_) | Event::DocType(_) => {}
        }
    }
    if stack.len() > 1 {
        let open = stack.last().map(|e| e.name.clone()).unwrap_or_default();
        return Err(malformed(
            text.len() as u64,
            format!("unexpected end of file: <{open}> is not closed"),
        ));
    }
    let mut doc = stack.pop().unwrap_or_default();
    match doc.children.len() {
        1 => Ok(doc.children.remove(0)),
        0 => Err(malformed(0, "no root element".into())),
        _ => Err(malformed(0, "more than one root element".into())),
    }
}

/// A URL's host and port as WSO2 writes them: `https://km:9443/services/`,
/// `tcp://tm:9611`, `{tcp://a:7612},{tcp://b:7612}` (receiver groups), with
/// `${...}` placeholders resolved by `resolve` (an unknown one makes its
/// endpoint unusable). Returns
/// every `(host, port)` found; entries without a port are skipped.
pub(crate) fn url_endpoints(
    value: &str,
    resolve: &dyn Fn(&str) -> Option<String>,
) -> Vec<(String, u16)> {
    let mut expanded = String::new();
    let mut rest = value;
    while let Some(start) = rest.find("${") {
        expanded.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        match after.find('}') {
            Some(end) => {
                let key = &after[..end];
                match resolve(key) {
                    Some(v) => expanded.push_str(&v),
                    // An unknown placeholder makes its part unusable; the
                    // marker keeps it from being read as a host or port.
                    None => expanded.push('\u{1}'),
                }
                rest = &after[end + 1..];
            }
            None => {
                expanded.push_str(&rest[start..]);
                rest = "";
            }
        }
    }
    expanded.push_str(rest);
    expanded
        .split(|c: char| matches!(c, ',' | '{' | '}' | '|') || c.is_whitespace())
        .filter(|s| !s.is_empty())
        .filter_map(|item| {
            let after_scheme = item.split_once("://").map_or(item, |(_, r)| r);
            let authority = after_scheme.split('/').next().unwrap_or("");
            let (host, port) = authority.rsplit_once(':')?;
            let port: u16 = port.parse().ok()?;
            let host = host.trim_start_matches('[').trim_end_matches(']');
            (!host.is_empty() && !host.contains('\u{1}') && port != 0)
                .then(|| (host.to_owned(), port))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_in_every_shape_wso2_writes_them() {
        let none = |_: &str| None;
        assert_eq!(
            url_endpoints("https://km:9443/services/", &none),
            vec![("km".to_owned(), 9443)]
        );
        assert_eq!(
            url_endpoints("{tcp://a:7612},{tcp://b:7613}", &none),
            vec![("a".to_owned(), 7612), ("b".to_owned(), 7613)]
        );
        assert_eq!(
            url_endpoints("tcp://a:9611, tcp://b:9611", &none),
            vec![("a".to_owned(), 9611), ("b".to_owned(), 9611)]
        );
        let port = |k: &str| (k == "mgt.transport.https.port").then(|| "9445".to_owned());
        assert_eq!(
            url_endpoints(
                "https://${carbon.local.ip}:${mgt.transport.https.port}${carbon.context}services/",
                &port
            ),
            Vec::<(String, u16)>::new(),
            "an unresolved host placeholder is no endpoint"
        );
        assert!(url_endpoints("https://km/services/", &none).is_empty());
    }

    #[test]
    fn xml_comments_are_not_settings_and_errors_are_located() {
        let f = Path::new("a.xml");
        let root = parse_xml(
            f,
            "<A>\n  <!--B>1</B-->\n  <C x=\"y\">2 &amp; 3</C>\n</A>\n",
        )
        .unwrap();
        assert!(root.child("B").is_none());
        let c = root.child("C").unwrap();
        assert_eq!((c.text.as_str(), c.attr("x")), ("2 & 3", Some("y")));
        assert_eq!(c.source.as_ref().unwrap().line, 3);
        let err = parse_xml(f, "<A>\n  <B>1</Bx>\n</A>\n").unwrap_err();
        assert!(err.to_string().starts_with("a.xml:2:"), "{err}");
        let err = parse_xml(f, "<A>\n  <B>1</B>\n").unwrap_err();
        assert!(err.to_string().contains("<A> is not closed"), "{err}");
    }
}
