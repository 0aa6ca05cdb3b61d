//! A small located XML tree over `quick-xml`: each element's local name,
//! attributes, trimmed text, `file:line:col` and children. Comments are
//! dropped by the parser, so a commented-out `<!--ThriftClientPort>…-->`
//! is never read. Built with an explicit stack (no recursion a file can
//! exhaust), nesting capped at [`MAX_XML_DEPTH`] and the element count at
//! [`MAX_XML_ELEMENTS`].

use std::path::Path;
use std::rc::Rc;

use quick_xml::events::{BytesStart, Event};

use super::error::ScanError;
use super::locator::Locator;
use super::source::{Setting, Source};
use super::values::Vars;

/// The deepest XML nesting accepted (WSO2's files nest about ten deep).
pub const MAX_XML_DEPTH: usize = 256;

/// The most XML elements accepted in one file.
pub const MAX_XML_ELEMENTS: usize = 200_000;

/// A parsed XML element.
#[derive(Debug, Clone, Default)]
pub(crate) struct Element {
    pub name: String,
    pub attrs: Vec<(String, String)>,
    pub text: String,
    file: Rc<str>,
    line: usize,
    col: usize,
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
        Source {
            file: self.file.to_string(),
            line: self.line,
            col: self.col,
        }
    }

    /// The text as a setting at this element's line.
    pub fn setting(&self) -> Setting<String> {
        Setting {
            value: self.text.clone(),
            source: self.at().line_only(),
        }
    }

    /// The text, placeholders expanded, as a number of type `T`: `Ok(None)`
    /// when a placeholder is not set in the scanned files (`unresolved`
    /// records it), an error at the element naming what was expected when
    /// the text is not a number at all.
    pub fn number<T: std::str::FromStr>(
        &self,
        what: &str,
        vars: &Vars,
        unresolved: &mut Vec<String>,
    ) -> Result<Option<Setting<T>>, ScanError> {
        let (value, missing) = vars.expand(self.text.trim());
        if !missing.is_empty() {
            unresolved.push(format!(
                "{}: <{}> {} is not set in the scanned files",
                self.at().line_only(),
                self.name,
                missing.join(", ")
            ));
            return Ok(None);
        }
        match value.trim().trim_matches('"').parse::<T>() {
            Ok(value) => Ok(Some(Setting {
                value,
                source: self.at().line_only(),
            })),
            Err(_) => Err(ScanError::Malformed {
                at: self.at(),
                message: format!("<{}> must be {what}, found `{}`", self.name, self.text),
            }),
        }
    }

    /// `<Enabled>`-style flags: `true`/`false` in any case.
    pub fn flag(&self) -> Option<Setting<bool>> {
        let value = match self.text.trim().to_ascii_lowercase().as_str() {
            "true" => true,
            "false" => false,
            _ => return None,
        };
        Some(Setting {
            value,
            source: self.at().line_only(),
        })
    }
}

/// The parser's state: the open elements and how many were made.
struct Builder<'l, 't> {
    loc: &'l Locator<'t>,
    file: Rc<str>,
    stack: Vec<Element>,
    count: usize,
}

impl Builder<'_, '_> {
    fn open(&mut self, e: &BytesStart<'_>, at: usize) -> Result<Element, ScanError> {
        self.count += 1;
        if self.count > MAX_XML_ELEMENTS {
            return Err(self.loc.malformed(
                at,
                format!("more than {MAX_XML_ELEMENTS} elements, too many for a configuration file"),
            ));
        }
        let mut attrs = Vec::new();
        for a in e.attributes() {
            let a = a.map_err(|err| self.loc.malformed(at, err.to_string()))?;
            let key = String::from_utf8_lossy(a.key.local_name().as_ref()).into_owned();
            let value = a
                .unescape_value()
                .map_err(|err| self.loc.malformed(at, err.to_string()))?
                .into_owned();
            attrs.push((key, value));
        }
        let source = self.loc.at(at);
        Ok(Element {
            name: String::from_utf8_lossy(e.local_name().as_ref()).into_owned(),
            attrs,
            text: String::new(),
            file: self.file.clone(),
            line: source.line,
            col: source.col,
            children: Vec::new(),
        })
    }

