//! What the binary says about itself: shell completions that a real shell
//! loads and completes with, a man page that `man` renders, and the version
//! an inventory tool reads.

use std::process::{Command, Output, Stdio};

fn portcall(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_portcall"))
        .args(args)
        .output()
        .expect("run portcall")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn runs(tool: &str, arg: &str) -> bool {
    Command::new(tool)
        .arg(arg)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Sources `portcall completions bash` in bash and asks its completion
/// function for the words `line` completes to at its last word.
fn bash_complete(script: &std::path::Path, words: &[&str]) -> Vec<String> {
    let quoted: Vec<String> = words.iter().map(|w| format!("'{w}'")).collect();
    let cword = words.len() - 1;
    let prev = if cword > 0 { words[cword - 1] } else { "" };
    let program = format!(
        "set -e\nsource '{}'\n\
         COMP_WORDS=({})\nCOMP_CWORD={cword}\nCOMP_LINE=\"${{COMP_WORDS[*]}}\"\nCOMP_POINT=${{#COMP_LINE}}\n\
         _portcall portcall '{}' '{prev}'\nprintf '%s\\n' \"${{COMPREPLY[@]}}\"\n",
        script.display(),
        quoted.join(" "),
        words[cword],
    );
    let out = Command::new("bash")
        .args(["--noprofile", "--norc", "-c", &program])
        .output()
        .expect("run bash");
    assert!(out.status.success(), "bash: {}", text(&out.stderr));
    text(&out.stdout)
        .lines()
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect()
}

#[test]
fn bash_completion_completes_ch_to_check() {
    let out = portcall(&["completions", "bash"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("portcall.bash");
    std::fs::write(&script, &out.stdout).unwrap();

    // bash itself registers the function for the command.
    let registered = Command::new("bash")
        .args(["--noprofile", "--norc", "-c"])
        .arg(format!(
            "source '{}' && complete -p portcall",
            script.display()
        ))
        .output()
        .unwrap();
    assert!(
        text(&registered.stdout).contains("-F _portcall portcall"),
        "{}{}",
        text(&registered.stdout),
        text(&registered.stderr)
    );

    assert_eq!(bash_complete(&script, &["portcall", "ch"]), ["check"]);
    // Subcommands' options complete too, and the new subcommands are there.
    assert_eq!(
        bash_complete(&script, &["portcall", "check", "--form"]),
        ["--format"]
    );
    assert_eq!(
        bash_complete(&script, &["portcall", "comp"]),
        ["completions"]
    );
}

#[test]
fn completions_for_zsh_and_fish_name_the_subcommands() {
    for (shell, marker) in [
        ("zsh", "#compdef portcall"),
        ("fish", "complete -c portcall"),
    ] {
        let out = portcall(&["completions", shell]);
        assert_eq!(out.status.code(), Some(0), "{shell}: {}", text(&out.stderr));
        let s = text(&out.stdout);
        assert!(s.contains(marker), "{shell}: {s:.200}");
        assert!(s.contains("check") && s.contains("plan"), "{shell}");
    }
    let out = portcall(&["completions", "tcsh"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("tcsh"), "{}", text(&out.stderr));
}

#[test]
fn man_page_is_roff_that_man_renders() {
    let out = portcall(&["man"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let page = text(&out.stdout);
    // clap_mangen puts two string definitions (the apostrophe for groff and
    // other roffs) before the title; the title is the first macro after them.
    let first_macro = page
        .lines()
        .find(|l| !l.starts_with(".ie") && !l.starts_with(".el"))
        .unwrap();
    assert!(
        first_macro.starts_with(".TH portcall 1 "),
        "first macro: {first_macro}"
    );
    for section in [
        ".SH NAME",
        ".SH SYNOPSIS",
        ".SH DESCRIPTION",
        ".SH SUBCOMMANDS",
    ] {
        assert!(page.contains(section), "{section} missing");
    }
    assert!(
        page.contains("portcall\\-check(1)"),
        "check's page is named"
    );

    if !runs("man", "--version") {
        println!("skipped: man not installed (Debian package man-db); roff not rendered");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("portcall.1");
    std::fs::write(&file, &out.stdout).unwrap();
    let rendered = Command::new("man")
        .arg("-l")
        .arg(&file)
        .env("MANPAGER", "cat")
        .env("MANWIDTH", "100")
        .env("MAN_KEEP_FORMATTING", "")
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    assert!(rendered.status.success(), "{}", text(&rendered.stderr));
    let shown = text(&rendered.stdout);
    assert!(shown.contains("NAME"), "{shown}");
    assert!(shown.contains("portcall-check(1)"), "{shown}");
    // groff warns on stderr about roff it cannot read.
    assert!(
        !text(&rendered.stderr).contains("warning"),
        "{}",
        text(&rendered.stderr)
    );
}

#[test]
fn man_dir_writes_a_page_per_subcommand() {
    let dir = tempfile::tempdir().unwrap();
    let out = portcall(&["man", "--dir", dir.path().to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    for page in ["portcall.1", "portcall-check.1", "portcall-plan-lint.1"] {
        let s = std::fs::read_to_string(dir.path().join(page)).unwrap();
        assert!(s.contains(".TH portcall"), "{page}");
    }
    assert!(!dir.path().join("portcall-help.1").exists());

    let missing = dir.path().join("missing");
    let out = portcall(&["man", "--dir", missing.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("not a directory"));
}

#[test]
fn version_names_commit_and_build_date() {
    let out = portcall(&["version", "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let s = text(&out.stdout);
    let v: serde_json::Value = serde_json::from_str(&s).unwrap();
    assert_eq!(v["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(v["control_protocol"], 2);
    let commit = v["commit"].as_str().unwrap();
    // Built from a checkout, the commit is git's short hash of HEAD.
    let head = Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output();
    match head {
        Ok(h) if h.status.success() => {
            // cargo reran build.rs when HEAD moved, so this is HEAD.
            assert_eq!(commit, text(&h.stdout).trim());
        }
        _ => assert_eq!(commit, "unknown"),
    }
    let date = v["build_date"].as_str().unwrap();
    let parts: Vec<&str> = date.split('-').collect();
    assert_eq!(parts.len(), 3, "{date}");
    assert!(parts[0].len() == 4 && parts[1].len() == 2 && parts[2].len() == 2);
    assert!(
        date.chars().all(|c| c == '-' || c.is_ascii_digit()),
        "{date}"
    );
    // The documented key order, for tools that read it with grep.
    let keys: Vec<usize> = [
        "\"version\"",
        "\"commit\"",
        "\"build_date\"",
        "\"control_protocol\"",
    ]
    .iter()
    .map(|k| s.find(k).unwrap())
    .collect();
    assert!(keys.windows(2).all(|w| w[0] < w[1]), "{s}");

    let out = portcall(&["--version"]);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(
        text(&out.stdout),
        format!(
            "portcall {} (commit {commit}, built {date})\n",
            env!("CARGO_PKG_VERSION")
        )
    );
    let out = portcall(&["version"]);
    assert!(text(&out.stdout).contains(&format!("commit: {commit}\n")));
    assert!(text(&out.stdout).contains("control protocol: 2\n"));
}
