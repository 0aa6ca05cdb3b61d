//! `portcall suggest --whatif`: a suggestion script split into its hosts'
//! sections, each a [`Change`] the twin runs with `sh` inside that host's
//! namespace, so the predicted diff is the one of the very commands the
//! operator is about to run.

use std::path::Path;

use super::run::{Change, ChangeKind};

/// The `# host NAME …` sections of a `portcall suggest` script (nft or
/// iptables), each written to `dir/suggest-NAME.sh` as a change; hosts
/// whose section has no command are left out.
pub fn changes(script: &str, dir: &Path) -> std::io::Result<Vec<Change>> {
    let mut sections: Vec<(String, String)> = Vec::new();
    for line in script.lines() {
        if let Some(rest) = line.strip_prefix("# host ") {
            let name = rest.split_whitespace().next().unwrap_or_default();
            sections.push((name.to_string(), String::new()));
            continue;
        }
        if let Some((_, body)) = sections.last_mut() {
            body.push_str(line);
            body.push('\n');
        }
    }
    let mut out = Vec::new();
    for (host, body) in sections {
        let commands = body
            .lines()
            .any(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#'));
        if host.is_empty() || !commands {
            continue;
        }
        let file = dir.join(format!("suggest-{host}.sh"));
        std::fs::write(&file, body)?;
        out.push(Change {
            host,
            file,
            kind: ChangeKind::ShellCommands,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_host_section_with_commands_becomes_its_change() {
        let dir = tempfile::tempdir().unwrap();
        let script = "# portcall suggest --format nft\n# Review.\n\n# host db (198.18.3.40)\n# a -> db:3306\nnft insert rule inet filter input tcp dport 3306 drop\n\n# host lb (198.18.1.10)\n# NO RULE HERE\n\n# host gw (198.18.2.40)\nnft insert rule inet filter output accept\n";
        let c = changes(script, dir.path()).unwrap();
        let hosts: Vec<&str> = c.iter().map(|c| c.host.as_str()).collect();
        assert_eq!(hosts, ["db", "gw"]);
        let body = std::fs::read_to_string(&c[0].file).unwrap();
        assert_eq!(
            body,
            "# a -> db:3306\nnft insert rule inet filter input tcp dport 3306 drop\n\n"
        );
        assert_eq!(c[1].kind, ChangeKind::ShellCommands);
    }
}
