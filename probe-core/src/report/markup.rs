//! Escaping shared by the markup renderers (JUnit XML, HTML, Markdown), so
//! that a host name or a probe detail can never break out of its element,
//! attribute or table cell.

/// Escapes text for XML and HTML, in element content and in attribute
/// values alike. Characters that XML 1.0 cannot carry at all (C0 controls
/// other than tab, line feed and carriage return) become U+FFFD, so a stray
/// byte in a detail cannot make the whole document unparsable.
pub(crate) fn escape_xml(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            '\t' | '\n' | '\r' => out.push(c),
            c if (c as u32) < 0x20 || c == '\u{FFFE}' || c == '\u{FFFF}' => out.push('\u{FFFD}'),
            c => out.push(c),
        }
    }
    out
}

/// Escapes text for one cell of a GitHub-flavoured Markdown table: no line
/// breaks, pipes escaped, Markdown emphasis and links neutralised, and the
/// HTML-significant characters turned into entities (GitHub renders inline
/// HTML in comments).
pub(crate) fn escape_markdown_cell(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '|' | '\\' | '`' | '*' | '_' | '[' | ']' | '~' | '#' => {
                out.push('\\');
                out.push(c);
            }
            '\n' | '\r' | '\t' => out.push(' '),
            c if crate::plan::is_control(c) => out.push('\u{FFFD}'),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xml_escaping_covers_markup_quotes_and_forbidden_controls() {
        assert_eq!(
            escape_xml("a<b>&\"c'\u{1}\td"),
            "a&lt;b&gt;&amp;&quot;c&#39;\u{FFFD}\td"
        );
    }

    #[test]
    fn markdown_cells_cannot_split_columns_or_inject_html() {
        assert_eq!(
            escape_markdown_cell("a|b\n<script>*x*_y_"),
            "a\\|b &lt;script&gt;\\*x\\*\\_y\\_"
        );
    }
}
