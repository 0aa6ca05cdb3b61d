//! This host's own addresses, every interface and both families, as the
//! agent reports them in `prepared`: a probe may leave from any of them
//! (the kernel picks the source of a path whose plan gives none, and a
//! dual-stack host's plan names one address per family at most), so the
//! targets' rule tracing and the join must know them all. Read through
//! `getifaddrs` (netlink under glibc and musl), never by running a tool
//! that a minimal host may lack. Also whether the host forwards (from its
//! sysctls): a router between zones carries other hosts' paths.

use std::net::IpAddr;

/// Whether a probe can leave from `ip`: not loopback, multicast or the
/// unspecified address, and not an IPv6 link-local one (a plan's targets
/// are never reached from those; they would only grow the trace sets).
pub fn is_source_address(ip: IpAddr) -> bool {
    if ip.is_loopback() || ip.is_multicast() || ip.is_unspecified() {
        return false;
    }
    match ip {
        IpAddr::V4(_) => true,
        IpAddr::V6(v6) => (v6.segments()[0] & 0xffc0) != 0xfe80,
    }
}

/// Every address of this host's interfaces that a probe can leave from,
/// sorted, each once; empty where the interfaces cannot be listed (the
/// round goes on with the plan's addresses).
pub fn host_addresses() -> Vec<IpAddr> {
    let Ok(list) = nix::ifaddrs::getifaddrs() else {
        tracing::warn!("could not list this host's addresses; the plan's stand in");
        return Vec::new();
    };
    let mut out: Vec<IpAddr> = list
        .filter_map(|i| {
            let a = i.address?;
            a.as_sockaddr_in()
                .map(|s| IpAddr::V4(s.ip()))
                .or_else(|| a.as_sockaddr_in6().map(|s| IpAddr::V6(s.ip())))
        })
        .filter(|ip| is_source_address(*ip))
        .collect();
    out.sort_unstable();
    out.dedup();
    out
}

/// Which families this host forwards, from the sysctls of the agent's
/// network namespace (`net.ipv4.ip_forward`,
/// `net.ipv6.conf.all.forwarding`); off where they cannot be read.
pub fn forwarding() -> crate::control::Forwarding {
    let on = |file: &str| std::fs::read_to_string(file).is_ok_and(|v| v.trim() == "1");
    crate::control::Forwarding {
        ipv4: on("/proc/sys/net/ipv4/ip_forward"),
        ipv6: on("/proc/sys/net/ipv6/conf/all/forwarding"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_addresses_a_probe_leaves_from_are_sources() {
        for yes in ["198.18.0.1", "2001:2::1", "169.254.1.1"] {
            assert!(is_source_address(yes.parse().unwrap()), "{yes}");
        }
        for no in ["127.0.0.1", "::1", "fe80::1", "ff02::1", "0.0.0.0", "::"] {
            assert!(!is_source_address(no.parse().unwrap()), "{no}");
        }
    }

    #[test]
    fn this_hosts_addresses_are_listed_without_loopback() {
        // Every test host has at least loopback; none of it is listed, and
        // each address appears once.
        let all = host_addresses();
        assert!(all.iter().all(|ip| !ip.is_loopback()), "{all:?}");
        let mut sorted = all.clone();
        sorted.dedup();
        assert_eq!(sorted, all);
    }
}
