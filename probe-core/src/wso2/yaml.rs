//! A small located YAML tree over `yaml-rust2`'s event parser, for the
//! Stream Processor based API-M Analytics worker (`conf/worker/
//! deployment.yaml`): each node's value and `line:col`. Built with an
//! explicit stack (no recursion a file can exhaust), nesting capped at
//! [`MAX_YAML_DEPTH`] and the node count at [`MAX_YAML_NODES`].
//!
//! Aliases are never expanded: WSO2's own worker `deployment.yaml` uses one
//! (`dataSource: *JDBC01` under `wso2.metrics.jdbc`), so they are accepted,
//! but a `*name` stays an opaque [`Value::Alias`] that no reader follows.
//! So an alias bomb ("billion laughs") costs what its text costs, never
//! more.

use std::path::Path;
use std::rc::Rc;

use yaml_rust2::parser::Parser;
use yaml_rust2::{Event, ScanError as YamlError};

use super::error::ScanError;
use super::source::{Setting, Source};

/// The deepest YAML nesting accepted (WSO2's worker file nests about eight
/// deep).
pub const MAX_YAML_DEPTH: usize = 64;

/// The most YAML nodes (scalars, sequences, mappings) accepted in one file.
pub const MAX_YAML_NODES: usize = 200_000;

/// What a node holds.
#[derive(Debug, Clone)]
pub(crate) enum Value {
    /// A scalar as written (quotes removed by the parser).
    Scalar(String),
    /// A sequence.
    Seq(Vec<Node>),
    /// A mapping, keys in file order; a key that is not a scalar is `""`.
    Map(Vec<(String, Node)>),
    /// An alias (`*name`), deliberately not followed.
    Alias,
}

/// A located YAML node.
#[derive(Debug, Clone)]
pub(crate) struct Node {
    pub value: Value,
    file: Rc<str>,
    line: usize,
    col: usize,
}

