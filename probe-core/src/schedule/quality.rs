//! Path quality in schedule mode: what each path's samples added up to
//! over the agent's life (samples sent, samples answered, and a histogram
//! of the answered ones' round trips), and its Prometheus families. The
//! counts are cumulative so that Prometheus computes loss and percentiles
//! over any window (`rate`, `histogram_quantile`) from a fixed number of
//! series per path.
//!
//! The source counts what it sent and what was answered; the target's
//! agent, where it samples too, counts what arrived (`super::arrivals`) and
//! exports it under the same path labels, so that Prometheus computes loss
//! per direction: forward `1 - arrived / sent`, return
//! `1 - answered / arrived` (joined `ignoring(instance, job)`). Where the
//! target does not count, there is no `arrived` series and only the round
//! trip's loss, `1 - answered / sent`, is known; an `arrived` is never
//! guessed.

use std::io::{self, Write};

use crate::report::prometheus::{PathLabels, family, path_sample};

/// The upper bounds of the round-trip histogram's buckets, in seconds
/// (plus `+Inf`): from a LAN's half millisecond to a slow WAN's 2.5 s.
pub const RTT_BUCKETS: [f64; 12] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];

/// [`RTT_BUCKETS`] in microseconds, the unit round trips are counted in,
/// so that a round trip on a bound falls in that bucket exactly.
const RTT_BUCKETS_US: [u64; 12] = [
    500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000, 1_000_000,
    2_500_000,
];

/// Series per sampled path: sent, answered, and the histogram's buckets
/// (one per bound and `+Inf`), `_sum` and `_count`.
pub const SERIES_PER_PATH: usize = 2 + RTT_BUCKETS.len() + 1 + 2;

/// A round-trip histogram, cumulative over the agent's life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RttHistogram {
    /// Round trips per bucket (not cumulative): `in_bucket[i]` counts those
    /// above bound `i - 1` and at most bound `i`; above the last bound they
    /// are only in `count`.
    in_bucket: [u64; RTT_BUCKETS.len()],
    /// Round trips observed.
    count: u64,
    /// Their sum, in microseconds.
    sum_us: u64,
}

impl RttHistogram {
    /// Takes one round trip, in microseconds.
    pub fn observe(&mut self, rtt_us: u64) {
        if let Some(i) = RTT_BUCKETS_US.iter().position(|&b| rtt_us <= b) {
            self.in_bucket[i] += 1;
        }
        self.count += 1;
        self.sum_us = self.sum_us.saturating_add(rtt_us);
    }

    /// The Prometheus bucket counts: round trips at most each bound.
    pub fn cumulative(&self) -> [u64; RTT_BUCKETS.len()] {
        let mut out = self.in_bucket;
        for i in 1..out.len() {
            out[i] += out[i - 1];
        }
        out
    }

    /// Round trips observed (the `+Inf` bucket and `_count`).
    pub fn count(&self) -> u64 {
        self.count
    }

    /// Their sum, in seconds.
    pub fn sum_seconds(&self) -> f64 {
        self.sum_us as f64 / 1e6
    }
}

/// What a path's samples added up to since the agent started sampling it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct QualityHistory {
    /// Samples that left this host.
    pub sent: u64,
    /// Samples answered: a completed TCP handshake.
    pub answered: u64,
    /// The answered samples' round trips.
    pub rtt: RttHistogram,
}

impl QualityHistory {
    /// Adds one round's samples: `sent` of them left, and `rtts_us` are the
    /// round trips of those answered.
    pub fn add(&mut self, sent: u32, rtts_us: &[u64]) {
        self.sent += u64::from(sent);
        self.answered += rtts_us.len() as u64;
        for &r in rtts_us {
            self.rtt.observe(r);
        }
    }
}

