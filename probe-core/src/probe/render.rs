//! Writes probe results for people (a table) and for programs (the stable
//! `portcall.probe/v1` JSON), to any `Write`, so the library never prints.

use std::borrow::Borrow;
use std::io::{self, Write};

use serde::Serialize;

use super::errqueue::IcmpEvidence;
use super::outcome::{CertFacts, Observed, ProbeResult, Silence};
use crate::port::Protocol;

/// The `schema` value of the JSON document.
pub const PROBE_SCHEMA: &str = "portcall.probe/v1";

/// An outcome other than `open` with more results than this is not listed
/// row by row but counted in a "Not shown" line, as nmap does with closed
/// and filtered ports (unless [`TableOptions::all`]).
pub const TABLE_COLLAPSE_OVER: usize = 25;

/// How the probe table is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TableOptions {
    /// List every result, never collapsing (`probe --all`).
    pub all: bool,
}

#[derive(Serialize)]
struct Row<'a> {
    target: String,
    address: Option<String>,
    port: u16,
    protocol: Protocol,
    observed: Observed,
    detail: &'a str,
    latency_ms: f64,
    attempts: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    certificate: Option<&'a CertFacts>,
    #[serde(skip_serializing_if = "Option::is_none")]
    icmp: Option<&'a IcmpEvidence>,
    #[serde(skip_serializing_if = "Option::is_none")]
    arrived: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    silence: Option<&'a Silence>,
}

fn latency_ms(r: &ProbeResult) -> f64 {
    // Microsecond precision is plenty and keeps the JSON short.
    (r.latency.as_secs_f64() * 1e6).round() / 1e3
}

/// Writes `results` as the `portcall.probe/v1` JSON document, one result per
/// target in the order probed. Each result is one compact line: a sweep of
/// 65535 ports stays greppable and is written in a fraction of the time a
/// fully indented document takes.
pub fn write_json<W: Write>(results: &[ProbeResult], w: W) -> io::Result<()> {
    write_json_each(results, w)
}

/// [`write_json`] of results as they come (e.g. built one at a time from
/// a [`super::SweepResults`]).
pub fn write_json_each<W, I, R>(results: I, mut w: W) -> io::Result<()>
where
    W: Write,
    I: IntoIterator<Item = R>,
    R: Borrow<ProbeResult>,
{
    write!(w, "{{\n  \"schema\": \"{PROBE_SCHEMA}\",\n  \"results\": [")?;
    let mut any = false;
    for (i, r) in results.into_iter().enumerate() {
        let r = r.borrow();
        any = true;
        let row = Row {
            target: r.target.to_string(),
            address: r.address.map(|a| a.ip().to_string()),
            port: r.target.port.get(),
            protocol: r.target.protocol,
            observed: r.observed,
            detail: &r.detail,
            latency_ms: latency_ms(r),
            attempts: r.attempts,
            certificate: r.cert.as_deref(),
            icmp: r.icmp.as_ref(),
            arrived: r.arrived,
            silence: r.silence.as_ref(),
        };
        w.write_all(if i == 0 { b"\n    " } else { b",\n    " })?;
        serde_json::to_writer(&mut w, &row)?;
    }
    if any {
        w.write_all(b"\n  ")?;
    }
    w.write_all(b"]\n}\n")
}

/// Counts of each outcome, in taxonomy order, leaving out zeros.
pub fn summarize(results: &[ProbeResult]) -> Vec<(Observed, usize)> {
    summarize_each(results)
}

/// [`summarize`] of results as they come, in one pass.
pub fn summarize_each<I, R>(results: I) -> Vec<(Observed, usize)>
where
    I: IntoIterator<Item = R>,
    R: Borrow<ProbeResult>,
{
    let mut counts = [0usize; Observed::ALL.len()];
    for r in results {
        let observed = r.borrow().observed;
        if let Some(k) = Observed::ALL.iter().position(|&o| o == observed) {
            counts[k] += 1;
        }
    }
    Observed::ALL
        .iter()
        .zip(counts)
        .map(|(&o, n)| (o, n))
        .filter(|&(_, n)| n > 0)
        .collect()
}

/// Writes `results` as an aligned table followed by a summary line. An
/// outcome other than `open` with more than [`TABLE_COLLAPSE_OVER`]
/// results is counted in a "Not shown: 9,900 timeout" line before the
/// table instead of listed, unless `options.all`.
pub fn write_table<W: Write>(
    results: &[ProbeResult],
    options: TableOptions,
    w: W,
) -> io::Result<()> {
    write_table_each(results.iter(), options, w)
}

