//! Path quality beside the verdict (`check --samples N`): the source's
//! count of its samples (sent, answered, round trips) joined with what the
//! target's canary counted (arrived), into loss per direction, round-trip
//! order statistics and jitter; a flow's `max_loss_pct` / `max_rtt_ms`
//! turn a path over them into a violation with the figures in its detail.
//!
//! - forward loss = 1 − arrived/sent, return loss = 1 − answered/arrived,
//!   only where the target counted (a UDP canary; a TCP target's trace
//!   table, counting the samples' SYNs); elsewhere both are `null` and
//!   `sent`/`answered` say the round-trip loss. Counts that disagree with
//!   themselves (more arrived than sent, more answered than arrived) are
//!   `null` too, never guessed.

use serde::{Deserialize, Serialize};

use crate::plan::{PathView, Plan};
use crate::probe::samples::SampleTally;

/// A path's quality in the report (`quality` in `portcall.report/v1`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Quality {
    /// Samples asked for.
    pub samples: u32,
    /// Samples sent.
    pub sent: u32,
    /// Samples the target counted; `null` where it cannot count or its
    /// count disagrees with the source's.
    pub arrived: Option<u32>,
    /// Samples answered back to the source.
    pub answered: u32,
    /// Loss from source to target, in percent.
    pub loss_forward_pct: Option<f64>,
    /// Loss from target back to source, in percent.
    pub loss_return_pct: Option<f64>,
    /// Round trips of the answered samples, in milliseconds.
    pub rtt_ms: Option<RttMs>,
    /// Mean absolute difference of consecutive round trips, in
    /// milliseconds.
    pub jitter_ms: Option<f64>,
}

/// Round-trip order statistics in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct RttMs {
    /// The shortest.
    pub min: f64,
    /// The median.
    pub p50: f64,
    /// The 95th percentile.
    pub p95: f64,
    /// The longest.
    pub max: f64,
}

/// `part` of `whole` lost, in percent to two decimals; `None` for an
/// empty whole or a part larger than it.
pub fn loss_pct(whole: u32, part: u32) -> Option<f64> {
    if whole == 0 || part > whole {
        return None;
    }
    let lost = f64::from(whole - part) * 100.0 / f64::from(whole);
    Some((lost * 100.0).round() / 100.0)
}

fn ms(us: u64) -> f64 {
    (us as f64 / 10.0).round() / 100.0
}

impl Quality {
    /// The quality of `tally` with the target's count `arrived` (where it
    /// counts).
    pub fn of(tally: &SampleTally, arrived: Option<u32>) -> Quality {
        // A count that disagrees with the other end's is not evidence.
        let arrived = arrived.filter(|&a| a <= tally.sent && a >= tally.answered);
        Quality {
            samples: tally.samples,
            sent: tally.sent,
            arrived,
            answered: tally.answered,
            loss_forward_pct: arrived.and_then(|a| loss_pct(tally.sent, a)),
            loss_return_pct: arrived.and_then(|a| loss_pct(a, tally.answered)),
            rtt_ms: tally.rtt_us.map(|r| RttMs {
                min: ms(r.min),
                p50: ms(r.p50),
                p95: ms(r.p95),
                max: ms(r.max),
            }),
            jitter_ms: tally.jitter_us.map(ms),
        }
    }

    /// Loss both ways (answered of sent), in percent.
    pub fn loss_round_trip_pct(&self) -> Option<f64> {
        loss_pct(self.sent, self.answered)
    }

    /// Each figure over `limits`, in words ("forward loss 6.0% > 2%").
    pub fn breaches(&self, limits: Limits) -> Vec<String> {
        let mut out = Vec::new();
        if let Some(max) = limits.max_loss_pct {
            let ways = [
                ("forward loss", self.loss_forward_pct),
                ("return loss", self.loss_return_pct),
            ];
            let mut over = |what: &str, v: Option<f64>| {
                if let Some(v) = v.filter(|&v| v > max) {
                    out.push(format!("{what} {v:.1}% > {max}%"));
                }
            };
            if ways.iter().all(|(_, v)| v.is_some()) {
                ways.into_iter().for_each(|(w, v)| over(w, v));
            } else {
                over("round-trip loss", self.loss_round_trip_pct());
            }
        }
        if let Some(max) = limits.max_rtt_ms {
            match self.rtt_ms {
                Some(r) if r.p50 > max => {
                    out.push(format!("median round trip {:.1} ms > {max} ms", r.p50));
                }
                Some(_) => {}
                None => out.push(format!("no sample answered (max_rtt_ms {max})")),
            }
        }
        out
    }
}

