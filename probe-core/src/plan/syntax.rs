//! TOML syntax errors as located diagnostics in plain words, and the
//! rustc-style source snippet with a caret that every such diagnostic shows.

use std::sync::Arc;

use super::diag::{Diagnostic, Location, Problem, Severity, Suggestion};

/// Turns a TOML parser error into a located diagnostic, with a hint for the
/// commonest mistake (an unquoted address or name).
pub(super) fn syntax_diagnostic(file: &Arc<str>, src: &str, e: &toml::de::Error) -> Diagnostic {
    let mut message = e
        .message()
        .trim_end_matches('\n')
        .replace('\n', "; ")
        .replace("expected i64", "expected an integer")
        .replace("expected u64", "expected a non-negative integer");
    message = plain_words(&message);
    if message == "duplicate key" {
        if let Some(span) = e.span() {
            let key = src.get(span.clone()).unwrap_or("").trim();
            if !key.is_empty() && !key.contains('\n') {
                message = format!("duplicate key `{key}`");
            }
        }
    }
    let mut location = e.span().map(|s| Location::of_offset(file, src, s.start));
    let mut problem = Problem::Syntax {
        message: message.clone(),
        hint: String::new(),
        snippet: String::new(),
    };
    if let Some(span) = e.span() {
        let start = span.start.min(src.len());
        let line_start = src[..start].rfind('\n').map_or(0, |i| i + 1);
        let line = src[line_start..].lines().next().unwrap_or("");
        if let Some((key, value)) = line.split_once('=') {
            let value = value.split('#').next().unwrap_or("").trim();
            let bare = !value.is_empty()
                && !value.starts_with(['"', '\'', '[', '{'])
                && value
                    .chars()
                    .any(|c| c.is_ascii_alphabetic() || c == '.' || c == ':')
                && value.parse::<f64>().is_err()
                && !matches!(value, "true" | "false" | "inf" | "nan");
            if bare {
                // Point at the value itself, not wherever the parser gave up.
                let value_at = line_start + line.find(value).unwrap_or(0);
                location = Some(Location::of_offset(file, src, value_at));
                problem = Problem::Syntax {
                    message: format!(
                        "expected a quoted string, found unquoted `{value}` ({message})"
                    ),
                    hint: format!("; write {} = \"{}\"", key.trim(), value),
                    snippet: String::new(),
                };
            }
        }
    }
    if let Problem::Syntax { message, hint, .. } = problem {
        let at = match (&location, e.span()) {
            (Some(l), Some(span)) => {
                // The caret goes where the location points (it may have been
                // moved to an unquoted value), as wide as the parser's span
                // allows on that line.
                let start = offset_of(src, l.line, l.col);
                let end = if start == span.start.min(src.len()) {
                    span.end
                } else {
                    start
                };
                Some(start..end)
            }
            _ => None,
        };
        problem = Problem::Syntax {
            message,
            hint,
            snippet: at.map(|r| snippet(src, r)).unwrap_or_default(),
        };
    }
    Diagnostic {
        severity: Severity::Error,
        location,
        problem,
    }
}

/// Rewrites serde's wording for the two mistakes people make most: an
/// unknown field gets "did you mean" when one of the expected fields is
/// close, and an unknown variant lists the allowed values in plain words.
fn plain_words(message: &str) -> String {
    let backticked =
        |s: &str| -> Vec<String> { s.split('`').skip(1).step_by(2).map(str::to_owned).collect() };
    if let Some(rest) = message.strip_prefix("unknown field `") {
        let words = backticked(message);
        if let Some((field, expected)) = words.split_first() {
            let suggestion = Suggestion::closest(field, expected.iter().map(String::as_str));
            if suggestion.0.is_some() {
                return format!(
                    "unknown field `{field}`{suggestion} (allowed here: {})",
                    expected.join(", ")
                );
            }
        }
        return format!("unknown field `{rest}");
    }
    if message.starts_with("unknown variant `") {
        let words = backticked(message);
        if let Some((value, allowed)) = words.split_first() {
            let allowed: Vec<String> = allowed.iter().map(|a| format!("\"{a}\"")).collect();
            let list = match allowed.as_slice() {
                [] => String::new(),
                [one] => one.clone(),
                [init @ .., last] => format!("{} or {last}", init.join(", ")),
            };
            let suggestion = Suggestion::closest(value, words[1..].iter().map(String::as_str));
            return format!("\"{value}\" is not allowed here; write {list}{suggestion}");
        }
    }
    message.to_owned()
}

