//! The order a sweep starts its targets in: one target of each destination
//! address in turn, beginning at an offset the caller gives (an agent
//! derives it from its host), so that the sources of one round do not all
//! start on the same host, and no source sends its first wave to one host
//! alone. Each address's own targets (its ports) start at the same offset
//! too, so the sources' sweeps do not converge on one port of every host
//! either: in a mesh of N sources and P ports, each port of a host is
//! among the first targets of N/P sources, not of all N. A canary that
//! would otherwise receive every source's first connections at once sees
//! them spread over the sweep.

use std::collections::HashMap;
use std::net::IpAddr;

/// The indices of `targets` (each an index and its destination address) in
/// spread order: addresses in the order they first appear, rotated left by
/// `offset`, then one target of each address in turn, each address's own
/// targets in their given order rotated left by `offset` as well.
pub fn spread(targets: &[(usize, IpAddr)], offset: u64) -> Vec<usize> {
    let mut groups: Vec<Vec<usize>> = Vec::new();
    let mut by_addr: HashMap<IpAddr, usize> = HashMap::new();
    for &(i, addr) in targets {
        let g = *by_addr.entry(addr).or_insert_with(|| {
            groups.push(Vec::new());
            groups.len() - 1
        });
        groups[g].push(i);
    }
    if groups.is_empty() {
        return Vec::new();
    }
    let shift = usize::try_from(offset % groups.len() as u64).unwrap_or(0);
    groups.rotate_left(shift);
    for g in &mut groups {
        let own = usize::try_from(offset % g.len() as u64).unwrap_or(0);
        g.rotate_left(own);
    }
    let mut out = Vec::with_capacity(targets.len());
    let mut cursors: Vec<std::slice::Iter<'_, usize>> = groups.iter().map(|g| g.iter()).collect();
    while out.len() < targets.len() {
        for c in &mut cursors {
            if let Some(&i) = c.next() {
                out.push(i);
            }
        }
    }
    out
}

/// A stable offset for a name (FNV-1a), for callers without a better one.
pub fn offset_of(name: &str) -> u64 {
    name.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(n: u8) -> IpAddr {
        IpAddr::from([198, 18, 0, n])
    }

    /// Plan order of a mesh source: every port of host 1, then host 2...
    fn mesh(hosts: u8, ports: usize) -> Vec<(usize, IpAddr)> {
        (1..=hosts)
            .flat_map(|h| std::iter::repeat_n(ip(h), ports))
            .enumerate()
            .collect()
    }

    #[test]
    fn every_target_comes_once() {
        let t = mesh(7, 5);
        for offset in 0..10 {
            let mut order = spread(&t, offset);
            order.sort_unstable();
            assert_eq!(order, (0..35).collect::<Vec<_>>());
        }
        assert!(spread(&[], 3).is_empty());
    }

    #[test]
    fn hosts_take_turns_from_the_offset() {
        let t = mesh(3, 2);
        // Host 1 has targets 0 and 1, host 2 has 2 and 3, host 3 has 4, 5;
        // an odd offset starts each host at its second target.
        assert_eq!(spread(&t, 0), vec![0, 2, 4, 1, 3, 5]);
        assert_eq!(spread(&t, 1), vec![3, 5, 1, 2, 4, 0]);
        assert_eq!(spread(&t, 5), vec![5, 1, 3, 4, 0, 2]);
        assert_eq!(spread(&t, 6), vec![0, 2, 4, 1, 3, 5]);
    }

    #[test]
    fn sources_with_different_offsets_start_on_different_hosts() {
        // Ten sources of a ten-host mesh, each skipping itself: in plan
        // order all would start on the same host; spread, no host is the
        // first target of more than two.
        let mut first = HashMap::new();
        for source in 0..10u8 {
            let t: Vec<(usize, IpAddr)> = (0..10u8)
                .filter(|h| *h != source)
                .flat_map(|h| std::iter::repeat_n(ip(h), 4))
                .enumerate()
                .collect();
            let order = spread(&t, u64::from(source));
            *first.entry(t[order[0]].1).or_insert(0) += 1;
            // The first wave touches every host once before any twice.
            let wave: std::collections::HashSet<IpAddr> =
                order[..9].iter().map(|&i| t[i].1).collect();
            assert_eq!(wave.len(), 9);
        }
        assert!(first.values().all(|&n| n <= 2), "{first:?}");
    }

    #[test]
    fn sources_do_not_converge_on_one_port_of_every_host() {
        // A 20-host x 5-port mesh: in plan order every source's first wave
        // is port 0 of every host. Spread, each (host, port) is in the
        // first wave (one target per host) of at most 20 / 5 sources, and
        // at no point of the sweeps do more than 20 / 5 + 1 sources take
        // the same target at the same step.
        let (hosts, ports) = (20u8, 5usize);
        // Each source's targets and its spread order of them.
        type Sweep = (Vec<(usize, IpAddr)>, Vec<usize>);
        let orders: Vec<Sweep> = (0..hosts)
            .map(|source| {
                let t: Vec<(usize, IpAddr)> = (0..hosts)
                    .filter(|h| *h != source)
                    .flat_map(|h| std::iter::repeat_n(ip(h), ports))
                    .enumerate()
                    .collect();
                let order = spread(&t, u64::from(source));
                (t, order)
            })
            .collect();
        let target = |(t, order): &Sweep, step: usize| {
            let i = order[step];
            // The port is the target's place among its host's targets.
            (t[i].1, i % ports)
        };
        let steps = usize::from(hosts - 1) * ports;
        for step in 0..steps {
            let mut at: HashMap<(IpAddr, usize), usize> = HashMap::new();
            for o in &orders {
                *at.entry(target(o, step)).or_insert(0) += 1;
            }
            let most = at.values().max().copied().unwrap_or(0);
            assert!(
                most <= usize::from(hosts) / ports + 1,
                "step {step}: {most}"
            );
        }
        let mut first_wave: HashMap<(IpAddr, usize), usize> = HashMap::new();
        for o in &orders {
            for step in 0..usize::from(hosts - 1) {
                *first_wave.entry(target(o, step)).or_insert(0) += 1;
            }
        }
        assert!(
            first_wave
                .values()
                .all(|&n| n <= usize::from(hosts) / ports),
            "{first_wave:?}"
        );
    }

    #[test]
    fn offsets_of_names_are_stable_and_differ() {
        assert_eq!(offset_of("web"), offset_of("web"));
        assert_ne!(offset_of("web"), offset_of("db"));
    }
}
