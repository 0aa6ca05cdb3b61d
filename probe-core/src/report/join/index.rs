//! Every agent's evidence sorted once in the orders the join looks it up
//! by ([`EvidenceIndex`]), so each path finds its own by binary search.

use std::collections::HashMap;
use std::net::IpAddr;

use super::super::evidence::{AgentEvidence, RoundEvidence};
use crate::control::{
    CanaryEvidence, Handshake, HandshakeStage, Nonce, PathProbe, Sighting, TraceDirection,
    TraceState, TracedFlow,
};
use crate::plan::{Address, Plan};

/// Every agent's evidence in the orders the join looks it up by, sorted
/// once, so that each path finds its own by binary search instead of
/// walking every record: as a source, its probes by path index; as a
/// target, its handshakes by port and source address and its TCP
/// canaries' sightings by port and nonce. References and positions, not
/// copies: a few bytes per record. Built without the plan's paths, which
/// the coordinator does not hold.
#[derive(Debug)]
pub(super) struct EvidenceIndex<'a> {
    by_agent: HashMap<&'a str, AgentIndex<'a>>,
    /// Each host's IP addresses from the plan, with their text (how the
    /// handshakes name a source), formatted once.
    addresses: HashMap<&'a str, Vec<(IpAddr, String)>>,
    /// Every forwarded flow an agent traced as stopped in its host's
    /// firewall (a plan host routing between others), with the host,
    /// sorted by (port, destination).
    forward_stops: Vec<(&'a str, &'a TracedFlow)>,
}

#[derive(Debug)]
pub(super) struct AgentIndex<'a> {
    /// Its probes by path index; of several results for one path, the
    /// first it returned.
    probes: Vec<&'a PathProbe>,
    handshakes: &'a [Handshake],
    canaries: &'a [CanaryEvidence],
    /// Positions in `handshakes`, sorted by (port, source).
    by_source: Vec<u32>,
    /// (canary, sighting) positions of TCP canaries, sorted by (port,
    /// nonce); stable, so of equal keys the first returned stays first.
    by_nonce: Vec<(u32, u32)>,
}

impl<'a> EvidenceIndex<'a> {
    pub(super) fn new(plan: &'a Plan, round: &'a RoundEvidence) -> EvidenceIndex<'a> {
        let by_agent = round
            .agents
            .iter()
            .map(|(host, a)| (host.as_str(), AgentIndex::new(a)))
            .collect();
        let addresses = plan
            .hosts
            .iter()
            .map(|h| {
                // A DNS name never matches: the kernel lists addresses.
                let ips = h.addresses.iter().filter_map(|a| match a {
                    Address::Ip(ip) => Some((*ip, ip.to_string())),
                    Address::Dns(_) => None,
                });
                (h.name.as_str(), ips.collect())
            })
            .collect();
        let mut forward_stops: Vec<(&str, &TracedFlow)> = round
            .agents
            .iter()
            .filter_map(|(host, a)| Some((host.as_str(), a.trace.as_ref()?)))
            .filter(|(_, t)| t.state == TraceState::Traced)
            .flat_map(|(host, t)| t.flows.iter().map(move |f| (host, f)))
            .filter(|(_, f)| f.direction == TraceDirection::Forward && f.stop.is_some())
            .collect();
        forward_stops.sort_by_key(|(_, f)| (f.port, f.dest));
        EvidenceIndex {
            by_agent,
            addresses,
            forward_stops,
        }
    }

    /// A host other than `from` and `to` that traced packets from one of
    /// `sources` to `dest:port` stopped in its firewall as it forwarded
    /// them, with the stopping flow: the first such host by name.
    pub(super) fn forward_stop(
        &self,
        (from, to): (&str, &str),
        sources: &[IpAddr],
        dest: IpAddr,
        port: u16,
    ) -> Option<(&'a str, &'a TracedFlow)> {
        let start = self
            .forward_stops
            .partition_point(|(_, f)| (f.port, f.dest) < (port, dest));
        self.forward_stops[start..]
            .iter()
            .take_while(|(_, f)| (f.port, f.dest) == (port, dest))
            .find(|(host, f)| *host != from && *host != to && sources.contains(&f.source))
            .copied()
    }

    pub(super) fn get(&self, host: &str) -> Option<&AgentIndex<'a>> {
        self.by_agent.get(host)
    }

    /// The probe agent `from` returned for path `index`.
    pub(super) fn probe(&self, from: &str, index: usize) -> Option<&'a PathProbe> {
        let probes = &self.get(from)?.probes;
        probes
            .binary_search_by_key(&index, |p| p.path)
            .ok()
            .map(|k| probes[k])
    }

    /// How far the handshakes from host `from` to `port` got at `to`, by
    /// `to`'s kernel: keyed by the address the probe left from (`source`)
    /// and by `from`'s plan addresses, of the family `v4` says (`None`:
    /// any). `None` when nothing was seen.
    pub(super) fn stage(
        &self,
        (from, source): (&str, Option<IpAddr>),
        to: &str,
        port: u16,
        v4: Option<bool>,
    ) -> Option<HandshakeStage> {
        let index = self.get(to)?;
        let planned = self.addresses.get(from).map_or(&[][..], Vec::as_slice);
        let family = |a: &IpAddr| v4.is_none_or(|v4| a.is_ipv4() == v4);
        let other = source
            .filter(|s| family(s) && !planned.iter().any(|(ip, _)| ip == s))
            .and_then(|s| index.stage(port, s));
        planned
            .iter()
            .filter(|(ip, _)| family(ip))
            .filter_map(|(ip, _)| index.stage(port, *ip))
            .chain(other)
            .max()
    }
}