/// The byte offset of 1-based `line` and character column `col` in `src`.
fn offset_of(src: &str, line: usize, col: usize) -> usize {
    let line_start: usize = src
        .split_inclusive('\n')
        .take(line.saturating_sub(1))
        .map(str::len)
        .sum();
    let rest = &src[line_start.min(src.len())..];
    line_start
        + rest
            .char_indices()
            .nth(col.saturating_sub(1))
            .map_or(rest.len(), |(i, _)| i)
}

/// The source line holding `span` with a caret under it, rustc-style
/// (without the header line, which the diagnostic already gives as
/// `file:line:col: error: ...`), each line starting with a newline.
fn snippet(src: &str, span: std::ops::Range<usize>) -> String {
    use annotate_snippets::{Level, Renderer, Snippet};
    let mut start = span.start.min(src.len());
    while !src.is_char_boundary(start) {
        start -= 1;
    }
    // One line only: the caret stays under the token the parser stopped at.
    let line_start = src[..start].rfind('\n').map_or(0, |i| i + 1);
    let line_end = src[start..].find('\n').map_or(src.len(), |i| start + i);
    let line = &src[line_start..line_end];
    let line_no = src[..line_start].matches('\n').count() + 1;
    let mut end = span.end.clamp(start, line_end);
    while !src.is_char_boundary(end) {
        end += 1;
    }
    let (s, mut e) = (start - line_start, end - line_start);
    if e == s {
        // An empty span (end of line, end of file) still gets one caret.
        e = line[s..].chars().next().map_or(s + 1, |c| s + c.len_utf8());
    }
    // Tabs become four spaces here, where the span is known in bytes:
    // left to the renderer, a long tab-filled line misplaced the caret (and
    // overflowed a subtraction in debug builds).
    // (An empty span at the end of a line puts its caret one past it.)
    let tabs_before = |i: usize| line[..i.min(line.len())].matches('\t').count() * 3;
    let (s, e) = (s + tabs_before(s), e + tabs_before(e));
    // A character a renderer may take for a line break (a bare CR above
    // all, on which annotate-snippets underflowed) becomes as many spaces as
    // it has bytes, so every byte offset stays where it was; other controls
    // are escaped visibly further on.
    let line: String = line
        .chars()
        .flat_map(|c| {
            let n = match c {
                '\t' => 4,
                '\r' | '\u{0b}' | '\u{0c}' | '\u{85}' | '\u{2028}' | '\u{2029}' => c.len_utf8(),
                _ => 0,
            };
            let keep = (n == 0).then_some(c);
            keep.into_iter().chain(std::iter::repeat_n(' ', n))
        })
        .collect();
    let (line, s, e) = window(&line, s, e);
    let message = Level::Error.title("").snippet(
        Snippet::source(&line)
            .line_start(line_no)
            .annotation(Level::Error.span(s..e)),
    );
    let rendered = Renderer::plain().render(message).to_string();
    let mut out = String::new();
    let body: Vec<&str> = rendered.lines().skip(1).collect();
    let last = body
        .iter()
        .rposition(|l| l.trim() != "|")
        .map_or(0, |i| i + 1);
    for l in &body[..last] {
        out.push('\n');
        out.push_str(l.trim_end());
    }
    out
}

