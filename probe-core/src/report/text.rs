//! The words every renderer shares: how a path is named (`path_label`,
//! [`PortLabels`]), why it got its verdict (`why`), how many datagrams of
//! a UDP path arrived ([`arrival`]), and report timestamps as numbers
//! ([`unix_seconds`]). One place, so the table, JUnit, Markdown, HTML,
//! diff and suggest say the same; the renderers import this, never each
//! other or the format dispatcher.

use super::{PathReport, Report, Verdict};

/// `from -> to:port/protocol (service)`: how every renderer names a path.
pub(crate) fn path_label(p: &PathReport) -> String {
    format!(
        "{} -> {}:{}/{} ({})",
        p.from,
        p.to,
        p.port,
        p.protocol.as_str(),
        p.service
    )
}

/// Why a path got its verdict, in words: a violation says what was wanted,
/// and a path with a [`super::Blame`] says where it breaks in one sentence
/// (the JSON `detail` keeps the whole evidence).
pub(crate) fn why(p: &PathReport) -> String {
    let said = match &p.blame {
        // A UDP path's datagram count is part of the evidence (the detail
        // already says it).
        Some(b) => match arrival(p) {
            Some(a) => format!("{}; {a}", b.sentence(&p.to, p.icmp.as_ref())),
            None => b.sentence(&p.to, p.icmp.as_ref()),
        },
        None => p.detail.clone(),
    };
    // Where the service listens instead is the finding itself; the blame
    // sentence alone would only say the port refused.
    let said = if p.listening_elsewhere.is_empty() || p.blame.is_none() {
        said
    } else {
        format!(
            "{said}; {}",
            crate::control::listening_words(&p.listening_elsewhere)
        )
    };
    let said = match (p.service_banner.as_deref(), p.service_answer.as_ref()) {
        // The typed answer says more than the banner, and wrong-service
        // details already name what answered.
        (_, Some(a)) if p.observed != Some(crate::probe::Observed::WrongService) => format!(
            "{said}; proof {}: {}",
            p.proof.map_or("l4", crate::probe::service::Proof::as_str),
            banner_text(&a.summary())
        ),
        (Some(banner), None) => format!("{said}; the service said: {}", banner_text(banner)),
        _ => said,
    };
    // Rule text comes from the host's ruleset (its comments too): it never
    // drives the terminal.
    let said = crate::plan::escape_controls(&said).into_owned();
    match p.verdict {
        Verdict::Violation => format!("must be {}, but {said}", p.expect),
        _ => said,
    }
}

/// Longest service banner shown in a report's text, in characters.
const BANNER_CHARS: usize = 80;

