//! `[defaults]`: the settings every round uses unless told otherwise,
//! validated with each bad value located, and the bounds they must keep.

use toml::Spanned;

use super::cx::Cx;
use super::diag::Problem;
use super::raw::RawDefaults;
use crate::port::Port;

/// `[defaults]`, filled in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Defaults {
    /// Per-attempt timeout, in milliseconds.
    pub timeout_ms: u64,
    /// Extra attempts for silent (timed-out) paths.
    pub retries: u32,
    /// Where agents serve their control endpoint.
    pub control_port: Port,
    /// Derive each connect deadline from measured round trips, with
    /// `timeout_ms` as the upper bound (`adaptive = false`: every attempt
    /// waits `timeout_ms`).
    pub adaptive: bool,
    /// Quality samples per path (`[defaults] samples`; 1: none beyond the
    /// probe).
    pub samples: u32,
}

impl Default for Defaults {
    fn default() -> Self {
        Defaults {
            timeout_ms: 1000,
            retries: 1,
            control_port: Port::new(7400).expect("7400 is a port"),
            adaptive: true,
            samples: 1,
        }
    }
}

/// The most quality samples a round takes per path (`[defaults] samples`,
/// `check --samples`).
pub const MAX_SAMPLES: u32 = 10_000;

/// The default cap on the paths a plan may expand into (`[defaults]
/// max_paths`): far above real deployments (a 100-host full mesh over ten
/// ports is 99,000 paths), far below what exhausts memory.
pub const DEFAULT_MAX_PATHS: u64 = 1_000_000;

/// The highest `max_paths` a plan may set.
pub const MAX_PATHS_CEILING: u64 = 100_000_000;

/// `[defaults] max_paths` when valid (a bad one is reported by
/// `Cx::defaults`), else [`DEFAULT_MAX_PATHS`].
pub(super) fn max_paths(raw: Option<&Spanned<RawDefaults>>) -> u64 {
    raw.and_then(|d| d.get_ref().max_paths.as_ref())
        .and_then(|m| u64::try_from(*m.get_ref()).ok())
        .filter(|m| (1..=MAX_PATHS_CEILING).contains(m))
        .unwrap_or(DEFAULT_MAX_PATHS)
}

/// Whether `c` can be sent as an SNMP community: 1 to 255 characters, none
/// a control character (shared with `probe --snmp-community`).
pub fn check_snmp_community(c: &str) -> Result<(), &'static str> {
    if c.is_empty() || c.len() > 255 {
        return Err("expected 1 to 255 characters");
    }
    if c.chars().any(char::is_control) {
        return Err("a community must not contain control characters");
    }
    Ok(())
}

impl Cx<'_> {
    /// `[defaults] snmp_community`, when it is one an SNMP message can
    /// carry: 1 to 255 printable characters.
    pub(super) fn snmp_community(&mut self, raw: Option<&Spanned<RawDefaults>>) -> Option<String> {
        let c = raw?.get_ref().snmp_community.as_ref()?;
        match check_snmp_community(c.get_ref()) {
            Ok(()) => Some(c.get_ref().clone()),
            Err(why) => {
                self.push(
                    c.span(),
                    Problem::BadDefaultText {
                        key: "snmp_community",
                        value: c.get_ref().clone(),
                        why,
                    },
                );
                None
            }
        }
    }

    pub(super) fn defaults(&mut self, raw: Option<&Spanned<RawDefaults>>) -> Defaults {
        let mut d = Defaults::default();
        let Some(raw) = raw else { return d };
        let raw = raw.get_ref();
        if let Some(t) = &raw.timeout_ms {
            match u64::try_from(*t.get_ref()) {
                Ok(v) if (1..=600_000).contains(&v) => d.timeout_ms = v,
                _ => self.push(
                    t.span(),
                    Problem::BadDefault {
                        key: "timeout_ms",
                        value: *t.get_ref(),
                        expected: "1..=600000",
                    },
                ),
            }
        }
        if let Some(r) = &raw.retries {
            match u32::try_from(*r.get_ref()) {
                Ok(v) if v <= 20 => d.retries = v,
                _ => self.push(
                    r.span(),
                    Problem::BadDefault {
                        key: "retries",
                        value: *r.get_ref(),
                        expected: "0..=20",
                    },
                ),
            }
        }
        if let Some(n) = &raw.samples {
            match u32::try_from(*n.get_ref()) {
                Ok(v) if (1..=MAX_SAMPLES).contains(&v) => d.samples = v,
                _ => self.push(
                    n.span(),
                    Problem::BadDefault {
                        key: "samples",
                        value: *n.get_ref(),
                        expected: "1..=10000",
                    },
                ),
            }
        }
        if let Some(a) = &raw.adaptive {
            d.adaptive = *a.get_ref();
        }
        if let Some(m) = &raw.max_paths {
            // Checked in `flows::expand`, before any path is allocated.
            if !(1..=MAX_PATHS_CEILING as i64).contains(m.get_ref()) {
                self.push(
                    m.span(),
                    Problem::BadDefault {
                        key: "max_paths",
                        value: *m.get_ref(),
                        expected: "1..=100000000",
                    },
                );
            }
        }
        if let Some(c) = &raw.control_port {
            match Port::from_i64(*c.get_ref()) {
                Ok(p) => d.control_port = p,
                Err(error) => self.push(
                    c.span(),
                    Problem::BadPort {
                        what: "defaults.control_port".into(),
                        error,
                    },
                ),
            }
        }
        d
    }
}
