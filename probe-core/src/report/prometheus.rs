//! A check's report as Prometheus text exposition (format 0.0.4), for
//! node_exporter's textfile collector: a cron job or systemd timer runs
//! `portcall check --format prometheus --out DIR/portcall.prom`, and the
//! same alert rules that watch schedule-mode agents watch it too.
//!
//! The per-path families use the schedule-mode agent's names and labels
//! (`portcall_path_open`, `portcall_path_ok`, `portcall_path_latency_seconds`,
//! `portcall_path_observed`, `portcall_tls_cert_not_after_seconds`, all
//! labelled `{plan, from, to, port, service, expect}` (plus `family` where
//! known and `protocol="udp"` on UDP paths) so two plans'
//! textfiles never collide; see `schedule::metrics`), with the verdict of the joined
//! report rather than a live probe's. The textfile collector forbids sample
//! timestamps, so the round's time is a gauge of its own; it and every other
//! series carry the `plan` label too.

use std::collections::HashSet;
use std::io::{self, Write};

use super::text::unix_seconds;
use super::{PathReport, Report, Verdict};
use crate::plan::{Expect, Family};
use crate::port::Protocol;
use crate::probe::Observed;

/// A path's sample of one family: its extra label, if any, and its value;
/// `None` where the path has no sample of the family.
type PathValue = Option<(Option<(&'static str, &'static str)>, String)>;

/// One per-path family of the exposition, in the order written.
struct PathFamily {
    name: &'static str,
    help: &'static str,
    /// Only paths with network evidence have it (not measured: absent).
    measured_only: bool,
    value: fn(&PathReport) -> PathValue,
}

/// The family that says whether a TLS path's certificate verified, the
/// same in a check's textfile and a schedule-mode agent's exposition.
pub(crate) const CERT_VERIFIED: &str = "portcall_tls_cert_verified";
pub(crate) const CERT_VERIFIED_HELP: &str = "1 when the server certificate a TLS path presented verified (its chain against the trust roots in use, and its name or address), 0 when it did not; absent where no TLS handshake saw a certificate.";

/// The family of a path's proof level, the same in a check's textfile and
/// a schedule-mode agent's exposition.
pub(crate) const PROOF_LEVEL: &str = "portcall_path_proof_level";
pub(crate) const PROOF_LEVEL_HELP: &str = "How far the path proved the planned service: 1 l4 (the connection completed), 2 identified (the planned protocol answered), 3 healthy (its own ready answer was read); absent where nothing connected.";

/// The per-path families, with the schedule-mode agent's names.
const PATH_FAMILIES: [PathFamily; 8] = [
    PathFamily {
        name: "portcall_path_open",
        help: "1 when the path was observed open (the target saw our nonce, or the live service answered), 0 when it was not; absent when the path was not measured.",
        measured_only: true,
        value: |p| Some((None, bool01(p.observed == Some(Observed::Open)).to_string())),
    },
    PathFamily {
        name: "portcall_path_ok",
        help: "1 when the path met its expectation (open or blocked) in the check, else 0 (a violation, or not measured).",
        measured_only: false,
        value: |p| Some((None, bool01(p.verdict == Verdict::Ok).to_string())),
    },
    PathFamily {
        name: "portcall_path_latency_seconds",
        help: "TCP connect round trip (SYN to SYN-ACK) of the path's last probe attempt, in seconds, without any TLS handshake; absent when it never connected.",
        measured_only: true,
        value: |p| p.latency_ms.map(|ms| (None, (ms / 1000.0).to_string())),
    },
    PathFamily {
        name: "portcall_path_observed",
        help: "What the check observed on the path, as the observed label (open, refused, unreachable, timeout, tls-error, wrong-host, local-error, wrong-service); always 1.",
        measured_only: false,
        value: |p| {
            p.observed
                .map(|o| (Some(("observed", o.as_str())), "1".to_string()))
        },
    },
    PathFamily {
        name: "portcall_path_verdict",
        help: "The path's verdict in the check, as the verdict label (ok, violation, error); always 1.",
        measured_only: false,
        value: |p| Some((Some(("verdict", p.verdict.as_str())), "1".to_string())),
    },
    PathFamily {
        name: "portcall_tls_cert_not_after_seconds",
        help: "Unix time at which the server certificate a TLS path presented expires; absent where no TLS handshake saw a certificate.",
        measured_only: false,
        value: |p| {
            let t = p.cert.as_ref().and_then(|c| unix_seconds(&c.not_after))?;
            Some((None, t.to_string()))
        },
    },
    PathFamily {
        name: PROOF_LEVEL,
        help: PROOF_LEVEL_HELP,
        measured_only: true,
        value: |p| Some((None, p.proof?.level().to_string())),
    },
    PathFamily {
        name: CERT_VERIFIED,
        help: CERT_VERIFIED_HELP,
        measured_only: false,
        value: |p| {
            let verified = p.cert.as_ref()?.verified;
            Some((None, bool01(verified).to_string()))
        },
    },
];

