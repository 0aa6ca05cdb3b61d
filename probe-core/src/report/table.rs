//! The terminal rendering of a report: violations first, then errors, then
//! the paths that are fine, each section grouped by flow, every failing row
//! saying why it failed.

use std::io::{self, Write};

use super::text::why;
use super::{PathReport, Report, Verdict};
use crate::render::Table;

/// How the table is drawn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReportTableOptions {
    /// ANSI colour on section headings (the caller decides: only on a TTY).
    pub color: bool,
    /// List the paths that are fine too, not only their count.
    pub show_ok: bool,
}

impl Default for ReportTableOptions {
    fn default() -> ReportTableOptions {
        ReportTableOptions {
            color: false,
            show_ok: true,
        }
    }
}

/// Writes the report as grouped tables.
pub fn write(report: &Report, options: ReportTableOptions, w: &mut impl Write) -> io::Result<()> {
    let s = &report.summary;
    for n in &report.notes {
        writeln!(w, "note: {n}")?;
    }
    if !report.notes.is_empty() {
        writeln!(w)?;
    }
    writeln!(w, "{}: {s}", report.plan)?;
    write_hosts(report, options, w)?;
    let labels = super::PortLabels::new(report);
    // Paths name their family when the report has more than one, so a
    // dual-stack pair's two rows can be told apart.
    let families: std::collections::BTreeSet<_> =
        report.paths.iter().filter_map(|p| p.family).collect();
    let mixed = families.len() > 1;
    let sections = [
        (Verdict::Violation, "VIOLATIONS", "31"),
        (Verdict::Error, "ERRORS", "33"),
        (Verdict::Ok, "OK", "32"),
    ];
    for (verdict, title, colour) in sections {
        let paths: Vec<&PathReport> = report
            .paths
            .iter()
            .filter(|p| p.verdict == verdict)
            .collect();
        if paths.is_empty() {
            continue;
        }
        writeln!(w)?;
        heading(w, options, colour, &format!("{title} ({})", paths.len()))?;
        if verdict == Verdict::Ok && !options.show_ok {
            continue;
        }
        // The quality column only where the round took samples.
        let sampled = paths.iter().any(|p| p.quality.is_some());
        for (label, group) in by_flow(&paths) {
            writeln!(w, "  {label}")?;
            let mut header = vec!["FROM", "TO", "PORT", "EXPECT", "OBSERVED", "LATENCY"];
            if sampled {
                header.push("QUALITY");
            }
            header.push("WHY");
            let mut t = Table::with_header(header).indent(4);
            for p in group {
                let mut row = vec![
                    p.from.clone(),
                    p.to.clone(),
                    match p.family.filter(|_| mixed) {
                        Some(f) => format!("{} {f}", labels.port(p)),
                        None => labels.port(p),
                    },
                    p.expect.to_string(),
                    paint(
                        options,
                        verdict_colour(p.verdict),
                        &p.observed.map_or("-".to_string(), |o| o.to_string()),
                    ),
                    p.latency_ms
                        .map_or("-".to_string(), |l| format!("{l:.2} ms")),
                ];
                if sampled {
                    row.push(super::text::quality(p).unwrap_or_else(|| "-".into()));
                }
                row.push(why(p));
                t.row(row);
            }
            t.write_to(w)?;
        }
    }
    Ok(())
}

/// The ANSI colour of a verdict: red, yellow, green.
fn verdict_colour(v: Verdict) -> &'static str {
    match v {
        Verdict::Violation => "31",
        Verdict::Error => "33",
        Verdict::Ok => "32",
    }
}

/// A cell in the verdict's colour, when colour is on.
fn paint(options: ReportTableOptions, colour: &str, text: &str) -> String {
    if options.color {
        format!("\x1b[{colour}m{text}\x1b[0m")
    } else {
        text.to_string()
    }
}

fn heading(
    w: &mut impl Write,
    options: ReportTableOptions,
    colour: &str,
    text: &str,
) -> io::Result<()> {
    if options.color {
        writeln!(w, "\x1b[1;{colour}m{text}\x1b[0m")
    } else {
        writeln!(w, "{text}")
    }
}

