//! Path quality joined into a path's report (see [`crate::report::quality`]):
//! what the target counted of the path's samples, and the thresholds of
//! its flows against the figures.

use super::super::evidence::RoundEvidence;
use super::super::quality::{Limits, Quality};
use super::super::{PathReport, Verdict};
use crate::control::PathProbe;
use crate::plan::{Expect, PathView, Plan};
use crate::port::Protocol;

/// What the target's canary counted of `path`'s samples: a UDP canary
/// that counts samples, its count under the probe's nonce (0 when it never
/// saw the nonce); a TCP or TLS path (sampled alike), the marked SYNs the
/// target's trace table counted; `None` for a target that cannot count.
fn arrived(round: &RoundEvidence, path: &PathView<'_>, probe: &PathProbe) -> Option<u32> {
    let dst = round.agents.get(path.to)?;
    if dst.evidence_error.is_some() {
        return None;
    }
    if path.protocol.is_tcp() {
        // The SYNs its trace table counted from the probe's source.
        let source = probe.source?.ip();
        let port = path.port.get();
        return dst.syn_samples.as_ref().map(|counts| {
            counts
                .iter()
                .find(|c| c.source == source && c.port == port)
                .map_or(0, |c| c.syns)
        });
    }
    if path.protocol != Protocol::Udp {
        return None;
    }
    let nonce = probe.nonce.as_ref()?;
    let port = path.port.get();
    let canary = dst
        .canaries
        .iter()
        .find(|c| c.port == port && c.is_udp() && c.counts_samples)?;
    Some(
        canary
            .seen
            .iter()
            .find(|s| s.nonce == *nonce)
            .map_or(0, |s| s.samples),
    )
}

/// Puts `path`'s quality on `r` where the round sampled it (`null` where it
/// sampled nothing: the path did not open), and makes an `ok` open path
/// over its flows' thresholds a violation with the figures in its detail.
pub(super) fn attach(
    plan: &Plan,
    round: &RoundEvidence,
    path: &PathView<'_>,
    probe: Option<&PathProbe>,
    r: &mut PathReport,
) {
    let Some(tally) = probe.and_then(|p| p.quality.as_deref()) else {
        return;
    };
    if tally.sent == 0 || tally.samples <= 1 {
        r.quality = Some(None);
        return;
    }
    let counted = probe.and_then(|p| arrived(round, path, p));
    let q = Quality::of(tally, counted);
    if let (Some(counted), None) = (counted, q.arrived) {
        tracing::warn!(
            from = path.from,
            to = path.to,
            port = path.port.get(),
            protocol = %path.protocol,
            counted,
            sent = tally.sent,
            answered = tally.answered,
            "the target's count of the samples disagrees with the source's (it must lie between answered and sent): loss per direction is unknown"
        );
    }
    let breaches = q.breaches(Limits::of(plan, path));
    if r.verdict == Verdict::Ok && path.expect == Expect::Open && !breaches.is_empty() {
        r.verdict = Verdict::Violation;
        let figures = breaches.join("; ");
        r.detail = if r.detail.is_empty() {
            figures
        } else {
            format!("{}; {figures}", r.detail)
        };
    }
    r.quality = Some(Some(q));
}