/// A service's banner for people: control characters escaped (it is what
/// a remote service chose to send), cut at [`BANNER_CHARS`] with `…`. Each
/// format escapes the result for its own markup.
pub(crate) fn banner_text(banner: &str) -> String {
    let mut out = String::new();
    for (i, c) in banner.trim().chars().enumerate() {
        if i == BANNER_CHARS {
            out.push('…');
            break;
        }
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

/// Seconds since the Unix epoch of a report timestamp (`rfc3339`'s
/// `YYYY-MM-DDTHH:MM:SS[.fff]Z`); `None` for anything else, since reports
/// read back from JSON may come from elsewhere.
pub fn unix_seconds(s: &str) -> Option<f64> {
    let s = s.strip_suffix('Z')?;
    let (date, time) = s.split_once('T')?;
    let mut d = date.splitn(3, '-');
    let year: i64 = d.next()?.parse().ok()?;
    let month: i64 = d.next()?.parse().ok()?;
    let day: i64 = d.next()?.parse().ok()?;
    let (hms, frac) = match time.split_once('.') {
        Some((hms, frac)) => (hms, frac),
        None => (time, ""),
    };
    let mut t = hms.splitn(3, ':');
    let hour: i64 = t.next()?.parse().ok()?;
    let min: i64 = t.next()?.parse().ok()?;
    let sec: i64 = t.next()?.parse().ok()?;
    if !(1..=12).contains(&month)
        || !(1..=31).contains(&day)
        || hour > 23
        || min > 59
        || sec > 60
        || !frac.bytes().all(|b| b.is_ascii_digit())
    {
        return None;
    }
    let fraction = if frac.is_empty() {
        0.0
    } else {
        format!("0.{frac}").parse::<f64>().ok()?
    };
    let days = crate::time::days_from_civil(year, month, day);
    Some((days * 86_400 + hour * 3600 + min * 60 + sec) as f64 + fraction)
}

/// "2 of 3 datagrams arrived", for renderers; `None` when the canary's
/// count is not known (TCP, no canary).
pub fn arrival(r: &PathReport) -> Option<String> {
    let arrived = r.arrived?;
    let sent = r.attempts.max(arrived);
    Some(format!(
        "{arrived} of {sent} datagram{} arrived",
        if sent == 1 { "" } else { "s" }
    ))
}

/// A path's quality figures in a few words, as the table and Markdown show
/// them: `loss fwd 5.4% ret 0.0%, rtt p50 20.4 p95 25.1 ms, jitter 3.8 ms`
/// (`loss 2.0% round trip` where the target could not count); `not
/// sampled` on a path the round did not sample; `None` when the round took
/// no samples.
pub fn quality(r: &PathReport) -> Option<String> {
    let Some(q) = r.quality.as_ref()? else {
        return Some("not sampled".to_string());
    };
    let loss = match (q.loss_forward_pct, q.loss_return_pct) {
        (Some(f), Some(b)) => format!("loss fwd {f:.1}% ret {b:.1}%"),
        (Some(f), None) => format!("loss fwd {f:.1}%"),
        _ => q
            .loss_round_trip_pct()
            .map_or_else(String::new, |l| format!("loss {l:.1}% round trip")),
    };
    let rtt = q.rtt_ms.map_or_else(
        || "no answer".to_string(),
        |t| format!("rtt p50 {:.1} p95 {:.1} ms", t.p50, t.p95),
    );
    let mut out = format!("{loss}, {rtt}");
    if let Some(j) = q.jitter_ms {
        out.push_str(&format!(", jitter {j:.1} ms"));
    }
    Some(out)
}

/// Port labels for renderers: `9443/tls (https-servlet)`, or with the role
/// (`9443/tls (https-servlet, wso2-apim-publisher)`) where two roles of the
/// target host define a port of that name in the report.
#[derive(Debug, Default)]
pub struct PortLabels {
    ambiguous: std::collections::BTreeSet<(String, String)>,
}

impl PortLabels {
    /// Finds the port names that need their role to be told apart.
    pub fn new(report: &Report) -> PortLabels {
        let mut roles: std::collections::BTreeMap<(&str, &str), std::collections::BTreeSet<&str>> =
            std::collections::BTreeMap::new();
        for p in &report.paths {
            if let Some(r) = &p.role {
                roles
                    .entry((p.to.as_str(), p.service.as_str()))
                    .or_default()
                    .insert(r.as_str());
            }
        }
        PortLabels {
            ambiguous: roles
                .into_iter()
                .filter(|(_, r)| r.len() > 1)
                .map(|((to, s), _)| (to.to_owned(), s.to_owned()))
                .collect(),
        }
    }

    /// The service in words: its name, plus the role where that is needed.
    pub fn service(&self, p: &PathReport) -> String {
        match &p.role {
            Some(r) if self.ambiguous.contains(&(p.to.clone(), p.service.clone())) => {
                format!("{}, {r}", p.service)
            }
            _ => p.service.clone(),
        }
    }

    /// `PORT/PROTOCOL (SERVICE)`.
    pub fn port(&self, p: &PathReport) -> String {
        format!("{}/{} ({})", p.port, p.protocol.as_str(), self.service(p))
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use super::*;

    /// Rule text from a host's ruleset (a comment with a terminal escape
    /// and a right-to-left override) is shown escaped in the table.
    #[test]
    fn a_rules_control_characters_never_reach_the_terminal() {
        use crate::report::{RenderOptions, ReportFormat, render};
        let mut r = crate::report::table::tests::sample();
        for p in &mut r.paths {
            p.blame = None;
            p.detail = "dropped by tcp dport 3306 comment \"\u{1b}[2J\u{202e}nepo\" drop".into();
        }
        let mut w = Vec::new();
        render(&r, ReportFormat::Table, RenderOptions::default(), &mut w).unwrap();
        let table = String::from_utf8(w).unwrap();
        assert!(table.contains("\\u{1b}[2J\\u{202e}nepo"), "{table}");
        assert!(!table.contains('\u{202e}') && !table.contains("\u{1b}[2J"));
    }

    /// A live MySQL path whose greeting is hostile markup, in every
    /// format that shows a path's reason.
    #[test]
    fn service_banner_is_shown_escaped_in_table_html_and_markdown() {
        use crate::report::{RenderOptions, ReportFormat, render};
        let mut r = crate::report::table::tests::sample();
        let banner = format!(
            "MySQL 10.11.6-MariaDB <b>|`x`\u{1b}[31m {}",
            "y".repeat(100)
        );
        r.paths[0].service_banner = Some(banner);
        let out = |format| {
            let mut w = Vec::new();
            render(&r, format, RenderOptions::default(), &mut w).unwrap();
            String::from_utf8(w).unwrap()
        };
        let cut = format!("{}…", "y".repeat(44));
        let table = out(ReportFormat::Table);
        assert!(
            table.contains("the service said: MySQL 10.11.6-MariaDB <b>|`x`\\u{1b}[31m"),
            "{table}"
        );
        assert!(table.contains(&cut) && !table.contains('\u{1b}'), "{table}");
        let html = out(ReportFormat::Html);
        assert!(
            html.contains("the service said: MySQL 10.11.6-MariaDB &lt;b&gt;|"),
            "{html}"
        );
        assert!(!html.contains("<b>"), "unescaped banner in HTML");
        let markdown = out(ReportFormat::Markdown);
        assert!(
            markdown.contains("the service said: MySQL 10.11.6-MariaDB"),
            "{markdown}"
        );
        assert!(
            markdown.contains("\\|"),
            "the banner's | is escaped: {markdown}"
        );
    }

    #[test]
    fn report_timestamps_parse_back_to_the_instant() {
        for ms in [0u64, 951_782_400_123, 1_735_689_600_000, 4_102_444_799_999] {
            let t = UNIX_EPOCH + Duration::from_millis(ms);
            let back = unix_seconds(&super::super::rfc3339(t)).unwrap();
            assert!((back - ms as f64 / 1000.0).abs() < 1e-6, "{ms}: {back}");
        }
        assert_eq!(unix_seconds("2025-01-01T00:00:00Z"), Some(1_735_689_600.0));
        for bad in [
            "",
            "2025-01-01",
            "2025-13-01T00:00:00Z",
            "2025-01-01T00:00:00+01:00",
        ] {
            assert_eq!(unix_seconds(bad), None, "{bad}");
        }
    }
}