impl<'a> AgentIndex<'a> {
    pub(super) fn new(a: &'a AgentEvidence) -> AgentIndex<'a> {
        let mut probes: Vec<&PathProbe> = a.probes.iter().collect();
        // Stable: of several results for one path, the first returned
        // stays first.
        probes.sort_by_key(|p| p.path);
        probes.dedup_by_key(|p| p.path);
        let handshakes = a.handshakes.as_deref().unwrap_or_default();
        let mut by_source: Vec<u32> = (0..handshakes.len())
            .filter_map(|i| u32::try_from(i).ok())
            .collect();
        by_source.sort_by(|&x, &y| {
            let (x, y) = (&handshakes[x as usize], &handshakes[y as usize]);
            (x.port, &x.source).cmp(&(y.port, &y.source))
        });
        let canaries = a.canaries.as_slice();
        let mut by_nonce: Vec<(u32, u32)> = canaries
            .iter()
            .enumerate()
            .filter(|(_, c)| !c.is_udp())
            .flat_map(|(i, c)| (0..c.seen.len()).map(move |j| (i, j)))
            .filter_map(|(i, j)| Some((u32::try_from(i).ok()?, u32::try_from(j).ok()?)))
            .collect();
        let key = |&(i, j): &(u32, u32)| {
            let c = &canaries[i as usize];
            (c.port, &c.seen[j as usize].nonce)
        };
        by_nonce.sort_by(|x, y| key(x).cmp(&key(y)));
        AgentIndex {
            probes,
            handshakes,
            canaries,
            by_source,
            by_nonce,
        }
    }

    /// The furthest stage of the handshakes from `source` to `port`.
    pub(super) fn stage(&self, port: u16, source: IpAddr) -> Option<HandshakeStage> {
        let key = |i: u32| {
            let h = &self.handshakes[i as usize];
            (h.port, h.source)
        };
        let from = self.by_source.partition_point(|&i| key(i) < (port, source));
        self.by_source[from..]
            .iter()
            .take_while(|&&i| key(i) == (port, source))
            .map(|&i| self.handshakes[i as usize].stage)
            .max()
    }

    /// The first sighting of `nonce` by a TCP canary on `port`.
    pub(super) fn sighting(&self, port: u16, nonce: &Nonce) -> Option<&'a Sighting> {
        let at = |(i, j): (u32, u32)| {
            let c = &self.canaries[i as usize];
            (c.port, &c.seen[j as usize])
        };
        let from = self.by_nonce.partition_point(|&k| {
            let (p, s) = at(k);
            (p, &s.nonce) < (port, nonce)
        });
        let (p, s) = at(*self.by_nonce.get(from)?);
        (p == port && s.nonce == *nonce).then_some(s)
    }
}