/// Agents that were not up, planned ports that got no canary, and hosts
/// whose firewall could not be traced (and why).
fn write_hosts(report: &Report, options: ReportTableOptions, w: &mut impl Write) -> io::Result<()> {
    let mut t = Table::with_header(["HOST", "ADDRESS", "AGENT", "NOTE"]).indent(2);
    for h in &report.hosts {
        if h.agent.is_problem() {
            t.row([
                h.name.clone(),
                h.address.clone(),
                h.agent.as_str().to_string(),
                h.agent_detail.clone().unwrap_or_default(),
            ]);
        }
        for c in &h.conflicts {
            t.row([
                h.name.clone(),
                h.address.clone(),
                h.agent.as_str().to_string(),
                c.to_string(),
            ]);
        }
        // Why no blame on this host can name a rule (over ssh as over mTLS).
        if let Some(rt) = h
            .rule_trace
            .as_ref()
            .filter(|rt| rt.state == crate::control::TraceState::Unavailable)
        {
            t.row([
                h.name.clone(),
                h.address.clone(),
                h.agent.as_str().to_string(),
                format!(
                    "rule tracing unavailable: {}",
                    rt.reason.as_deref().unwrap_or("no reason given")
                ),
            ]);
        }
    }
    if t.is_empty() {
        return Ok(());
    }
    writeln!(w)?;
    heading(w, options, "33", "AGENTS")?;
    t.write_to(w)
}

/// Groups paths by their flow's label ([`PathReport::flow_label`]), keeping
/// first-seen order.
fn by_flow<'a>(paths: &[&'a PathReport]) -> Vec<(String, Vec<&'a PathReport>)> {
    let mut groups: Vec<(String, Vec<&PathReport>)> = Vec::new();
    for p in paths {
        let label = p.flow_label();
        match groups.iter_mut().find(|(l, _)| *l == label) {
            Some((_, g)) => g.push(p),
            None => groups.push((label, vec![p])),
        }
    }
    groups
}

#[cfg(test)]
pub(crate) mod tests {
    use expect_test::expect;

    use super::*;
    use crate::control::ListenerState;
    use crate::plan::Expect;
    use crate::port::Protocol;
    use crate::probe::Observed;
    use crate::report::{AgentState, Conflict, HostReport, Summary};

    fn path(
        to: &str,
        port: u16,
        expect: Expect,
        observed: Option<Observed>,
        verdict: Verdict,
        detail: &str,
        flow: &str,
    ) -> PathReport {
        PathReport {
            from: "web".into(),
            to: to.into(),
            address: format!("127.0.9.{}", to.len()),
            port,
            service: "svc".into(),
            protocol: Protocol::Tcp,
            expect,
            observed,
            verdict,
            detail: detail.into(),
            latency_ms: observed.map(|_| 0.25),
            attempts: u32::from(observed.is_some()),
            target_saw: None,
            seen_source: None,
            family: Some(crate::plan::Family::Ipv4),
            icmp: None,
            target_stage: None,
            blame: None,
            flows: vec![flow.into()],
            flow_from: vec![],
            server_port: None,
            tls_ms: None,
            flow: flow.into(),
            role: None,
            cert: None,
            service_banner: None,
            arrived: None,
            local_denial: None,
            listening_elsewhere: Vec::new(),
            proof: None,
            service_answer: None,
            answered: None,
            quality: None,
        }
    }

