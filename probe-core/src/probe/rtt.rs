//! Round-trip estimates per target address, so that a silent port on a
//! host whose other ports answer in a millisecond is given up after a
//! time that fits that host instead of the plan's whole `timeout_ms`.
//!
//! The rule is nmap's (`--min-rtt-timeout`, `--max-rtt-timeout`,
//! `--initial-rtt-timeout`) on RFC 6298's estimator: the smoothed round
//! trip plus four times its variation, never below the longest round trip
//! seen for that address times [`SAFETY`], never below the floor
//! (`min_rtt_timeout`, 100 ms, raised by the engine to [`SAFETY`] times the
//! longest round trip its sweep saw to any address) and never above the
//! ceiling (`timeout_ms`).
//! Before the first sample the timeout is the ceiling. A sample is any
//! answer that comes from the target's own stack: the SYN-ACK of an open
//! port, the reset of a closed one.

use std::time::Duration;

/// The timeout never falls below the longest round trip seen, times this:
/// a slow-but-open path is never cut short by a few fast samples.
pub const SAFETY: u32 = 3;

/// The smoothed round trip of one address (RFC 6298, section 2).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RttEstimate {
    srtt: Option<Duration>,
    rttvar: Duration,
    max_seen: Duration,
    samples: u32,
}

impl RttEstimate {
    /// Takes one measured round trip.
    pub fn sample(&mut self, rtt: Duration) {
        self.samples = self.samples.saturating_add(1);
        self.max_seen = self.max_seen.max(rtt);
        match self.srtt {
            None => {
                self.srtt = Some(rtt);
                self.rttvar = rtt / 2;
            }
            Some(srtt) => {
                let delta = srtt.abs_diff(rtt);
                self.rttvar = (self.rttvar * 3 + delta) / 4;
                self.srtt = Some((srtt * 7 + rtt) / 8);
            }
        }
    }

    /// The smoothed round trip, once there is a sample.
    pub fn srtt(&self) -> Option<Duration> {
        self.srtt
    }

    /// The longest round trip seen.
    pub fn max_seen(&self) -> Duration {
        self.max_seen
    }

    /// How many round trips were measured.
    pub fn samples(&self) -> u32 {
        self.samples
    }

    /// How long to wait for an answer: `ceiling` before any sample, then
    /// `srtt + 4 * rttvar`, at least [`SAFETY`] times the longest round
    /// trip seen, within `floor..=ceiling` (a floor above the ceiling
    /// gives the ceiling).
    pub fn timeout(&self, floor: Duration, ceiling: Duration) -> Duration {
        let Some(srtt) = self.srtt else {
            return ceiling;
        };
        let rto = srtt
            .saturating_add(self.rttvar.saturating_mul(4))
            .max(self.max_seen.saturating_mul(SAFETY));
        rto.max(floor).min(ceiling)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FLOOR: Duration = Duration::from_millis(100);
    const CEILING: Duration = Duration::from_millis(3000);

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn without_a_sample_the_timeout_is_the_ceiling() {
        let e = RttEstimate::default();
        assert_eq!(e.timeout(FLOOR, CEILING), CEILING);
        assert_eq!(e.srtt(), None);
    }

    #[test]
    fn a_fast_host_gets_the_floor() {
        let mut e = RttEstimate::default();
        for _ in 0..20 {
            e.sample(Duration::from_micros(300));
        }
        assert_eq!(e.timeout(FLOOR, CEILING), FLOOR);
        assert_eq!(e.samples(), 20);
    }

    #[test]
    fn the_first_sample_sets_srtt_and_half_of_it_as_variation() {
        let mut e = RttEstimate::default();
        e.sample(ms(200));
        assert_eq!(e.srtt(), Some(ms(200)));
        // 200 + 4 * 100 = 600, above 3 * 200.
        assert_eq!(e.timeout(FLOOR, CEILING), ms(600));
    }

    #[test]
    fn smoothing_follows_rfc_6298() {
        let mut e = RttEstimate::default();
        e.sample(ms(80));
        e.sample(ms(160));
        // rttvar = 3/4 * 40 + 1/4 * |80 - 160| = 50; srtt = 7/8 * 80 + 1/8 * 160 = 90.
        assert_eq!(e.srtt(), Some(ms(90)));
        // 90 + 4 * 50 = 290 < 3 * 160 = 480: the longest seen rules.
        assert_eq!(e.timeout(FLOOR, CEILING), ms(480));
    }

    #[test]
    fn never_below_the_longest_round_trip_seen_times_the_safety_factor() {
        let mut e = RttEstimate::default();
        // Jittery samples of a 300 +- 100 ms path, then a run of fast ones
        // that pull srtt and rttvar down.
        for rtt in [300, 390, 210, 400, 250] {
            e.sample(ms(rtt));
        }
        for _ in 0..50 {
            e.sample(ms(200));
        }
        assert!(e.srtt().unwrap() < ms(210), "{e:?}");
        assert_eq!(e.timeout(FLOOR, ms(60_000)), ms(1200));
        // The plan's timeout stays the upper bound.
        assert_eq!(e.timeout(FLOOR, ms(1000)), ms(1000));
    }

    #[test]
    fn variation_widens_the_timeout() {
        let mut steady = RttEstimate::default();
        let mut jittery = RttEstimate::default();
        for i in 0..40u64 {
            steady.sample(ms(50));
            jittery.sample(ms(if i % 2 == 0 { 20 } else { 80 }));
        }
        let s = steady.timeout(FLOOR, ms(10_000));
        let j = jittery.timeout(FLOOR, ms(10_000));
        assert_eq!(s, ms(150));
        assert!(j >= ms(240) && j > s, "{j:?}");
    }

    #[test]
    fn a_floor_above_the_ceiling_gives_the_ceiling() {
        let mut e = RttEstimate::default();
        e.sample(ms(1));
        assert_eq!(e.timeout(FLOOR, ms(50)), ms(50));
    }
}