/// Writes the report's metrics.
pub fn write(report: &Report, w: &mut impl Write) -> io::Result<()> {
    // A hand-edited report could repeat a path; a repeated series would make
    // the whole file unusable, so only the first occurrence is exported.
    let mut seen = HashSet::new();
    let paths: Vec<&PathReport> = report
        .paths
        .iter()
        .filter(|p| seen.insert((&p.from, &p.to, p.port, p.protocol, &p.service, p.expect)))
        .collect();
    let plan = report.plan.as_str();
    for f in &PATH_FAMILIES {
        gauge(w, f.name, f.help)?;
        let measured = |p: &&&PathReport| p.observed.is_some_and(Observed::is_network_evidence);
        for p in paths.iter().filter(|p| !f.measured_only || measured(p)) {
            if let Some((extra, value)) = (f.value)(p) {
                sample(w, f.name, (plan, p), extra, &value)?;
            }
        }
    }
    write_round(report, w)
}

/// The round's families: paths by verdict, when it finished, how long it
/// took.
fn write_round(report: &Report, w: &mut impl Write) -> io::Result<()> {
    gauge(w, "portcall_check_paths", "Paths of the check by verdict.")?;
    let s = &report.summary;
    for (verdict, n) in [
        (Verdict::Ok, s.ok),
        (Verdict::Violation, s.violations),
        (Verdict::Error, s.errors),
    ] {
        writeln!(
            w,
            "portcall_check_paths{{plan=\"{}\",verdict=\"{}\"}} {n}",
            escape_label(&report.plan),
            verdict.as_str()
        )?;
    }

    if let Some(t) = unix_seconds(&report.finished_at) {
        gauge(
            w,
            "portcall_last_round_timestamp_seconds",
            "Unix time at which the check's round finished.",
        )?;
        let plan = escape_label(&report.plan);
        writeln!(
            w,
            "portcall_last_round_timestamp_seconds{{plan=\"{plan}\"}} {t}"
        )?;
        if let Some(start) = unix_seconds(&report.started_at).filter(|s| *s <= t) {
            gauge(
                w,
                "portcall_round_duration_seconds",
                "Wall time of the check's round, in seconds.",
            )?;
            writeln!(
                w,
                "portcall_round_duration_seconds{{plan=\"{plan}\"}} {}",
                t - start
            )?;
        }
    }
    Ok(())
}

/// `1` or `0`.
pub(crate) fn bool01(b: bool) -> &'static str {
    if b { "1" } else { "0" }
}

/// The HELP and TYPE lines of a metric family.
pub(crate) fn family(w: &mut impl Write, name: &str, help: &str, kind: &str) -> io::Result<()> {
    writeln!(w, "# HELP {name} {}", escape_help(help))?;
    writeln!(w, "# TYPE {name} {kind}")
}

/// The labels of every per-path sample, the same for a check's report and
/// for the schedule-mode agent, so one set of alert rules watches both.
pub(crate) struct PathLabels<'a> {
    pub plan: &'a str,
    pub from: &'a str,
    pub to: &'a str,
    pub port: u16,
    pub service: &'a str,
    pub expect: Expect,
    /// `ipv4` or `ipv6`, where known: a dual-stack pair has a series per
    /// family.
    pub family: Option<Family>,
    /// Exported as `protocol="udp"` for UDP paths only, so that the series
    /// of TCP and TLS paths keep the labels they always had (53/udp and
    /// 53/tcp still differ by it).
    pub protocol: Protocol,
}

/// One per-path sample: the path's labels, then `extra`, then the value.
pub(crate) fn path_sample(
    w: &mut impl Write,
    name: &str,
    path: &PathLabels<'_>,
    extra: &[(&str, &str)],
    value: &str,
) -> io::Result<()> {
    let port = path.port.to_string();
    let labels = [
        ("plan", path.plan),
        ("from", path.from),
        ("to", path.to),
        ("port", port.as_str()),
        ("service", path.service),
        ("expect", path.expect.as_str()),
    ];
    let family = path.family.map(|f| ("family", f.as_str()));
    let protocol = (path.protocol == Protocol::Udp).then_some(("protocol", "udp"));
    write!(w, "{name}{{")?;
    for (i, (k, v)) in labels
        .iter()
        .chain(family.as_slice())
        .chain(protocol.as_slice())
        .chain(extra)
        .enumerate()
    {
        if i > 0 {
            w.write_all(b",")?;
        }
        write!(w, "{k}=\"{}\"", escape_label(v))?;
    }
    writeln!(w, "}} {value}")
}