    pub(crate) fn sample() -> Report {
        let mut r = Report {
            notes: Vec::new(),
            schema: crate::report::SCHEMA.into(),
            plan: "sample".into(),
            started_at: "2025-01-01T00:00:00.000Z".into(),
            finished_at: "2025-01-01T00:00:01.000Z".into(),
            summary: Summary::default(),
            hosts: vec![
                HostReport {
                    name: "db".into(),
                    address: "127.0.9.2".into(),
                    agent: AgentState::Up,
                    conflicts: vec![Conflict {
                        port: 3306,
                        service: "mysql".into(),
                        state: ListenerState::Held,
                        detail: "a service already listens on 127.0.9.2:3306; probed live".into(),
                    }],
                    agent_detail: None,
                    plan_mismatch: None,
                    zone: None,
                    addresses: vec![],
                    rule_trace: None,
                },
                HostReport {
                    name: "cache".into(),
                    address: "127.0.9.3".into(),
                    agent: AgentState::Unreachable,
                    conflicts: vec![],
                    agent_detail: Some("connect refused".into()),
                    plan_mismatch: None,
                    zone: None,
                    addresses: vec![],
                    rule_trace: None,
                },
            ],
            paths: vec![
                path(
                    "db",
                    3306,
                    Expect::Open,
                    Some(Observed::Open),
                    Verdict::Ok,
                    "connected to the live service (a real service holds the port)",
                    "app tier",
                ),
                path(
                    "db",
                    3306,
                    Expect::Blocked,
                    Some(Observed::Open),
                    Verdict::Violation,
                    "db saw our nonce from 127.0.9.1",
                    "no db from web",
                ),
                path(
                    "cache",
                    6379,
                    Expect::Open,
                    None,
                    Verdict::Error,
                    "target agent cache unreachable, nothing to measure against: connect refused",
                    "app tier",
                ),
                path(
                    "db",
                    9999,
                    Expect::Open,
                    Some(Observed::Timeout),
                    Verdict::Violation,
                    "dropped: no answer within 500 ms (2 attempts) while the canary of db was listening",
                    "app tier",
                ),
            ],
        };
        r.recount();
        r
    }

    /// A blamed path reads as one sentence in the table's WHY column, in
    /// markdown and in HTML; JSON carries the fields themselves.
    #[test]
    fn blame_is_one_sentence_in_every_human_format() {
        use crate::probe::IcmpEvidence;
        use crate::report::{Blame, Cause, ReportFormat, TargetStage, Where, render};
        let mut r = sample();
        let p = &mut r.paths[1];
        p.observed = Some(Observed::Unreachable);
        p.icmp = Some(IcmpEvidence {
            kind: "admin-prohibited".into(),
            code: 13,
            from: "198.18.1.254".into(),
        });
        p.target_stage = Some(TargetStage::Nothing);
        p.blame = Some(Blame {
            at: Where::Network,
            hop: Some("198.18.1.254".into()),
            hop_distance: None,
            cause: Cause::IcmpReject,
            rule: None,
        });
        let sentence =
            "rejected by 198.18.1.254 (ICMP admin-prohibited), a device on the way, not db";
        for format in [
            ReportFormat::Table,
            ReportFormat::Markdown,
            ReportFormat::Html,
        ] {
            let mut out = Vec::new();
            render(&r, format, Default::default(), &mut out).unwrap();
            let text = String::from_utf8(out).unwrap();
            // HTML says it once in the violations list (the matrix cell's
            // tooltip repeats it).
            let needle = match format {
                ReportFormat::Html => {
                    format!("<td class=\"why\">must be blocked, but {sentence}</td>")
                }
                _ => format!("must be blocked, but {sentence}"),
            };
            assert_eq!(text.matches(&needle).count(), 1, "{format:?}:\n{text}");
        }
        let json = serde_json::to_value(&r.paths[1]).unwrap();
        assert_eq!(json["blame"]["where"], "network");
        assert_eq!(json["icmp"]["type"], "admin-prohibited");
        assert_eq!(json["target_stage"], "nothing");
    }