    fn text(&mut self, s: &str) {
        if let Some(el) = self.stack.last_mut() {
            el.text.push_str(s);
        }
    }

    fn event(&mut self, event: Event<'_>, at: usize) -> Result<bool, ScanError> {
        match event {
            Event::Start(e) => {
                if self.stack.len() > MAX_XML_DEPTH {
                    return Err(self
                        .loc
                        .malformed(at, format!("elements nested deeper than {MAX_XML_DEPTH}")));
                }
                let el = self.open(&e, at)?;
                self.stack.push(el);
            }
            Event::Empty(e) => {
                let el = self.open(&e, at)?;
                if let Some(parent) = self.stack.last_mut() {
                    parent.children.push(el);
                }
            }
            Event::End(_) => {
                let Some(mut el) = self.stack.pop() else {
                    return Err(self.loc.malformed(at, "unexpected end tag"));
                };
                el.text = el.text.trim().to_owned();
                match self.stack.last_mut() {
                    Some(parent) => parent.children.push(el),
                    None => return Err(self.loc.malformed(at, "unexpected end tag")),
                }
            }
            Event::Text(t) => {
                let raw = t
                    .decode()
                    .map_err(|err| self.loc.malformed(at, err.to_string()))?;
                let s = quick_xml::escape::unescape(&raw)
                    .map_err(|err| self.loc.malformed(at, err.to_string()))?;
                self.text(&s);
            }
            Event::CData(t) => self.text(&String::from_utf8_lossy(&t)),
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
                self.text(&resolved);
            }
            Event::Eof => return Ok(false),
            Event::Comment(_) | Event::Decl(_) | Event::PI(_) | Event::DocType(_) => {}
        }
        Ok(true)
    }
}

/// Parses a whole XML document into its root element. Malformed input
/// (mismatched or unclosed tags, bad attributes, too deep, too many
/// elements) is an error at `file:line:col`.
pub(crate) fn parse_xml(file: &Path, text: &str) -> Result<Element, ScanError> {
    let loc = Locator::new(file, text);
    let mut reader = quick_xml::Reader::from_str(text);
    let mut b = Builder {
        loc: &loc,
        file: Rc::from(loc.file()),
        stack: vec![Element::default()],
        count: 0,
    };
    loop {
        let before = usize::try_from(reader.buffer_position()).unwrap_or(usize::MAX);
        let event = reader.read_event().map_err(|e| {
            let at = usize::try_from(reader.error_position()).unwrap_or(usize::MAX);
            loc.malformed(at, e.to_string())
        })?;
        if !b.event(event, before)? {
            break;
        }
    }
    if b.stack.len() > 1 {
        let open = b.stack.last().map(|e| e.name.clone()).unwrap_or_default();
        return Err(loc.malformed(
            text.len(),
            format!("unexpected end of file: <{open}> is not closed"),
        ));
    }
    let mut doc = b.stack.pop().unwrap_or_default();
    match doc.children.len() {
        1 => Ok(doc.children.remove(0)),
        0 => Err(loc.malformed(0, "no root element")),
        _ => Err(loc.malformed(0, "more than one root element")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        assert_eq!((c.at().line, c.at().col), (3, 3));
        let err = parse_xml(f, "<A>\n  <B>1</Bx>\n</A>\n").unwrap_err();
        assert!(err.to_string().starts_with("a.xml:2:"), "{err}");
        let err = parse_xml(f, "<A>\n  <B>1</B>\n").unwrap_err();
        assert!(err.to_string().contains("<A> is not closed"), "{err}");
    }

    #[test]
    fn nesting_past_the_cap_is_an_error_not_a_stack_overflow() {
        let deep = 200_000;
        let text = format!("{}{}", "<a>".repeat(deep), "</a>".repeat(deep));
        let err = parse_xml(Path::new("d.xml"), &text).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "d.xml:1:{}: elements nested deeper than {MAX_XML_DEPTH}",
                3 * MAX_XML_DEPTH + 1
            )
        );
        let ok = format!(
            "{}{}",
            "<a>".repeat(MAX_XML_DEPTH),
            "</a>".repeat(MAX_XML_DEPTH)
        );
        assert!(parse_xml(Path::new("d.xml"), &ok).is_ok());
    }
}
