//! A sweep's results as it keeps them ([`SweepResults`]): most targets of a
//! large sweep end the same plain way (a closed port: `refused`, its errno,
//! one attempt, no connection, no ICMP error), and such a result is kept
//! as a few numbers, its [`ProbeResult`] (with its detail text) built again
//! only when it is read or rendered. Any other result is kept whole. The
//! result built again is equal to the one the sweep produced, field for
//! field (checked in debug builds), so reports do not change.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use crate::probe::classify::errno_static_name;
use crate::probe::outcome::{Observed, ProbeResult};
use crate::probe::target::Target;

/// One target's result as a sweep keeps it.
pub(super) enum Stored {
    /// Answered with an errno that names itself, nothing more: the detail
    /// is that errno's name.
    Plain(Plain),
    /// Anything else, whole.
    Full(Box<ProbeResult>),
}

/// The numbers a plain result is made of.
pub(super) struct Plain {
    address: Option<SocketAddr>,
    latency: Duration,
    errno: i32,
    attempts: u32,
    observed: Observed,
}

impl Stored {
    /// Keeps `r` as compactly as it can be built again.
    pub(super) fn keep(r: ProbeResult) -> Stored {
        let plain = match r {
            ProbeResult {
                target: _,
                address,
                local_address: None,
                observed,
                ref detail,
                latency,
                connect_time: None,
                tls_time: None,
                attempts,
                cert: None,
                icmp: None,
                path_mtu: false,
                walk: None,
                shed: false,
                arrived: None,
                errno: Some(errno),
                silence: None,
                answered: None,
            } if errno_static_name(errno) == Some(detail.as_str()) => Plain {
                address,
                latency,
                errno,
                attempts,
                observed,
            },
            _ => return Stored::Full(Box::new(r)),
        };
        let stored = Stored::Plain(plain);
        debug_assert_eq!(stored.build(&r.target), r);
        stored
    }

    /// The result again, for `target` (the one it was kept for).
    pub(super) fn build(&self, target: &Target) -> ProbeResult {
        match self {
            Stored::Full(r) => (**r).clone(),
            Stored::Plain(p) => ProbeResult {
                target: target.clone(),
                address: p.address,
                local_address: None,
                observed: p.observed,
                detail: errno_static_name(p.errno)
                    .expect("only a named errno is kept plain")
                    .to_string(),
                latency: p.latency,
                connect_time: None,
                tls_time: None,
                attempts: p.attempts,
                cert: None,
                icmp: None,
                path_mtu: false,
                walk: None,
                shed: false,
                arrived: None,
                errno: Some(p.errno),
                silence: None,
                answered: None,
            },
        }
    }

    /// The result, given up whole.
    fn into_result(self, target: &Target) -> ProbeResult {
        match self {
            Stored::Full(r) => *r,
            plain @ Stored::Plain(_) => plain.build(target),
        }
    }

    /// The result kept whole; `None` for a plain one (never a `timeout`).
    pub(super) fn full(&self) -> Option<&ProbeResult> {
        match self {
            Stored::Full(r) => Some(r),
            Stored::Plain(_) => None,
        }
    }

    /// The result kept whole, to amend (a TTL walk); `None` for a plain one.
    pub(super) fn full_mut(&mut self) -> Option<&mut ProbeResult> {
        match self {
            Stored::Full(r) => Some(r),
            Stored::Plain(_) => None,
        }
    }
}

/// Every target's result of one sweep, in the order of its targets, each
/// built when it is read ([`SweepResults::iter`]), so that a sweep of
/// 65,535 ports holds a few dozen bytes for most of them rather than a
/// [`ProbeResult`] each.
pub struct SweepResults {
    targets: Arc<[Target]>,
    stored: Vec<Stored>,
}

impl SweepResults {
    pub(super) fn new(targets: Arc<[Target]>, stored: Vec<Stored>) -> SweepResults {
        debug_assert_eq!(targets.len(), stored.len());
        SweepResults { targets, stored }
    }

    /// How many targets (and results) there are.
    pub fn len(&self) -> usize {
        self.stored.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.stored.is_empty()
    }

