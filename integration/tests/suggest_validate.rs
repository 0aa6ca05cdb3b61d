//! The commands `portcall suggest` prints are accepted by the real tools and
//! land where they must: nft and iptables scripts run with `sh` inside a
//! throwaway network namespace whose chain already holds an accept and a drop,
//! and every suggested accept ends up ahead of the drop for its port, every
//! suggested drop (a port's default deny) ahead of the accept, and the
//! default deny's accepts for the port's must-be-open sources ahead of its
//! own drop; firewalld rich rules are accepted by `firewall-offline-cmd`
//! against a scratch configuration directory.
//!
//! The namespaces have only their own loopback: no interface, no address,
//! nothing attached to the root namespace, and no packet is sent. Needs root,
//! `ip`, `nft`, `iptables`/`ip6tables` (Debian `iptables`) and
//! `firewall-offline-cmd` (Debian `firewalld`); without them each test prints
//! `skipped: <reason>` and passes, unless `PORTCALL_REQUIRE_LAB=1`.

use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};

use anyhow::{Context, Result, bail, ensure};
use probe_core::report::suggest::{Action, FirewallFormat, SuggestOptions, Suggestions, suggest};
use probe_core::report::{self, Report};

/// Why the test cannot run: `None` when it can. Prints `skipped` or panics
/// under `PORTCALL_REQUIRE_LAB=1`.
fn ready(tools: &[(&str, &str)], needs_root: bool) -> bool {
    let missing = if needs_root {
        integration::lab_missing()
    } else {
        None
    }
    .or_else(|| {
        tools.iter().find_map(|(tool, package)| {
            tool_path(tool)
                .is_none()
                .then(|| format!("needs `{tool}` (Debian package {package})"))
        })
    });
    match missing {
        None => true,
        Some(reason) => {
            if std::env::var(integration::REQUIRE_LAB_ENV).as_deref() == Ok("1") {
                panic!(
                    "{}=1 but a prerequisite is missing: {reason}",
                    integration::REQUIRE_LAB_ENV
                );
            }
            eprintln!("skipped: {reason}");
            false
        }
    }
}

fn tool_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/bin", "/bin"].map(PathBuf::from))
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

static SEQ: AtomicUsize = AtomicUsize::new(0);

/// A bare network namespace (loopback only), deleted on drop, also when
/// the test panics.
struct Netns {
    name: String,
}

impl Netns {
    fn new(tag: &str) -> Result<Netns> {
        let name = format!(
            "pcsv{}-{}-{tag}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::SeqCst)
        );
        let out = Command::new("ip")
            .args(["netns", "add", &name])
            .output()
            .context("run ip netns add")?;
        ensure!(
            out.status.success(),
            "ip netns add {name}: {}",
            text(&out.stderr)
        );
        Ok(Netns { name })
    }

