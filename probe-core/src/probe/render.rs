//! Writes probe results for people (a table) and for programs (the stable
//! `portcall.probe/v1` JSON), to any `Write`, so the library never prints.

use std::io::{self, Write};

use serde::Serialize;

use super::outcome::{CertFacts, Observed, ProbeResult};
use crate::port::Protocol;

/// The `schema` value of the JSON document.
pub const PROBE_SCHEMA: &str = "portcall.probe/v1";

/// Above this many results the table leaves out `refused` rows (as nmap
/// leaves out closed ports) and counts them in the summary instead.
pub const TABLE_COLLAPSE_OVER: usize = 100;

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
}

fn latency_ms(r: &ProbeResult) -> f64 {
    // Microsecond precision is plenty and keeps the JSON short.
    (r.latency.as_secs_f64() * 1e6).round() / 1e3
}

/// Writes `results` as the `portcall.probe/v1` JSON document, one result per
/// target in the order probed. Each result is one compact line: a sweep of
/// 65535 ports stays greppable and is written in a fraction of the time a
/// fully indented document takes.
pub fn write_json<W: Write>(results: &[ProbeResult], mut w: W) -> io::Result<()> {
    write!(w, "{{\n  \"schema\": \"{PROBE_SCHEMA}\",\n  \"results\": [")?;
    for (i, r) in results.iter().enumerate() {
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
        };
        w.write_all(if i == 0 { b"\n    " } else { b",\n    " })?;
        serde_json::to_writer(&mut w, &row)?;
    }
    if !results.is_empty() {
        w.write_all(b"\n  ")?;
    }
    w.write_all(b"]\n}\n")
}

/// Counts of each outcome, in taxonomy order, leaving out zeros.
pub fn summarize(results: &[ProbeResult]) -> Vec<(Observed, usize)> {
    Observed::ALL
        .iter()
        .map(|&o| (o, results.iter().filter(|r| r.observed == o).count()))
        .filter(|&(_, n)| n > 0)
        .collect()
}

/// Writes `results` as an aligned table followed by a summary line. Above
/// [`TABLE_COLLAPSE_OVER`] results, `refused` rows are only counted.
pub fn write_table<W: Write>(results: &[ProbeResult], mut w: W) -> io::Result<()> {
    let collapse = results.len() > TABLE_COLLAPSE_OVER;
    let shown: Vec<&ProbeResult> = results
        .iter()
        .filter(|r| !(collapse && r.observed == Observed::Refused))
        .collect();
    let rows: Vec<[String; 6]> = shown
        .iter()
        .map(|r| {
            [
                r.target.to_string(),
                r.address
                    .map_or_else(|| "-".to_string(), |a| a.ip().to_string()),
                r.observed.to_string(),
                format!("{:.1} ms", r.latency.as_secs_f64() * 1e3),
                r.attempts.to_string(),
                r.detail.clone(),
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
        if let Some(c) = &r.cert {
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
    let counts: Vec<String> = summarize(results)
        .iter()
        .map(|(o, n)| format!("{n} {o}"))
        .collect();
    write!(
        w,
        "{} target{}: {}",
        results.len(),
        if results.len() == 1 { "" } else { "s" },
        if counts.is_empty() {
            "nothing probed".to_string()
        } else {
            counts.join(", ")
        }
    )?;
    let hidden = results.len() - shown.len();
    if hidden > 0 {
        write!(
            w,
            " ({hidden} refused not listed; --format json lists every result)"
        )?;
    }
    writeln!(w)
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
            attempts: 1,
            cert: None,
            shed: false,
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
        write_table(&sample(), &mut out).unwrap();
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
    fn big_tables_count_refused_rows_instead_of_listing_them() {
        let mut results: Vec<ProbeResult> = (1..=150)
            .map(|p| result(&format!("h:{p}"), Observed::Refused, "ECONNREFUSED", 0))
            .collect();
        results[41].observed = Observed::Open;
        let mut out = Vec::new();
        write_table(&results, &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert_eq!(text.lines().count(), 3, "{text}");
        assert!(text.contains("h:42"));
        assert!(text.ends_with(
            "150 targets: 1 open, 149 refused (149 refused not listed; --format json lists every result)\n"
        ));
    }
}