/// Every family of a report is a gauge: a report is a snapshot, not a
/// count since some start.
fn gauge(w: &mut impl Write, name: &str, help: &str) -> io::Result<()> {
    family(w, name, help, "gauge")
}

fn sample(
    w: &mut impl Write,
    name: &str,
    (plan, p): (&str, &PathReport),
    extra: Option<(&str, &str)>,
    value: &str,
) -> io::Result<()> {
    let labels = PathLabels {
        plan,
        from: &p.from,
        to: &p.to,
        port: p.port,
        service: &p.service,
        expect: p.expect,
        family: p.family,
        protocol: p.protocol,
    };
    path_sample(w, name, &labels, extra.as_slice(), value)
}

/// Label values escape backslash, double quote and line feed (the same
/// rules for every exposition portcall writes: `check --format prometheus`
/// and the schedule-mode agent).
pub(crate) fn escape_label(v: &str) -> String {
    let mut s = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => s.push_str("\\\\"),
            '"' => s.push_str("\\\""),
            '\n' => s.push_str("\\n"),
            c => s.push(c),
        }
    }
    s
}

/// HELP text escapes backslash and line feed.
pub(crate) fn escape_help(v: &str) -> String {
    v.replace('\\', "\\\\").replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use expect_test::expect;

    use super::*;
    use crate::report::table::tests::sample;

    #[test]
    fn path_families_match_schedule_mode_names_and_labels() {
        let mut out = Vec::new();
        write(&sample(), &mut out).unwrap();
        expect![[r##"
            # HELP portcall_path_open 1 when the path was observed open (the target saw our nonce, or the live service answered), 0 when it was not; absent when the path was not measured.
            # TYPE portcall_path_open gauge
            portcall_path_open{plan="sample",from="web",to="db",port="3306",service="svc",expect="open",family="ipv4"} 1
            portcall_path_open{plan="sample",from="web",to="db",port="3306",service="svc",expect="blocked",family="ipv4"} 1
            portcall_path_open{plan="sample",from="web",to="db",port="9999",service="svc",expect="open",family="ipv4"} 0
            # HELP portcall_path_ok 1 when the path met its expectation (open or blocked) in the check, else 0 (a violation, or not measured).
            # TYPE portcall_path_ok gauge
            portcall_path_ok{plan="sample",from="web",to="db",port="3306",service="svc",expect="open",family="ipv4"} 1
            portcall_path_ok{plan="sample",from="web",to="db",port="3306",service="svc",expect="blocked",family="ipv4"} 0
            portcall_path_ok{plan="sample",from="web",to="cache",port="6379",service="svc",expect="open",family="ipv4"} 0
            portcall_path_ok{plan="sample",from="web",to="db",port="9999",service="svc",expect="open",family="ipv4"} 0
            # HELP portcall_path_latency_seconds TCP connect round trip (SYN to SYN-ACK) of the path's last probe attempt, in seconds, without any TLS handshake; absent when it never connected.
            # TYPE portcall_path_latency_seconds gauge
            portcall_path_latency_seconds{plan="sample",from="web",to="db",port="3306",service="svc",expect="open",family="ipv4"} 0.00025
            portcall_path_latency_seconds{plan="sample",from="web",to="db",port="3306",service="svc",expect="blocked",family="ipv4"} 0.00025
            portcall_path_latency_seconds{plan="sample",from="web",to="db",port="9999",service="svc",expect="open",family="ipv4"} 0.00025
            # HELP portcall_path_observed What the check observed on the path, as the observed label (open, refused, unreachable, timeout, tls-error, wrong-host, local-error, wrong-service); always 1.
            # TYPE portcall_path_observed gauge
            portcall_path_observed{plan="sample",from="web",to="db",port="3306",service="svc",expect="open",family="ipv4",observed="open"} 1
            portcall_path_observed{plan="sample",from="web",to="db",port="3306",service="svc",expect="blocked",family="ipv4",observed="open"} 1
            portcall_path_observed{plan="sample",from="web",to="db",port="9999",service="svc",expect="open",family="ipv4",observed="timeout"} 1
            # HELP portcall_path_verdict The path's verdict in the check, as the verdict label (ok, violation, error); always 1.
            # TYPE portcall_path_verdict gauge
            portcall_path_verdict{plan="sample",from="web",to="db",port="3306",service="svc",expect="open",family="ipv4",verdict="ok"} 1
            portcall_path_verdict{plan="sample",from="web",to="db",port="3306",service="svc",expect="blocked",family="ipv4",verdict="violation"} 1
            portcall_path_verdict{plan="sample",from="web",to="cache",port="6379",service="svc",expect="open",family="ipv4",verdict="error"} 1
            portcall_path_verdict{plan="sample",from="web",to="db",port="9999",service="svc",expect="open",family="ipv4",verdict="violation"} 1
            # HELP portcall_tls_cert_not_after_seconds Unix time at which the server certificate a TLS path presented expires; absent where no TLS handshake saw a certificate.
            # TYPE portcall_tls_cert_not_after_seconds gauge
            # HELP portcall_path_proof_level How far the path proved the planned service: 1 l4 (the connection completed), 2 identified (the planned protocol answered), 3 healthy (its own ready answer was read); absent where nothing connected.
            # TYPE portcall_path_proof_level gauge
            # HELP portcall_tls_cert_verified 1 when the server certificate a TLS path presented verified (its chain against the trust roots in use, and its name or address), 0 when it did not; absent where no TLS handshake saw a certificate.
            # TYPE portcall_tls_cert_verified gauge
            # HELP portcall_check_paths Paths of the check by verdict.
            # TYPE portcall_check_paths gauge
            portcall_check_paths{plan="sample",verdict="ok"} 1
            portcall_check_paths{plan="sample",verdict="violation"} 2
            portcall_check_paths{plan="sample",verdict="error"} 1
            # HELP portcall_last_round_timestamp_seconds Unix time at which the check's round finished.
            # TYPE portcall_last_round_timestamp_seconds gauge
            portcall_last_round_timestamp_seconds{plan="sample"} 1735689601
            # HELP portcall_round_duration_seconds Wall time of the check's round, in seconds.
            # TYPE portcall_round_duration_seconds gauge
            portcall_round_duration_seconds{plan="sample"} 1
        "##]]
        .assert_eq(&String::from_utf8(out).unwrap());
    }

    #[test]
    fn tls_paths_export_their_certificate_expiry() {
        let mut r = sample();
        r.paths[0].cert = Some(crate::probe::CertFacts {
            subject: "CN=db".into(),
            issuer: "CN=ca".into(),
            sans: vec![],
            not_after: "2030-01-01T00:00:00Z".into(),
            verified: true,
            verify_error: None,
        });
        let mut out = Vec::new();
        write(&r, &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        let lines: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with("portcall_tls_cert_not_after_seconds{"))
            .collect();
        assert_eq!(
            lines,
            [
                r#"portcall_tls_cert_not_after_seconds{plan="sample",from="web",to="db",port="3306",service="svc",expect="open",family="ipv4"} 1893456000"#
            ],
            "{text}"
        );
        let verified = |text: &str| -> Vec<String> {
            text.lines()
                .filter(|l| l.starts_with("portcall_tls_cert_verified{"))
                .map(str::to_string)
                .collect()
        };
        assert_eq!(
            verified(&text),
            [
                r#"portcall_tls_cert_verified{plan="sample",from="web",to="db",port="3306",service="svc",expect="open",family="ipv4"} 1"#
            ]
        );
        r.paths[0].cert.as_mut().unwrap().verified = false;
        let mut out = Vec::new();
        write(&r, &mut out).unwrap();
        assert_eq!(
            verified(&String::from_utf8(out).unwrap()),
            [
                r#"portcall_tls_cert_verified{plan="sample",from="web",to="db",port="3306",service="svc",expect="open",family="ipv4"} 0"#
            ]
        );
    }

    #[test]
    fn label_values_are_escaped() {
        let mut r = sample();
        r.paths[0].service = "a\"b\\c\nd".into();
        let mut out = Vec::new();
        write(&r, &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(text.contains(r#"service="a\"b\\c\nd""#), "{text}");
    }

    #[test]
    fn repeated_paths_are_exported_once() {
        let mut r = sample();
        let first = r.paths[0].clone();
        r.paths.push(first);
        let mut out = Vec::new();
        write(&r, &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        let n = text
            .lines()
            .filter(|l| {
                l.starts_with("portcall_path_ok{")
                    && l.contains("port=\"3306\"")
                    && l.contains("expect=\"open\"")
            })
            .count();
        assert_eq!(n, 1, "{text}");
    }
}