    /// Runs `program args` inside the namespace; fails unless it exits 0.
    fn run(&self, program: &str, args: &[&str], stdin: Option<&str>) -> Result<String> {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.name, program])
            .args(args)
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().with_context(|| format!("spawn {program}"))?;
        if let Some(input) = stdin {
            use std::io::Write;
            child
                .stdin
                .take()
                .context("stdin")?
                .write_all(input.as_bytes())?;
        }
        let out = child.wait_with_output()?;
        ensure!(
            out.status.success(),
            "{program} {args:?} in {} exited with {}: {}{}",
            self.name,
            out.status,
            text(&out.stdout),
            text(&out.stderr)
        );
        Ok(text(&out.stdout))
    }

    /// Runs a script with `sh -e` inside the namespace.
    fn sh(&self, script: &str) -> Result<String> {
        let dir = tempfile::tempdir()?;
        let file = dir.path().join("suggested.sh");
        std::fs::write(&file, script)?;
        self.run("sh", &["-e", file.to_str().context("path")?], None)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// A report with both address families, must-be-open paths that were
/// dropped or rejected, must-be-blocked paths that were open (one through a
/// NAT), and violations no rule at the target can fix.
fn report() -> Report {
    let path = |from: &str,
                to: &str,
                port: u16,
                expect: &str,
                observed: &str,
                verdict: &str,
                detail: &str,
                seen: Option<&str>| {
        serde_json::json!({
            "from": from, "to": to,
            "address": if to == "db" { "198.18.0.4" } else { "2001:db8::4" },
            "port": port, "service": format!("svc{port}"), "protocol": "tcp",
            "expect": expect, "observed": observed, "verdict": verdict,
            "detail": detail, "latency_ms": 1.0, "attempts": 1,
            "target_saw": seen.is_some(), "seen_source": seen,
        })
    };
    let host = |name: &str, address: &str| serde_json::json!({"name": name, "address": address, "agent": "up", "conflicts": []});
    let value = serde_json::json!({
        "schema": "portcall.report/v1",
        "plan": "validate",
        "started_at": "2025-01-01T00:00:00.000Z",
        "finished_at": "2025-01-01T00:00:01.000Z",
        "summary": {"paths": 0, "ok": 0, "violations": 0, "errors": 0},
        "hosts": [
            host("web", "198.18.0.2"), host("nat", "198.18.0.3"), host("ops", "198.18.0.7"),
            host("web6", "2001:db8::2"), host("db", "198.18.0.4"), host("db6", "2001:db8::4"),
        ],
        "paths": [
            path("web", "db", 5432, "open", "timeout", "violation", "dropped", None),
            path("web", "db", 5433, "open", "refused", "violation", "reset (TCP RST) while the canary of db was listening", None),
            path("web", "db", 22, "blocked", "open", "violation", "db saw our nonce from 198.18.0.2", Some("198.18.0.2")),
            path("nat", "db", 22, "blocked", "open", "violation", "db saw our nonce from 198.18.0.1", Some("198.18.0.1")),
            path("ops", "db", 22, "open", "open", "ok", "db saw our nonce from 2001:db8::7", Some("2001:db8::7")),
            path("web", "db", 9443, "open", "unreachable", "violation", "rejected with an ICMP error while the canary of db was listening (EPERM (operation not permitted))", None),
            path("web6", "db6", 5432, "open", "unreachable", "violation", "rejected with an ICMP error (EHOSTUNREACH (no route to host))", None),
            path("web6", "db6", 22, "blocked", "open", "violation", "db6 saw our nonce from 2001:db8::2", Some("2001:db8::2")),
            path("web", "db", 7611, "open", "wrong-host", "violation", "connected, but the canary of db did not record our nonce", None),
        ],
    });
    let mut r = report::json::read(&value.to_string()).expect("a valid report");
    // web's own kernel refused to send to 9443 (EPERM).
    if let Some(p) = r.paths.iter_mut().find(|p| p.port == 9443) {
        p.local_denial = Some(1);
    }
    r.recount();
    r
}

/// `(accept, source, port)` of every rule the suggestions hold; a default
/// deny is its drop for every source (`None`) and an accept per allowed
/// address.
fn rules(s: &Suggestions) -> Vec<(bool, Option<String>, u16)> {
    s.hosts
        .iter()
        .flat_map(|h| h.items.iter())
        .flat_map(|i| match &i.action {
            Action::Accept { source, port, .. } => vec![(true, Some(source.to_string()), *port)],
            Action::DefaultDeny { port, allow } => std::iter::once((false, None, *port))
                .chain(
                    allow
                        .iter()
                        .map(|(a, _)| (true, Some(a.to_string()), *port)),
                )
                .collect(),
            _ => vec![],
        })
        .collect()
}

fn script(format: FirewallFormat, host: Option<&str>) -> (Suggestions, String) {
    let mut o = SuggestOptions::new(format);
    o.host = host.map(str::to_string);
    let s = suggest(&report(), &o).expect("suggest");
    let mut out = Vec::new();
    s.write(&mut out).expect("write");
    (s, String::from_utf8(out).expect("utf-8"))
}

/// Position of the first line of `listing` containing every needle.
fn position(listing: &str, needles: &[&str]) -> Result<usize> {
    listing
        .lines()
        .position(|l| needles.iter().all(|n| l.contains(n)))
        .with_context(|| format!("no line with {needles:?} in\n{listing}"))
}

#[test]
fn nft_rules_apply_in_a_namespace_ahead_of_existing_rules() -> Result<()> {
    if !ready(&[("nft", "nftables")], true) {
        return Ok(());
    }
    let (s, script) = script(FirewallFormat::Nft, None);
    let wanted = rules(&s);
    ensure!(wanted.len() == 7, "{wanted:?}\n{script}");
    let ns = Netns::new("nft")?;
    // What an administrator already has: a drop and an accept per port the
    // suggestions touch, appended, so that only insertion at the head makes
    // a suggested rule win.
    let mut base = String::from(
        "table inet filter {\n chain input {\n  type filter hook input priority 0; policy accept;\n",
    );
    for (_, _, port) in &wanted {
        base.push_str(&format!(
            "  tcp dport {port} drop comment \"existing drop\"\n  tcp dport {port} accept comment \"existing accept\"\n"
        ));
    }
    base.push_str(" }\n}\n");
    ns.run("nft", &["-f", "-"], Some(&base))?;
    ns.sh(&script)?;
    let listing = ns.run("nft", &["list", "chain", "inet", "filter", "input"], None)?;
    let deny = |port: &u16| format!("portcall: default deny of port {port}");
    for (accept, source, port) in &wanted {
        let ours = match source {
            Some(source) => {
                let family = if source.contains(':') { "ip6" } else { "ip" };
                position(
                    &listing,
                    &[
                        &format!("{family} saddr {source} "),
                        &format!("tcp dport {port} "),
                        if *accept { " accept" } else { " drop" },
                        "portcall: ",
                    ],
                )?
            }
            None => position(
                &listing,
                &[&format!("tcp dport {port} "), " drop", &deny(port)],
            )?,
        };

        let theirs = position(
            &listing,
            &[
                &format!("tcp dport {port} "),
                if *accept {
                    "existing drop"
                } else {
                    "existing accept"
                },
            ],
        )?;
        ensure!(
            ours < theirs,
            "suggested rule for {source:?} port {port} comes after the existing one:\n{listing}"
        );
    }
    // db's default deny of port 22: both of ops's accepts precede its drop.
    let drop = position(&listing, &["default deny of port 22, web -> db:22"])?;
    for source in ["ip saddr 198.18.0.7 ", "ip6 saddr 2001:db8::7 "] {
        let keep = position(&listing, &[source, "keep port 22 open for ops"])?;
        ensure!(keep < drop, "{source} after the default deny:\n{listing}");
    }
    // The validator is not a rubber stamp: a malformed line fails.
    ensure!(
        ns.sh("nft insert rule inet filter input ip saddr 198.18.0.300 tcp dport 1 accept\n")
            .is_err(),
        "nft accepted a bad address"
    );
    Ok(())
}

#[test]
fn nft_rules_of_one_host_apply_to_an_ip_family_table() -> Result<()> {
    if !ready(&[("nft", "nftables")], true) {
        return Ok(());
    }
    let mut o = SuggestOptions::new(FirewallFormat::Nft);
    o.host = Some("db".into());
    o.table = Some("ip fw".into());
    o.chain = Some("in-tcp".into());
    let s = suggest(&report(), &o)?;
    let mut out = Vec::new();
    s.write(&mut out)?;
    let script = String::from_utf8(out)?;
    // Accepts for 5432 and 5433, the default deny of 22 with its IPv4
    // accept for ops (the IPv6 address ops arrived from is noted, not
    // written: an ip table neither matches nor drops IPv6).
    ensure!(rules(&s).len() == 4, "{script}");
    ensure!(
        script.contains("2001:db8::7 (seen by the target in this round, not in the plan) is not matched by table ip fw"),
        "{script}"
    );
    ensure!(!script.contains("# host db6"), "{script}");
    let ns = Netns::new("nftip")?;
    ns.run(
        "nft",
        &["-f", "-"],
        Some("table ip fw {\n chain in-tcp {\n  type filter hook input priority 0;\n }\n}\n"),
    )?;
    ns.sh(&script)?;
    let listing = ns.run("nft", &["list", "chain", "ip", "fw", "in-tcp"], None)?;
    ensure!(listing.matches("portcall: ").count() == 4, "{listing}");
    Ok(())
}

#[test]
fn iptables_rules_apply_in_a_namespace_ahead_of_existing_rules() -> Result<()> {
    if !ready(&[("iptables", "iptables"), ("ip6tables", "iptables")], true) {
        return Ok(());
    }
    let (s, script) = script(FirewallFormat::Iptables, None);
    let wanted = rules(&s);
    let ns = Netns::new("ipt")?;
    let tools = |source: &Option<String>| -> &'static [&'static str] {
        match source {
            Some(s) if s.contains(':') => &["ip6tables"],
            Some(_) => &["iptables"],
            None => &["iptables", "ip6tables"],
        }
    };
    for (_, source, port) in &wanted {
        let port = port.to_string();
        for tool in tools(source) {
            for (target, note) in [("DROP", "existing drop"), ("ACCEPT", "existing accept")] {
                ns.run(
                    tool,
                    &[
                        "-w",
                        "-A",
                        "INPUT",
                        "-p",
                        "tcp",
                        "--dport",
                        &port,
                        "-m",
                        "comment",
                        "--comment",
                        note,
                        "-j",
                        target,
                    ],
                    None,
                )?;
            }
        }
    }
    ns.sh(&script)?;
    for (tool, v6) in [("iptables", false), ("ip6tables", true)] {
        let listing = ns.run(tool, &["-w", "-S", "INPUT"], None)?;
        for (accept, source, port) in wanted.iter().filter(|w| tools(&w.1).contains(&tool)) {
            let prefix = if v6 { "/128" } else { "/32" };
            let deny = format!("portcall: default deny of port {port}");
            let ours = match source {
                Some(source) => position(
                    &listing,
                    &[
                        &format!("-s {source}{prefix} "),
                        &format!("--dport {port} "),
                        if *accept { "-j ACCEPT" } else { "-j DROP" },
                        "portcall: ",
                    ],
                )?,
                None => position(&listing, &[&format!("--dport {port} "), "-j DROP", &deny])?,
            };
            let theirs = position(
                &listing,
                &[
                    &format!("--dport {port} "),
                    if *accept {
                        "existing drop"
                    } else {
                        "existing accept"
                    },
                ],
            )?;
            ensure!(ours < theirs, "{tool}: {source:?} port {port}:\n{listing}");
        }
    }
    let listing = ns.run("iptables", &["-w", "-S", "INPUT"], None)?;
    let drop = position(&listing, &["default deny of port 22, web -> db:22"])?;
    let keep = position(
        &listing,
        &["-s 198.18.0.7/32 ", "keep port 22 open for ops"],
    )?;
    ensure!(keep < drop, "{listing}");
    ensure!(
        ns.sh("iptables -w -I INPUT -s 198.18.0.300 -p tcp --dport 1 -j ACCEPT\n")
            .is_err(),
        "iptables accepted a bad address"
    );
    Ok(())
}