/// The longest line (in bytes) a snippet shows whole: even in
/// double-width characters it stays inside annotate-snippets' 140 columns,
/// so the renderer never trims it itself (its trimming underflowed when the
/// caret sat inside a long run of leading whitespace: found by the `plan`
/// fuzz target).
const WHOLE: usize = 100;
/// How many bytes of a longer line the snippet shows around its caret.
const WINDOW: usize = 60;

/// The part of a long `line` around the caret at bytes `s..e`, cut at
/// character boundaries and marked with `...` where cut, with the caret's
/// offsets moved to match. A short line is returned whole.
fn window(line: &str, s: usize, e: usize) -> (String, usize, usize) {
    if line.len() <= WHOLE {
        return (line.to_owned(), s, e);
    }
    let s = s.min(line.len());
    let mut e = e.clamp(s, s + WINDOW / 2);
    while e < line.len() && !line.is_char_boundary(e) {
        e += 1;
    }
    let mut from = s.saturating_sub(WINDOW / 4);
    while !line.is_char_boundary(from) {
        from -= 1;
    }
    let mut to = (from + WINDOW).max(e).min(line.len());
    while !line.is_char_boundary(to) {
        to += 1;
    }
    let head = if from > 0 { "..." } else { "" };
    let tail = if to < line.len() { "..." } else { "" };
    let shown = format!("{head}{}{tail}", &line[from..to]);
    let shift = |i: usize| i - from + head.len();
    (shown, shift(s), shift(e))
}

#[cfg(test)]
mod tab_tests {
    #[test]
    fn a_long_tab_filled_line_keeps_the_caret_under_the_error() {
        // From the `plan` fuzz target: 300 tabs before a syntax error put
        // the caret in the gutter (and panicked in debug builds).
        let src = format!("name = \"t\"\n{}x = = 1\n", "\t".repeat(300));
        let start = src.find("= 1").unwrap();
        let out = super::snippet(&src, start..start + 1);
        let lines: Vec<&str> = out.lines().filter(|l| !l.is_empty()).collect();
        let code = lines.iter().find(|l| l.contains("x = = 1")).expect(&out);
        let caret = lines.iter().find(|l| l.contains('^')).expect(&out);
        let at = caret.find('^').unwrap();
        assert_eq!(&code[at..at + 3], "= 1", "{out}");
    }
}

#[cfg(test)]
mod window_tests {
    #[test]
    fn a_caret_inside_long_leading_whitespace_is_shown_without_panicking() {
        // From the `plan` fuzz target: tabs, a bare CR and a vertical tab
        // before the token put the caret inside the line's leading
        // whitespace, where annotate-snippets' own trimming underflowed.
        let src = format!(
            "{}\r{}\u{0b}{}J\n",
            "\t".repeat(40),
            "\t".repeat(20),
            "\t".repeat(30)
        );
        for at in [0, 10, 40, 41, 61, src.len() - 2] {
            let out = super::snippet(&src, at..at + 1);
            assert!(out.contains('^'), "caret missing at {at}: {out}");
        }
    }

    #[test]
    fn a_wide_caret_is_cut_at_a_character_boundary() {
        // From the `plan` fuzz target: cutting a caret wider than the window
        // landed inside a two-byte character.
        let src = format!("k = \"{}\"\n", "\u{5e7}".repeat(80));
        for at in [4, 5, 6] {
            let out = super::snippet(&src, at..src.len() - 1);
            assert!(out.contains('^'), "caret missing at {at}: {out}");
        }
    }

    #[test]
    fn a_long_line_is_cut_around_the_caret() {
        let src = format!("k = \"{}\" x\n", "a".repeat(500));
        let at = src.find(" x").unwrap() + 1;
        let out = super::snippet(&src, at..at + 1);
        let code = out.lines().find(|l| l.contains(" x")).expect(&out);
        let caret = out.lines().find(|l| l.contains('^')).expect(&out);
        assert!(code.contains("...") && code.len() < 120, "{out}");
        let col = caret.find('^').unwrap();
        assert_eq!(&code[col..=col], "x", "{out}");
    }
}