impl Node {
    /// The value under `key` when this is a mapping.
    pub fn get(&self, key: &str) -> Option<&Node> {
        match &self.value {
            Value::Map(m) => m.iter().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }

    /// The node at a path of mapping keys.
    pub fn path(&self, keys: &[&str]) -> Option<&Node> {
        keys.iter().try_fold(self, |n, k| n.get(k))
    }

    /// The items when this is a sequence, else none.
    pub fn items(&self) -> &[Node] {
        match &self.value {
            Value::Seq(s) => s,
            _ => &[],
        }
    }

    /// The scalar text, if this is a scalar.
    pub fn text(&self) -> Option<&str> {
        match &self.value {
            Value::Scalar(s) => Some(s),
            _ => None,
        }
    }

    /// Where the node starts, `file:line:col`.
    pub fn at(&self) -> Source {
        Source {
            file: self.file.to_string(),
            line: self.line,
            col: self.col,
        }
    }

    /// The scalar as a setting at this node's line.
    pub fn setting(&self) -> Option<Setting<String>> {
        Some(Setting {
            value: self.text()?.trim().to_owned(),
            source: self.at().line_only(),
        })
    }
}

/// A collection being built.
enum Frame {
    Seq(Node, Vec<Node>),
    Map(Node, Vec<(String, Node)>, Option<String>),
}

fn malformed(file: &Rc<str>, line: usize, col: usize, message: String) -> ScanError {
    ScanError::Malformed {
        at: Source {
            file: file.to_string(),
            line,
            col,
        },
        message,
    }
}

/// Places a finished node in its parent, or makes it the root.
fn attach(stack: &mut [Frame], root: &mut Option<Node>, node: Node) {
    match stack.last_mut() {
        Some(Frame::Seq(_, items)) => items.push(node),
        Some(Frame::Map(_, entries, key)) => match key.take() {
            Some(k) => entries.push((k, node)),
            None => *key = Some(node.text().unwrap_or_default().to_owned()),
        },
        None => *root = Some(node),
    }
}

/// Parses the first YAML document of `text` into a located tree; an empty
/// document is an empty mapping.
pub(crate) fn parse_yaml(path: &Path, text: &str) -> Result<Node, ScanError> {
    let file: Rc<str> = Rc::from(path.display().to_string());
    let bad = |e: YamlError| {
        let m = e.marker();
        malformed(
            &file,
            m.line(),
            m.col() + 1,
            format!("not well-formed YAML: {}", e.info()),
        )
    };
    let mut parser = Parser::new_from_str(text);
    let mut stack: Vec<Frame> = Vec::new();
    let mut root: Option<Node> = None;
    let mut nodes = 0usize;
    loop {
        let (event, mark) = parser.next_token().map_err(bad)?;
        let (line, col) = (mark.line(), mark.col() + 1);
        let node = |value| Node {
            value,
            file: file.clone(),
            line,
            col,
        };
        let opens = matches!(event, Event::SequenceStart(..) | Event::MappingStart(..));
        if matches!(
            event,
            Event::Scalar(..)
                | Event::Alias(_)
                | Event::SequenceStart(..)
                | Event::MappingStart(..)
        ) {
            nodes += 1;
            if nodes > MAX_YAML_NODES {
                return Err(malformed(
                    &file,
                    line,
                    col,
                    format!("more than {MAX_YAML_NODES} YAML nodes"),
                ));
            }
        }
        if opens && stack.len() >= MAX_YAML_DEPTH {
            return Err(malformed(
                &file,
                line,
                col,
                format!("YAML nested deeper than {MAX_YAML_DEPTH}"),
            ));
        }
        match event {
            Event::Scalar(s, ..) => attach(&mut stack, &mut root, node(Value::Scalar(s))),
            Event::Alias(_) => attach(&mut stack, &mut root, node(Value::Alias)),
            Event::SequenceStart(..) => stack.push(Frame::Seq(node(Value::Alias), Vec::new())),
            Event::MappingStart(..) => {
                stack.push(Frame::Map(node(Value::Alias), Vec::new(), None));
            }
            Event::SequenceEnd | Event::MappingEnd => {
                let done = match stack.pop() {
                    Some(Frame::Seq(mut n, items)) => {
                        n.value = Value::Seq(items);
                        n
                    }
                    Some(Frame::Map(mut n, entries, _)) => {
                        n.value = Value::Map(entries);
                        n
                    }
                    None => continue,
                };
                attach(&mut stack, &mut root, done);
            }
            // Only the first document is read.
            Event::DocumentEnd if root.is_some() => break,
            Event::StreamEnd => break,
            _ => {}
        }
    }
    Ok(root.unwrap_or_else(|| Node {
        value: Value::Map(Vec::new()),
        file,
        line: 1,
        col: 1,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Node, ScanError> {
        parse_yaml(Path::new("t.yaml"), text)
    }

    #[test]
    fn nodes_keep_their_line_and_column() {
        let y = parse("a:\n  b:\n    - x: '7611'\n").unwrap();
        let x = &y.path(&["a", "b"]).unwrap().items()[0];
        let n = x.get("x").unwrap();
        assert_eq!(n.text(), Some("7611"));
        assert_eq!(n.at().to_string(), "t.yaml:3:10");
    }

    #[test]
    fn aliases_are_accepted_but_never_expanded() {
        // A billion-laughs shape: nine levels of ten aliases each.
        let mut text = String::from("a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]\n");
        for i in 1..10 {
            let prev = i - 1;
            let refs = vec![format!("*a{prev}"); 10].join(", ");
            text.push_str(&format!("a{i}: &a{i} [{refs}]\n"));
        }
        let y = parse(&text).unwrap();
        let a9 = y.get("a9").unwrap().items();
        assert_eq!(a9.len(), 10);
        assert!(a9.iter().all(|n| matches!(n.value, Value::Alias)));
    }

    #[test]
    fn deep_nesting_and_bad_yaml_are_errors_with_a_place() {
        let deep = "[".repeat(MAX_YAML_DEPTH + 1);
        let e = parse(&deep).unwrap_err().to_string();
        assert!(e.contains("nested deeper than 64"), "{e}");
        let e = parse("a: [1, 2\nb: c").unwrap_err().to_string();
        assert!(e.starts_with("t.yaml:"), "{e}");
        assert!(e.contains("not well-formed YAML"), "{e}");
    }
}