/// Runs `firewall-offline-cmd` on a scratch configuration: the machine's
/// own firewalld configuration is never read or written.
fn offline(dir: &std::path::Path, args: &str) -> Result<Output> {
    let line = format!(
        "firewall-offline-cmd --system-config {} --default-config /usr/lib/firewalld {args}",
        dir.display()
    );
    Ok(Command::new("sh").args(["-c", &line]).output()?)
}

#[test]
fn firewalld_rich_rules_are_accepted_by_firewall_offline_cmd() -> Result<()> {
    if !ready(&[("firewall-offline-cmd", "firewalld")], false) {
        return Ok(());
    }
    let scratch = tempfile::tempdir()?;
    std::fs::write(
        scratch.path().join("firewalld.conf"),
        "DefaultZone=public\n",
    )?;
    let mut o = SuggestOptions::new(FirewallFormat::Firewalld);
    o.zone = Some("internal".into());
    let s = suggest(&report(), &o)?;
    let mut out = Vec::new();
    s.write(&mut out)?;
    let script = String::from_utf8(out)?;
    let mut applied = 0;
    for line in script
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
    {
        if line == "firewall-cmd --reload" {
            continue;
        }
        // The script is for a running firewalld; the offline tool takes the
        // same rule options without --permanent (it only writes files).
        let Some(args) = line.strip_prefix("firewall-cmd --permanent ") else {
            bail!("unexpected command: {line}");
        };
        let out = offline(scratch.path(), args)?;
        ensure!(
            out.status.success(),
            "firewall-offline-cmd refused {line}: {}{}",
            text(&out.stdout),
            text(&out.stderr)
        );
        applied += 1;
    }
    ensure!(applied == rules(&s).len() && applied == 7, "{script}");
    let listed = offline(scratch.path(), "--zone=internal --list-rich-rules")?;
    let listed = text(&listed.stdout);
    // db's and db6's default deny of port 22 are the same rich rule in one
    // zone, which firewalld keeps once.
    ensure!(listed.lines().count() == 6, "{listed}");
    ensure!(
        listed.contains(r#"rule priority="-32767" port port="22" protocol="tcp" drop"#),
        "{listed}"
    );
    ensure!(
        listed.contains(
            r#"rule priority="-32768" family="ipv6" source address="2001:db8::7" port port="22" protocol="tcp" accept"#
        ),
        "{listed}"
    );
    ensure!(
        listed.contains(
            r#"rule priority="-32768" family="ipv6" source address="2001:db8::2" port port="5432" protocol="tcp" accept"#
        ),
        "{listed}"
    );
    let bad = offline(
        scratch.path(),
        "--add-rich-rule='rule family=\"ipv4\" bogus'",
    )?;
    ensure!(
        !bad.status.success(),
        "firewall-offline-cmd accepted a bad rule"
    );
    Ok(())
}

#[test]
fn unfixable_violations_are_comments_under_the_right_host() {
    let (_, script) = script(FirewallFormat::Nft, None);
    let web = script.split("# host web (").nth(1).expect("a web section");
    let web = web.split("\n# host ").next().unwrap_or_default();
    assert!(
        web.contains("NO RULE HERE: the connection never left web"),
        "{script}"
    );
    assert!(
        script.contains("NO RULE HERE: another host (or no agent) answered at 198.18.0.4:7611"),
        "{script}"
    );
    // The NAT'd prober is covered by the port's default deny, not given a
    // drop of its own; the must-be-open source stays open in both families.
    assert!(
        script.contains("# nat -> db:22/tcp (svc22)\n#   violation: must be blocked, observed open: db saw our nonce from 198.18.0.1\n#   covered by the default deny written for web -> db:22/tcp (svc22)"),
        "{script}"
    );
    assert!(
        script.contains("note: must stay open for ops: 198.18.0.7 (plan), 2001:db8::7 (seen by the target in this round, not in the plan)"),
        "{script}"
    );
}

/// A report of UDP paths: a dropped must-be-open 53/udp, a must-be-blocked
/// 514/udp that got through (web must still reach 514/tcp, which the UDP
/// default deny must not keep open for it).
fn udp_report() -> Report {
    let path = |port: u16, protocol: &str, expect: &str, observed: &str, verdict: &str| {
        serde_json::json!({
            "from": "web", "to": "db", "address": "198.18.0.4",
            "port": port, "service": format!("svc{port}"), "protocol": protocol,
            "expect": expect, "observed": observed, "verdict": verdict,
            "detail": "udp", "latency_ms": null, "attempts": 2, "arrived": 0,
            "target_saw": observed == "open", "seen_source": null,
        })
    };
    let host = |name: &str, address: &str| serde_json::json!({"name": name, "address": address, "agent": "up", "conflicts": []});
    let value = serde_json::json!({
        "schema": "portcall.report/v1",
        "plan": "validate-udp",
        "started_at": "2025-01-01T00:00:00.000Z",
        "finished_at": "2025-01-01T00:00:01.000Z",
        "summary": {"paths": 0, "ok": 0, "violations": 0, "errors": 0},
        "hosts": [host("web", "198.18.0.2"), host("db", "198.18.0.4")],
        "paths": [
            path(53, "udp", "open", "timeout", "violation"),
            path(514, "udp", "blocked", "open", "violation"),
            path(514, "tcp", "open", "open", "ok"),
        ],
    });
    let mut r = report::json::read(&value.to_string()).expect("a valid report");
    r.recount();
    r
}

fn udp_script(format: FirewallFormat) -> Result<String> {
    let s = suggest(&udp_report(), &SuggestOptions::new(format))?;
    ensure!(rules(&s).len() == 2, "{:?}", rules(&s));
    let mut out = Vec::new();
    s.write(&mut out)?;
    Ok(String::from_utf8(out)?)
}

#[test]
fn udp_rules_are_applied_by_nft_iptables_and_firewall_offline_cmd() -> Result<()> {
    if ready(&[("nft", "nftables")], true) {
        let script = udp_script(FirewallFormat::Nft)?;
        let ns = Netns::new("nftudp")?;
        ns.run(
            "nft",
            &["-f", "-"],
            Some("table inet filter {\n chain input {\n  type filter hook input priority 0; policy accept;\n }\n}\n"),
        )?;
        ns.sh(&script)?;
        let listing = ns.run("nft", &["list", "chain", "inet", "filter", "input"], None)?;
        position(&listing, &["ip saddr 198.18.0.2 udp dport 53 ", " accept"])?;
        position(
            &listing,
            &["udp dport 514 ", " drop", "default deny of port 514"],
        )?;
        ensure!(!listing.contains("tcp dport"), "{listing}");
    }
    if ready(&[("iptables", "iptables")], true) {
        let script = udp_script(FirewallFormat::Iptables)?;
        let ns = Netns::new("iptudp")?;
        ns.sh(&script)?;
        let listing = ns.run("iptables", &["-w", "-S", "INPUT"], None)?;
        position(
            &listing,
            &["-s 198.18.0.2/32", "-p udp", "--dport 53", "-j ACCEPT"],
        )?;
        position(&listing, &["-p udp", "--dport 514", "-j DROP"])?;
        ensure!(!listing.contains("-p tcp"), "{listing}");
    }
    if ready(&[("firewall-offline-cmd", "firewalld")], false) {
        let script = udp_script(FirewallFormat::Firewalld)?;
        let scratch = tempfile::tempdir()?;
        std::fs::write(
            scratch.path().join("firewalld.conf"),
            "DefaultZone=public\n",
        )?;
        for line in script
            .lines()
            .filter(|l| !l.is_empty() && !l.starts_with('#') && *l != "firewall-cmd --reload")
        {
            let Some(args) = line.strip_prefix("firewall-cmd --permanent ") else {
                bail!("unexpected command: {line}");
            };
            let out = offline(scratch.path(), args)?;
            ensure!(
                out.status.success(),
                "firewall-offline-cmd refused {line}: {}{}",
                text(&out.stdout),
                text(&out.stderr)
            );
        }
        let listed = text(&offline(scratch.path(), "--list-rich-rules")?.stdout);
        ensure!(
            listed.contains(r#"source address="198.18.0.2" port port="53" protocol="udp" accept"#),
            "{listed}"
        );
        ensure!(
            listed.contains(r#"port port="514" protocol="udp" drop"#),
            "{listed}"
        );
    }
    Ok(())
}