/// The family of the samples that arrived here, one series per incoming
/// path with a count; nothing at all without one.
pub(super) fn render_arrived(
    out: &mut impl Write,
    plan: &str,
    arrived: &[super::arrivals::Arrived],
) -> io::Result<()> {
    if arrived.is_empty() {
        return Ok(());
    }
    family(
        out,
        "portcall_path_samples_arrived_total",
        "Quality samples (SYNs) of the source's agent that arrived at this target after its own filters, counted by the target's agent since it started counting; with the source's sent and answered counters: forward loss 1 - arrived/sent, return loss 1 - answered/arrived.",
        "counter",
    )?;
    for a in arrived {
        let p = &a.path;
        let labels = PathLabels {
            plan,
            from: &p.from,
            to: &p.to,
            port: p.port.get(),
            service: &p.service,
            expect: p.expect,
            family: p.family,
            protocol: p.protocol,
        };
        let v = a.syns.to_string();
        path_sample(out, "portcall_path_samples_arrived_total", &labels, &[], &v)?;
    }
    Ok(())
}

/// The quality families of the sampled paths (each under its labels);
/// nothing at all when none is (a round without `--samples`, as before
/// them).
pub(super) fn render(
    out: &mut impl Write,
    sampled: &[(PathLabels<'_>, &QualityHistory)],
) -> io::Result<()> {
    if sampled.is_empty() {
        return Ok(());
    }
    family(
        out,
        "portcall_path_samples_sent_total",
        "Quality samples (connect-only TCP handshakes, --samples per round while the path's probe connects) sent on the path since the agent started.",
        "counter",
    )?;
    for (p, q) in sampled {
        let v = q.sent.to_string();
        path_sample(out, "portcall_path_samples_sent_total", p, &[], &v)?;
    }
    family(
        out,
        "portcall_path_samples_answered_total",
        "Quality samples answered (the handshake completed) since the agent started; 1 - answered/sent is round-trip loss, and with the target agent's portcall_path_samples_arrived_total the loss per direction.",
        "counter",
    )?;
    for (p, q) in sampled {
        let v = q.answered.to_string();
        path_sample(out, "portcall_path_samples_answered_total", p, &[], &v)?;
    }
    family(
        out,
        "portcall_path_rtt_seconds",
        "Round trips (SYN to SYN-ACK) of the path's answered quality samples since the agent started, in seconds.",
        "histogram",
    )?;
    for (p, q) in sampled {
        for (bound, n) in RTT_BUCKETS.iter().zip(q.rtt.cumulative()) {
            let le = bound.to_string();
            let v = n.to_string();
            path_sample(
                out,
                "portcall_path_rtt_seconds_bucket",
                p,
                &[("le", &le)],
                &v,
            )?;
        }
        let count = q.rtt.count().to_string();
        let inf = [("le", "+Inf")];
        path_sample(out, "portcall_path_rtt_seconds_bucket", p, &inf, &count)?;
        let sum = q.rtt.sum_seconds().to_string();
        path_sample(out, "portcall_path_rtt_seconds_sum", p, &[], &sum)?;
        path_sample(out, "portcall_path_rtt_seconds_count", p, &[], &count)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_fall_in_the_first_bucket_whose_bound_holds_them() {
        let mut h = RttHistogram::default();
        // On a bound, just above it, in the middle, beyond the last.
        for us in [500, 501, 1_000, 30_000, 2_500_000, 2_500_001, 9_000_000] {
            h.observe(us);
        }
        assert_eq!(h.cumulative(), [1, 3, 3, 3, 3, 3, 4, 4, 4, 4, 4, 5]);
        assert_eq!(h.count(), 7);
        assert_eq!(h.sum_seconds(), 14.032002);
        let bounds_us: Vec<u64> = RTT_BUCKETS
            .iter()
            .map(|b| (b * 1e6).round() as u64)
            .collect();
        assert_eq!(bounds_us, RTT_BUCKETS_US, "the two tables agree");
    }

    #[test]
    fn rounds_add_up() {
        let mut q = QualityHistory::default();
        q.add(10, &[400, 600, 700]);
        q.add(10, &[]);
        q.add(5, &[3_000; 5]);
        assert_eq!((q.sent, q.answered, q.rtt.count()), (25, 8, 8));
        assert_eq!(q.rtt.cumulative()[..4], [1, 3, 3, 8]);
        assert_eq!(SERIES_PER_PATH, 17);
    }

    fn labels(service: &str) -> PathLabels<'_> {
        PathLabels {
            plan: "lab",
            from: "app",
            to: "db",
            port: service[3..].parse().unwrap(),
            service,
            expect: crate::plan::Expect::Open,
            family: Some(crate::plan::Family::Ipv4),
            protocol: crate::port::Protocol::Tcp,
        }
    }

    fn rendered(sampled: &[(PathLabels<'_>, &QualityHistory)]) -> String {
        let mut out = Vec::new();
        render(&mut out, sampled).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn exposition_exact_text_of_a_sampled_path() {
        let mut q = QualityHistory::default();
        q.add(20, &[300, 450, 800, 1_200, 7_000, 30_000]);
        let text = rendered(&[(labels("svc3306"), &q)]);
        expect_test::expect![[r##"
            # HELP portcall_path_samples_sent_total Quality samples (connect-only TCP handshakes, --samples per round while the path's probe connects) sent on the path since the agent started.
            # TYPE portcall_path_samples_sent_total counter
            portcall_path_samples_sent_total{plan="lab",from="app",to="db",port="3306",service="svc3306",expect="open",family="ipv4"} 20
            # HELP portcall_path_samples_answered_total Quality samples answered (the handshake completed) since the agent started; 1 - answered/sent is round-trip loss, and with the target agent's portcall_path_samples_arrived_total the loss per direction.
            # TYPE portcall_path_samples_answered_total counter
            portcall_path_samples_answered_total{plan="lab",from="app",to="db",port="3306",service="svc3306",expect="open",family="ipv4"} 6
            # HELP portcall_path_rtt_seconds Round trips (SYN to SYN-ACK) of the path's answered quality samples since the agent started, in seconds.
            # TYPE portcall_path_rtt_seconds histogram
            portcall_path_rtt_seconds_bucket{plan="lab",from="app",to="db",port="3306",service="svc3306",expect="open",family="ipv4",le="0.0005"} 2
            portcall_path_rtt_seconds_bucket{plan="lab",from="app",to="db",port="3306",service="svc3306",expect="open",family="ipv4",le="0.001"} 3
            portcall_path_rtt_seconds_bucket{plan="lab",from="app",to="db",port="3306",service="svc3306",expect="open",family="ipv4",le="0.0025"} 4
            portcall_path_rtt_seconds_bucket{plan="lab",from="app",to="db",port="3306",service="svc3306",expect="open",family="ipv4",le="0.005"} 4
            portcall_path_rtt_seconds_bucket{plan="lab",from="app",to="db",port="3306",service="svc3306",expect="open",family="ipv4",le="0.01"} 5
            portcall_path_rtt_seconds_bucket{plan="lab",from="app",to="db",port="3306",service="svc3306",expect="open",family="ipv4",le="0.025"} 5
            portcall_path_rtt_seconds_bucket{plan="lab",from="app",to="db",port="3306",service="svc3306",expect="open",family="ipv4",le="0.05"} 6
            portcall_path_rtt_seconds_bucket{plan="lab",from="app",to="db",port="3306",service="svc3306",expect="open",family="ipv4",le="0.1"} 6
            portcall_path_rtt_seconds_bucket{plan="lab",from="app",to="db",port="3306",service="svc3306",expect="open",family="ipv4",le="0.25"} 6
            portcall_path_rtt_seconds_bucket{plan="lab",from="app",to="db",port="3306",service="svc3306",expect="open",family="ipv4",le="0.5"} 6
            portcall_path_rtt_seconds_bucket{plan="lab",from="app",to="db",port="3306",service="svc3306",expect="open",family="ipv4",le="1"} 6
            portcall_path_rtt_seconds_bucket{plan="lab",from="app",to="db",port="3306",service="svc3306",expect="open",family="ipv4",le="2.5"} 6
            portcall_path_rtt_seconds_bucket{plan="lab",from="app",to="db",port="3306",service="svc3306",expect="open",family="ipv4",le="+Inf"} 6
            portcall_path_rtt_seconds_sum{plan="lab",from="app",to="db",port="3306",service="svc3306",expect="open",family="ipv4"} 0.03975
            portcall_path_rtt_seconds_count{plan="lab",from="app",to="db",port="3306",service="svc3306",expect="open",family="ipv4"} 6
        "##]]
        .assert_eq(&text);
    }

    #[test]
    fn no_sampled_path_no_family() {
        assert_eq!(rendered(&[]), "");
    }
}
