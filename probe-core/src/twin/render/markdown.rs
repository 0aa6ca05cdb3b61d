//! The what-if as GitHub-flavoured Markdown, fit for a firewall pull
//! request's comment: a status line a reviewer reads first (counts and
//! what the exit status means), then one table per kind of change, the
//! paths that break first, then how far the twin agrees with the live
//! network.

use std::io::{self, Write};

use super::shared::{WhatIfRenderOptions, clean, counts_words, exit_reason, path_words, sections};
use crate::report::markup::escape_markdown_cell;
use crate::twin::diff::{PathChange, WhatIf, WhatIfPath, rule_words, side_words};

/// Escapes operator input for a table cell or a line: controls made
/// visible, then the cell's own escaping.
fn md(s: &str) -> String {
    escape_markdown_cell(&clean(s))
}

/// Writes the what-if as Markdown.
pub(super) fn write(
    whatif: &WhatIf,
    options: WhatIfRenderOptions,
    w: &mut impl Write,
) -> io::Result<()> {
    let status = if whatif.exit_code() == 0 {
        "PASS"
    } else {
        "FAIL"
    };
    writeln!(
        w,
        "### portcall whatif {}: **{status}** — {}",
        md(&whatif.plan),
        counts_words(whatif)
    )?;
    writeln!(w)?;
    writeln!(
        w,
        "Exit status {}: {} (the twin of {}).",
        whatif.exit_code(),
        exit_reason(whatif),
        md(&whatif.state)
    )?;
    writeln!(w)?;
    if whatif.changes.is_empty() {
        writeln!(w, "No change loaded: the twin's base against itself.")?;
    } else {
        writeln!(w, "Changes loaded together:")?;
        writeln!(w)?;
        for c in &whatif.changes {
            writeln!(w, "- {}: {} ({})", md(&c.host), md(&c.file), md(&c.kind))?;
        }
    }
    for (change, title, paths) in sections(whatif, options) {
        writeln!(w)?;
        if change == PathChange::Same {
            writeln!(w, "<details>")?;
            writeln!(w, "<summary>{title} ({})</summary>", paths.len())?;
        } else {
            writeln!(w, "#### {title} ({})", paths.len())?;
        }
        writeln!(w)?;
        write_table(&paths, w)?;
        if change == PathChange::Same {
            writeln!(w)?;
            writeln!(w, "</details>")?;
        }
    }
    write_fidelity(whatif, w)
}

fn write_table(paths: &[&WhatIfPath], w: &mut impl Write) -> io::Result<()> {
    writeln!(
        w,
        "| Path | Expect | Base | Base rule | Candidate | Candidate rule |"
    )?;
    writeln!(w, "|---|---|---|---|---|---|")?;
    for p in paths {
        writeln!(
            w,
            "| {} | {} | {} | {} | {} | {} |",
            md(&path_words(p)),
            p.expect,
            md(&side_words(&p.base)),
            md(&rule_words(p.base.rule.as_ref())),
            md(&side_words(&p.candidate)),
            md(&rule_words(p.candidate.rule.as_ref())),
        )?;
    }
    Ok(())
}

/// With `--live`: the paths where the twin's base differs from the live
/// report, or one line saying it agrees everywhere.
fn write_fidelity(whatif: &WhatIf, w: &mut impl Write) -> io::Result<()> {
    let Some(f) = &whatif.fidelity else {
        return Ok(());
    };
    writeln!(w)?;
    writeln!(w, "#### Fidelity")?;
    writeln!(w)?;
    if f.is_empty() {
        return writeln!(
            w,
            "The twin's base agrees with the live report on every path."
        );
    }
    writeln!(
        w,
        "The twin's base differs from the live report on {} path{}:",
        f.len(),
        if f.len() == 1 { "" } else { "s" }
    )?;
    writeln!(w)?;
    writeln!(w, "| Path | Live | Twin |")?;
    writeln!(w, "|---|---|---|")?;
    for d in f {
        writeln!(
            w,
            "| {} | {} | {} |",
            md(&d.path),
            md(&side_words(&d.live)),
            md(&side_words(&d.twin))
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use expect_test::expect;

    use super::*;
    use crate::twin::render::tests::sample;

    fn text(all: bool) -> String {
        let mut out = Vec::new();
        write(&sample(), WhatIfRenderOptions { all }, &mut out).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn status_then_one_table_per_change_breaks_first() {
        expect![[r####"
            ### portcall whatif sample: **FAIL** — 6 paths: 1 breaks, 1 opens, 1 fixes, 1 changed, 1 same, 1 outside the twin

            Exit status 1: the change breaks a must-be-open path or opens a must-be-blocked one (the twin of state).

            Changes loaded together:

            - db: drop\`\\u{202e}.nft (nft-commands)

            #### Breaks (1)

            | Path | Expect | Base | Base rule | Candidate | Candidate rule |
            |---|---|---|---|---|---|
            | web\|\`x\`&lt;script&gt;\\u{202e} → db:3306/tcp (ipv4) | open | ok (open) | - | violation (timeout) | db inet fw input: handle 5: ip saddr 198.18.5.0/24 drop comment "&lt;script&gt;alert(1)&lt;/script&gt; \| \`rm\` \\u{202e}nepo" |

            #### Opens (1)

            | Path | Expect | Base | Base rule | Candidate | Candidate rule |
            |---|---|---|---|---|---|
            | web → db:22/tcp (ipv6) | blocked | ok (timeout) | db inet fw input: policy drop | violation (open) | - |

            #### Fixes (1)

            | Path | Expect | Base | Base rule | Candidate | Candidate rule |
            |---|---|---|---|---|---|
            | app → db:5432/tcp (ipv4) | open | violation (refused) | db inet fw input: handle 7: tcp dport 5432 reject | ok (open) | - |

            #### Other changes (1)

            | Path | Expect | Base | Base rule | Candidate | Candidate rule |
            |---|---|---|---|---|---|
            | web → cache:6379/tcp (ipv4) | blocked | ok (timeout) | cache inet fw input: policy drop | ok (refused) | cache inet fw input: handle 9: tcp dport 6379 reject |

            #### Outside the twin (1)

            | Path | Expect | Base | Base rule | Candidate | Candidate rule |
            |---|---|---|---|---|---|
            | web → ext:443/tls | open | ok (open) | - | ok (open) | - |

            #### Fidelity

            The twin's base differs from the live report on 1 path:

            | Path | Live | Twin |
            |---|---|---|
            | web -&gt; ext:443/tls | violation (timeout) | ok (open) |
        "####]].assert_eq(&text(false));
    }

    #[test]
    fn hostile_names_cannot_split_cells_open_code_or_inject_html() {
        let text = text(true);
        for line in text.lines().filter(|l| l.starts_with("| ")) {
            // Every row has the header's cells: an unescaped pipe would
            // add one.
            let cells = line.replace("\\|", "").matches('|').count();
            assert!(cells == 7 || cells == 4, "{line}");
        }
        assert!(!text.contains("<script>"), "{text}");
        assert!(text.contains("&lt;script&gt;"), "{text}");
        assert!(!text.replace("\\`", "").contains('`'), "{text}");
        assert!(
            text.contains("\\\\u{202e}"),
            "the override is shown: {text}"
        );
    }
}