/// [`write_table`] of results as they come (e.g. built one at a time from
/// a [`super::SweepResults`]); read twice: for the counts, then the rows.
pub fn write_table_each<W, I, R>(results: I, options: TableOptions, mut w: W) -> io::Result<()>
where
    W: Write,
    I: ExactSizeIterator<Item = R> + Clone,
    R: Borrow<ProbeResult>,
{
    let total = results.len();
    let summary = summarize_each(results.clone());
    let hidden: Vec<(Observed, usize)> = summary
        .iter()
        .copied()
        .filter(|&(o, n)| !options.all && o != Observed::Open && n > TABLE_COLLAPSE_OVER)
        .collect();
    let shown: Vec<R> = results
        .filter(|r| !hidden.iter().any(|(o, _)| *o == r.borrow().observed))
        .collect();
    if !hidden.is_empty() {
        let parts: Vec<String> = hidden
            .iter()
            .map(|(o, n)| format!("{} {o}", thousands(*n)))
            .collect();
        writeln!(w, "Not shown: {} (--all lists them)", parts.join(", "))?;
    }
    let rows: Vec<[String; 6]> = shown
        .iter()
        .map(|r| {
            let r = r.borrow();
            [
                r.target.to_string(),
                r.address
                    .map_or_else(|| "-".to_string(), |a| a.ip().to_string()),
                r.observed.to_string(),
                format!("{:.1} ms", r.latency.as_secs_f64() * 1e3),
                r.attempts.to_string(),
                match &r.icmp {
                    Some(i) => format!("{} (ICMP {} from {})", r.detail, i.kind, i.from),
                    None => r.detail.clone(),
                },
            ]
        })
        .collect();
    let header = [
        "TARGET", "ADDRESS", "OBSERVED", "LATENCY", "ATTEMPTS", "DETAIL",
    ];
    let mut widths = header.map(str::len);
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    if !rows.is_empty() {
        write_row(&mut w, &header.map(String::from), &widths)?;
    }
    for (row, r) in rows.iter().zip(&shown) {
        write_row(&mut w, row, &widths)?;
        if let Some(c) = &r.borrow().cert {
            let verified = match (&c.verified, &c.verify_error) {
                (true, _) => "yes".to_string(),
                (false, Some(e)) => format!("no ({e})"),
                (false, None) => "no".to_string(),
            };
            writeln!(
                w,
                "    certificate: subject {:?}, issuer {:?}, SANs [{}], not after {}, verified {}",
                c.subject,
                c.issuer,
                c.sans.join(", "),
                c.not_after,
                verified
            )?;
        }
    }
    let counts: Vec<String> = summary
        .iter()
        .map(|(o, n)| format!("{} {o}", thousands(*n)))
        .collect();
    write!(
        w,
        "{} target{}: {}",
        thousands(total),
        if total == 1 { "" } else { "s" },
        if counts.is_empty() {
            "nothing probed".to_string()
        } else {
            counts.join(", ")
        }
    )?;
    writeln!(w)
}