/// A path's quality thresholds: the strictest of its flows'.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Limits {
    /// Most loss allowed in either direction, in percent.
    pub max_loss_pct: Option<f64>,
    /// Longest median round trip allowed, in milliseconds.
    pub max_rtt_ms: Option<f64>,
}

impl Limits {
    /// The strictest thresholds of the flows behind `path`.
    pub fn of(plan: &Plan, path: &PathView<'_>) -> Limits {
        let min = |a: Option<f64>, b: Option<f64>| match (a, b) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        path.flows
            .iter()
            .filter_map(|&f| f.checked_sub(1).and_then(|i| plan.flows.get(i)))
            .fold(Limits::default(), |l, f| Limits {
                max_loss_pct: min(l.max_loss_pct, f.max_loss_pct),
                max_rtt_ms: min(l.max_rtt_ms, f.max_rtt_ms),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::probe::samples::SampleTally;

    fn tally(sent: u32, answered: u32) -> SampleTally {
        let rtts: Vec<u64> = (0..answered)
            .map(|k| 20_000 + u64::from(k % 3) * 1000)
            .collect();
        SampleTally::of(1000, sent, &rtts)
    }

    #[test]
    fn loss_is_counted_per_direction_from_both_ends() {
        // 1000 sent, 950 arrived, 931 answered: 5% forward, 2% return.
        let q = Quality::of(&tally(1000, 931), Some(950));
        assert_eq!(q.loss_forward_pct, Some(5.0));
        assert_eq!(q.loss_return_pct, Some(2.0));
        assert_eq!(q.loss_round_trip_pct(), Some(6.9));
        let r = q.rtt_ms.unwrap();
        assert_eq!((r.min, r.p50, r.max), (20.0, 21.0, 22.0));
        assert_eq!(loss_pct(3, 2), Some(33.33));
        assert_eq!(loss_pct(0, 0), None);
    }

    #[test]
    fn counts_that_disagree_or_are_missing_give_no_direction() {
        for arrived in [None, Some(1001), Some(900)] {
            let q = Quality::of(&tally(1000, 931), arrived);
            assert_eq!(q.arrived, None, "{arrived:?}");
            assert_eq!((q.loss_forward_pct, q.loss_return_pct), (None, None));
        }
        // Nothing arrived: all lost forward, the return unknown.
        let q = Quality::of(&tally(10, 0), Some(0));
        assert_eq!((q.loss_forward_pct, q.loss_return_pct), (Some(100.0), None));
    }

    #[test]
    fn thresholds_name_the_figures_over_them() {
        let q = Quality::of(&tally(1000, 931), Some(940));
        let limits = Limits {
            max_loss_pct: Some(2.0),
            max_rtt_ms: Some(20.5),
        };
        assert_eq!(
            q.breaches(limits),
            vec![
                "forward loss 6.0% > 2%".to_string(),
                "median round trip 21.0 ms > 20.5 ms".to_string()
            ]
        );
        let lenient = Limits {
            max_loss_pct: Some(10.0),
            max_rtt_ms: Some(50.0),
        };
        assert!(q.breaches(lenient).is_empty());
        // A target that cannot count: the round trip's loss is judged.
        let tcp = Quality::of(&tally(100, 97), None);
        assert_eq!(
            tcp.breaches(limits)[0],
            "round-trip loss 3.0% > 2%".to_string()
        );
        assert!(Quality::of(&tally(100, 0), None).breaches(limits)[1].contains("no sample"));
    }
}