    /// The result of target `i`.
    pub fn get(&self, i: usize) -> Option<ProbeResult> {
        Some(self.stored.get(i)?.build(&self.targets[i]))
    }

    /// The results in the order of the targets, each built as it comes.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = ProbeResult> + Clone + '_ {
        self.stored
            .iter()
            .zip(self.targets.iter())
            .map(|(s, t)| s.build(t))
    }

    /// Every target's outcome, without building its result.
    pub fn observed(&self) -> impl Iterator<Item = Observed> + '_ {
        self.stored.iter().map(|s| match s {
            Stored::Plain(p) => p.observed,
            Stored::Full(r) => r.observed,
        })
    }

    /// Every result, built at once.
    pub fn into_vec(self) -> Vec<ProbeResult> {
        let targets = self.targets;
        self.stored
            .into_iter()
            .zip(targets.iter())
            .map(|(s, t)| s.into_result(t))
            .collect()
    }
}

impl std::fmt::Debug for SweepResults {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, Ipv4Addr};

    use super::*;
    use crate::port::{Port, Protocol};
    use crate::probe::classify::errno_name;
    use crate::probe::errqueue::IcmpEvidence;
    use crate::probe::outcome::Silence;
    use crate::probe::target::Host;

    fn target() -> Target {
        Target::new(
            Host::Ip(IpAddr::V4(Ipv4Addr::LOCALHOST)),
            Port::new(7).unwrap(),
            Protocol::Tcp,
        )
    }

    fn refused() -> ProbeResult {
        ProbeResult {
            target: target(),
            address: Some("127.0.0.1:7".parse().unwrap()),
            local_address: None,
            observed: Observed::Refused,
            detail: errno_name(libc::ECONNREFUSED),
            latency: Duration::from_micros(37),
            connect_time: None,
            tls_time: None,
            attempts: 1,
            cert: None,
            icmp: None,
            path_mtu: false,
            walk: None,
            shed: false,
            arrived: None,
            errno: Some(libc::ECONNREFUSED),
            silence: None,
            answered: None,
        }
    }

    #[test]
    fn a_plain_refusal_is_kept_plain_and_built_again_equal() {
        let r = refused();
        let stored = Stored::keep(r.clone());
        assert!(matches!(stored, Stored::Plain(_)));
        assert_eq!(stored.build(&target()), r);
        assert_eq!(stored.into_result(&target()), r);
    }

    #[test]
    fn anything_more_than_the_errno_is_kept_whole() {
        let icmp = ProbeResult {
            icmp: Some(IcmpEvidence {
                kind: "port-unreachable".into(),
                code: 3,
                from: "198.18.0.1".into(),
            }),
            ..refused()
        };
        let other_detail = ProbeResult {
            detail: "ECONNREFUSED (connection refused) after a retry".into(),
            ..refused()
        };
        let unnamed = ProbeResult {
            errno: Some(9999),
            detail: errno_name(9999),
            ..refused()
        };
        let silent = ProbeResult {
            observed: Observed::Timeout,
            errno: None,
            silence: Some(Silence {
                waited_ms: 200,
                adaptive: false,
                possibly_rate_limited: true,
            }),
            ..refused()
        };
        for r in [icmp, other_detail, unnamed, silent] {
            let stored = Stored::keep(r.clone());
            assert!(matches!(stored, Stored::Full(_)), "{r:?}");
            assert_eq!(stored.build(&target()), r);
        }
    }

    #[test]
    fn sweep_results_read_in_target_order() {
        let targets: Arc<[Target]> = vec![target(), target()].into();
        let full = ProbeResult {
            observed: Observed::Open,
            errno: None,
            detail: String::new(),
            ..refused()
        };
        let results = SweepResults::new(
            targets,
            vec![Stored::keep(refused()), Stored::keep(full.clone())],
        );
        assert_eq!(results.len(), 2);
        assert_eq!(results.get(1), Some(full.clone()));
        assert_eq!(results.get(2), None);
        assert_eq!(
            results.iter().collect::<Vec<_>>(),
            vec![refused(), full.clone()]
        );
        assert_eq!(results.into_vec(), vec![refused(), full]);
    }
}