/// `9900` as `9,900`.
fn thousands(n: usize) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn write_row<W: Write>(w: &mut W, row: &[String; 6], widths: &[usize; 6]) -> io::Result<()> {
    let mut line = String::new();
    for (i, (cell, width)) in row.iter().zip(widths).enumerate() {
        if i == 5 {
            line.push_str(cell);
        } else if i == 3 || i == 4 {
            line.push_str(&format!("{cell:>width$}  "));
        } else {
            line.push_str(&format!("{cell:<width$}  "));
        }
    }
    writeln!(w, "{}", line.trim_end())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::probe::parse_target;

    fn result(spec: &str, observed: Observed, detail: &str, ms: u64) -> ProbeResult {
        let target = parse_target(spec).unwrap().remove(0);
        ProbeResult {
            address: Some(std::net::SocketAddr::new(
                "198.18.0.2".parse().unwrap(),
                target.port.get(),
            )),
            target,
            local_address: None,
            observed,
            detail: detail.to_string(),
            latency: Duration::from_micros(ms * 1000 + 400),
            connect_time: None,
            tls_time: None,
            attempts: 1,
            cert: None,
            icmp: None,
            path_mtu: false,
            walk: None,
            arrived: None,
            shed: false,
            errno: None,
            silence: None,
            answered: None,
        }
    }

    fn sample() -> Vec<ProbeResult> {
        let mut tls = result("db1:9443/tls", Observed::Open, "", 3);
        tls.cert = Some(Box::new(CertFacts {
            subject: "CN=db1".to_string(),
            issuer: "CN=lab ca".to_string(),
            sans: vec!["DNS:db1".to_string(), "IP:198.18.0.2".to_string()],
            not_after: "2030-01-01T00:00:00Z".to_string(),
            verified: false,
            verify_error: Some("invalid peer certificate: UnknownIssuer".to_string()),
        }));
        let mut timeout = result(
            "db1:3306",
            Observed::Timeout,
            "no answer within 1000 ms (2 attempts)",
            1000,
        );
        timeout.attempts = 2;
        vec![
            tls,
            timeout,
            result(
                "[::1]:7611",
                Observed::Refused,
                "ECONNREFUSED (connection refused)",
                0,
            ),
        ]
    }

    #[test]
    fn json_has_the_v1_shape() {
        let mut out = Vec::new();
        write_json(&sample(), &mut out).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["schema"], "portcall.probe/v1");
        let r = &v["results"];
        assert_eq!(r[0]["target"], "db1:9443/tls");
        assert_eq!(r[0]["address"], "198.18.0.2");
        assert_eq!(r[0]["port"], 9443);
        assert_eq!(r[0]["protocol"], "tls");
        assert_eq!(r[0]["observed"], "open");
        assert_eq!(r[0]["latency_ms"], 3.4);
        assert_eq!(r[0]["certificate"]["sans"][1], "IP:198.18.0.2");
        assert_eq!(r[0]["certificate"]["verified"], false);
        assert_eq!(r[1]["observed"], "timeout");
        assert_eq!(r[1]["attempts"], 2);
        assert!(r[1].get("certificate").is_none());
        assert_eq!(r[2]["target"], "[::1]:7611");
        assert_eq!(r[2]["protocol"], "tcp");
    }

    #[test]
    fn table_lists_results_certificates_and_a_summary() {
        let mut out = Vec::new();
        write_table(&sample(), TableOptions::default(), &mut out).unwrap();
        expect_test::expect![[r#"
            TARGET        ADDRESS     OBSERVED    LATENCY  ATTEMPTS  DETAIL
            db1:9443/tls  198.18.0.2  open         3.4 ms         1
                certificate: subject "CN=db1", issuer "CN=lab ca", SANs [DNS:db1, IP:198.18.0.2], not after 2030-01-01T00:00:00Z, verified no (invalid peer certificate: UnknownIssuer)
            db1:3306      198.18.0.2  timeout   1000.4 ms         2  no answer within 1000 ms (2 attempts)
            [::1]:7611    198.18.0.2  refused      0.4 ms         1  ECONNREFUSED (connection refused)
            3 targets: 1 open, 1 refused, 1 timeout
        "#]]
        .assert_eq(&String::from_utf8(out).unwrap());
    }

    #[test]
    fn big_outcomes_collapse_into_not_shown_like_nmap_unless_all() {
        let mut results: Vec<ProbeResult> = (1..=10_000)
            .map(|p| result(&format!("h:{p}"), Observed::Timeout, "no answer", 0))
            .collect();
        results[41].observed = Observed::Open;
        for r in &mut results[100..195] {
            r.observed = Observed::Refused;
        }
        for r in &mut results[200..210] {
            r.observed = Observed::Unreachable;
        }
        let mut out = Vec::new();
        write_table(&results, TableOptions::default(), &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0],
            "Not shown: 95 refused, 9,894 timeout (--all lists them)"
        );
        // The header, the open port, the ten unreachable ones (too few to
        // collapse), the summary.
        assert_eq!(lines.len(), 1 + 1 + 1 + 10 + 1, "{text}");
        assert!(lines[2].starts_with("h:42 "), "{}", lines[2]);
        assert_eq!(
            *lines.last().unwrap(),
            "10,000 targets: 1 open, 95 refused, 10 unreachable, 9,894 timeout"
        );
        let mut out = Vec::new();
        write_table(&results, TableOptions { all: true }, &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert_eq!(text.lines().count(), 10_000 + 2);
        assert!(!text.contains("Not shown"));
        // Open ports are never collapsed.
        let open: Vec<ProbeResult> = (1..=30)
            .map(|p| result(&format!("h:{p}"), Observed::Open, "", 0))
            .collect();
        let mut out = Vec::new();
        write_table(&open, TableOptions::default(), &mut out).unwrap();
        assert_eq!(String::from_utf8(out).unwrap().lines().count(), 32);
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1_234_567), "1,234,567");
    }
}
