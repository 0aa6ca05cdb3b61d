//! Quoting for the script: every command word through [`sh_quote`], every
//! rule comment through [`comment_token`], every `#` line through
//! [`comment_line`], so that nothing from a report can start a command.

/// One word for `sh`: as it is when it is safe bare, else single-quoted.
pub(super) fn sh_quote(s: &str) -> String {
    if !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./:=@,+%".contains(&b))
    {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

/// Text for a rule's own comment (nft, iptables): printable ASCII without
/// quotes or backslashes, at most `max` bytes.
pub(super) fn comment_token(s: &str, max: usize) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_graphic() && !matches!(c, '"' | '\'' | '\\' | '`' | '$') || c == ' ' {
                c
            } else {
                '_'
            }
        })
        .take(max - 2)
        .collect()
}

/// Text for a `#` line: no control characters, so that nothing in a report
/// can end the comment and start a command.
pub(super) fn comment_line(s: &str) -> String {
    s.chars()
        .map(|c| if crate::plan::is_control(c) { ' ' } else { c })
        .collect()
}