    #[test]
    fn colour_marks_the_observed_cells_by_verdict_and_keeps_columns_aligned() {
        let mut out = Vec::new();
        let options = ReportTableOptions {
            color: true,
            show_ok: true,
        };
        write(&sample(), options, &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(text.contains("\x1b[31mopen\x1b[0m"), "{text}");
        assert!(text.contains("\x1b[32mopen\x1b[0m"), "{text}");
        assert!(text.contains("\x1b[31mtimeout\x1b[0m"), "{text}");
        // Without the colour codes, the table is the plain one.
        let mut plain = Vec::new();
        write(
            &sample(),
            ReportTableOptions {
                color: false,
                ..options
            },
            &mut plain,
        )
        .unwrap();
        let stripped: String = {
            let mut s = String::new();
            let mut esc = false;
            for c in text.chars() {
                match (esc, c) {
                    (false, '\x1b') => esc = true,
                    (true, 'm') => esc = false,
                    (true, _) => {}
                    (false, c) => s.push(c),
                }
            }
            s
        };
        assert_eq!(stripped, String::from_utf8(plain).unwrap());
        assert!(
            stripped.starts_with("sample: 4 paths, 1 ok, 2 violations, 1 error\n"),
            "{stripped}"
        );
    }

    #[test]
    fn a_report_with_both_families_names_each_paths_family() {
        let mut r = sample();
        let mut out = Vec::new();
        write(&r, ReportTableOptions::default(), &mut out).unwrap();
        let one_family = String::from_utf8(out).unwrap();
        assert!(!one_family.contains("ipv4"), "{one_family}");
        r.paths[1].family = Some(crate::plan::Family::Ipv6);
        r.paths[1].address = "2001:2:0:9::3".into();
        let mut out = Vec::new();
        write(&r, ReportTableOptions::default(), &mut out).unwrap();
        let both = String::from_utf8(out).unwrap();
        assert!(both.contains("(svc) ipv6"), "{both}");
        assert!(both.contains("(svc) ipv4"), "{both}");
    }

    #[test]
    fn violations_come_first_grouped_by_flow_with_reasons() {
        let mut out = Vec::new();
        write(&sample(), ReportTableOptions::default(), &mut out).unwrap();
        expect![[r#"
            sample: 4 paths, 1 ok, 2 violations, 1 error

            AGENTS
              HOST   ADDRESS    AGENT        NOTE
              db     127.0.9.2  up           port 3306 (mysql) held: a service already listens on 127.0.9.2:3306; probed live
              cache  127.0.9.3  unreachable  connect refused

            VIOLATIONS (2)
              no db from web
                FROM  TO  PORT            EXPECT   OBSERVED  LATENCY  WHY
                web   db  3306/tcp (svc)  blocked  open      0.25 ms  must be blocked, but db saw our nonce from 127.0.9.1
              app tier
                FROM  TO  PORT            EXPECT  OBSERVED  LATENCY  WHY
                web   db  9999/tcp (svc)  open    timeout   0.25 ms  must be open, but dropped: no answer within 500 ms (2 attempts) while the canary of db was listening

            ERRORS (1)
              app tier
                FROM  TO     PORT            EXPECT  OBSERVED  LATENCY  WHY
                web   cache  6379/tcp (svc)  open    -         -        target agent cache unreachable, nothing to measure against: connect refused

            OK (1)
              app tier
                FROM  TO  PORT            EXPECT  OBSERVED  LATENCY  WHY
                web   db  3306/tcp (svc)  open    open      0.25 ms  connected to the live service (a real service holds the port)
        "#]].assert_eq(&String::from_utf8(out).unwrap());
    }

    #[test]
    fn json_is_the_v1_contract_and_reads_back() {
        let r = sample();
        let mut out = Vec::new();
        crate::report::json::write(&r, &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        expect![[r#"
            {
              "schema": "portcall.report/v1",
              "plan": "sample",
              "started_at": "2025-01-01T00:00:00.000Z",
              "finished_at": "2025-01-01T00:00:01.000Z",
              "summary": {
                "paths": 4,
                "ok": 1,
                "violations": 2,
                "errors": 1
              },
              "hosts": [
                {
                  "name": "db",
                  "address": "127.0.9.2",
                  "agent": "up",
                  "conflicts": [
                    {
                      "port": 3306,
                      "service": "mysql",
                      "state": "held",
                      "detail": "a service already listens on 127.0.9.2:3306; probed live"
                    }
                  ],
                  "zone": null,
                  "rule_trace": null
                },
                {
                  "name": "cache",
                  "address": "127.0.9.3",
                  "agent": "unreachable",
                  "conflicts": [],
                  "zone": null,
                  "rule_trace": null
                }
              ],
              "paths": [
                {
                  "from": "web",
                  "to": "db",
                  "address": "127.0.9.2",
                  "port": 3306,
                  "service": "svc",
                  "protocol": "tcp",
                  "expect": "open",
                  "observed": "open",
                  "verdict": "ok",
                  "detail": "connected to the live service (a real service holds the port)",
                  "latency_ms": 0.25,
                  "attempts": 1,
                  "target_saw": null,
                  "seen_source": null,
                  "family": "ipv4",
                  "icmp": null,
                  "target_stage": null,
                  "blame": null,
                  "flow_from": [],
                  "tls_ms": null,
                  "flow": "app tier",
                  "role": null,
                  "cert": null,
                  "service_banner": null
                },
                {
                  "from": "web",
                  "to": "db",
                  "address": "127.0.9.2",
                  "port": 3306,
                  "service": "svc",
                  "protocol": "tcp",
                  "expect": "blocked",
                  "observed": "open",
                  "verdict": "violation",
                  "detail": "db saw our nonce from 127.0.9.1",
                  "latency_ms": 0.25,
                  "attempts": 1,
                  "target_saw": null,
                  "seen_source": null,
                  "family": "ipv4",
                  "icmp": null,
                  "target_stage": null,
                  "blame": null,
                  "flow_from": [],
                  "tls_ms": null,
                  "flow": "no db from web",
                  "role": null,
                  "cert": null,
                  "service_banner": null
                },
                {
                  "from": "web",
                  "to": "cache",
                  "address": "127.0.9.5",
                  "port": 6379,
                  "service": "svc",
                  "protocol": "tcp",
                  "expect": "open",
                  "observed": null,
                  "verdict": "error",
                  "detail": "target agent cache unreachable, nothing to measure against: connect refused",
                  "latency_ms": null,
                  "attempts": 0,
                  "target_saw": null,
                  "seen_source": null,
                  "family": "ipv4",
                  "icmp": null,
                  "target_stage": null,
                  "blame": null,
                  "flow_from": [],
                  "tls_ms": null,
                  "flow": "app tier",
                  "role": null,
                  "cert": null,
                  "service_banner": null
                },
                {
                  "from": "web",
                  "to": "db",
                  "address": "127.0.9.2",
                  "port": 9999,
                  "service": "svc",
                  "protocol": "tcp",
                  "expect": "open",
                  "observed": "timeout",
                  "verdict": "violation",
                  "detail": "dropped: no answer within 500 ms (2 attempts) while the canary of db was listening",
                  "latency_ms": 0.25,
                  "attempts": 1,
                  "target_saw": null,
                  "seen_source": null,
                  "family": "ipv4",
                  "icmp": null,
                  "target_stage": null,
                  "blame": null,
                  "flow_from": [],
                  "tls_ms": null,
                  "flow": "app tier",
                  "role": null,
                  "cert": null,
                  "service_banner": null
                }
              ]
            }
        "#]].assert_eq(&text);
        let mut back = crate::report::json::read(&text).unwrap();
        for p in &mut back.paths {
            p.flows = vec![];
        }
        let mut want = r.clone();
        for p in &mut want.paths {
            p.flows = vec![];
        }
        for h in &mut want.hosts {
            h.agent_detail = None;
        }
        assert_eq!(back, want);
        let err = crate::report::json::read(r#"{"schema":"portcall.plan/v1"}"#).unwrap_err();
        assert!(
            err.to_string().contains("expected portcall.report/v1"),
            "{err}"
        );
        assert!(crate::report::json::read("nope").is_err());
    }

    #[test]
    fn table_and_markdown_show_the_figures_only_when_the_round_sampled() {
        let mut report = crate::report::table::tests::sample();
        let render = |r: &crate::report::Report| {
            let mut table = Vec::new();
            let options = crate::report::table::ReportTableOptions {
                show_ok: true,
                ..Default::default()
            };
            crate::report::table::write(r, options, &mut table).unwrap();
            let mut md = Vec::new();
            crate::report::markdown::write(r, &mut md).unwrap();
            (
                String::from_utf8(table).unwrap(),
                String::from_utf8(md).unwrap(),
            )
        };
        let (table, md) = render(&report);
        assert!(
            !table.contains("QUALITY") && !md.contains("Quality"),
            "{table}{md}"
        );
        report.paths[0].quality = Some(Some(crate::report::quality::Quality::of(
            &crate::probe::samples::SampleTally::of(
                1000,
                1000,
                &(0..931)
                    .map(|k| 20_000 + (k % 3) * 1000)
                    .collect::<Vec<u64>>(),
            ),
            Some(950),
        )));
        for p in report.paths.iter_mut().skip(1) {
            p.quality = Some(None);
        }
        let (table, md) = render(&report);
        let figures = "loss fwd 5.0% ret 2.0%, rtt p50 21.0 p95 22.0 ms, jitter 1.3 ms";
        for text in [&table, &md] {
            assert!(text.contains(figures), "{text}");
        }
        assert!(
            table.contains("QUALITY") && md.contains("| Quality |"),
            "{md}"
        );
        assert!(table.contains("not sampled"), "{table}");
    }
}
