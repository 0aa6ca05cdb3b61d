//! Admission to the control endpoint, so that nobody without the
//! coordinator's key can starve it: connections are counted per peer
//! address, a connection that has not authenticated yet (TLS handshake and
//! name check) gets a short deadline and is the first to be evicted when
//! the endpoint is full, and authenticated connections (only the
//! coordinator's certificate authenticates) have slots of their own.
//! Refusals are counted and logged as one summary per interval, never one
//! line each.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Why a connection (or a request on it) was refused; the keys of the
/// refusal summary.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) enum Refusal {
    /// Its address already held every slot it may hold.
    PerPeer,
    /// Evicted while still unauthenticated, to make room.
    Evicted,
    /// TLS handshake failed or took too long.
    Handshake,
    /// Authenticated with a certificate that is not the coordinator's.
    NotCoordinator,
    /// Too many malformed frames.
    Malformed,
    /// Over its request budget.
    RateLimited,
    /// Stopped reading our replies.
    WriteTimeout,
}

impl Refusal {
    fn as_str(self) -> &'static str {
        match self {
            Refusal::PerPeer => "over the per-address limit",
            Refusal::Evicted => "evicted unauthenticated",
            Refusal::Handshake => "handshake failed or too slow",
            Refusal::NotCoordinator => "certificate not the coordinator's",
            Refusal::Malformed => "malformed frames",
            Refusal::RateLimited => "rate-limited requests",
            Refusal::WriteTimeout => "not reading replies",
        }
    }
}

/// Addresses remembered per summary interval (beyond this they are only
/// counted, so a flood from many addresses cannot grow the agent).
const MAX_ADDRESSES: usize = 1024;

/// Counts refusals and logs them as one line per interval.
#[derive(Debug)]
pub(crate) struct RefusalLog {
    interval: Duration,
    state: Mutex<RefusalWindow>,
}

#[derive(Debug)]
struct RefusalWindow {
    since: Instant,
    counts: BTreeMap<Refusal, u64>,
    addresses: HashSet<IpAddr>,
    more_addresses: bool,
}

impl RefusalLog {
    pub(crate) fn new(interval: Duration) -> RefusalLog {
        RefusalLog {
            interval,
            state: Mutex::new(RefusalWindow {
                since: Instant::now(),
                counts: BTreeMap::new(),
                addresses: HashSet::new(),
                more_addresses: false,
            }),
        }
    }

    /// Counts one refusal of `peer`.
    pub(crate) fn note(&self, why: Refusal, peer: IpAddr) {
        let mut w = self.state.lock().unwrap_or_else(|e| e.into_inner());
        *w.counts.entry(why).or_default() += 1;
        if w.addresses.len() < MAX_ADDRESSES {
            w.addresses.insert(peer);
        } else if !w.addresses.contains(&peer) {
            w.more_addresses = true;
        }
        drop(w);
        self.flush(false);
    }

    /// Logs the summary when the interval has passed (or at once with
    /// `force`) and there is something to say. Returns the line logged.
    pub(crate) fn flush(&self, force: bool) -> Option<String> {
        let mut w = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        let elapsed = now.duration_since(w.since);
        if !force && elapsed < self.interval {
            return None;
        }
        if w.counts.is_empty() {
            w.since = now;
            return None;
        }
        let total: u64 = w.counts.values().sum();
        let by = w
            .counts
            .iter()
            .map(|(k, n)| format!("{n} {}", k.as_str()))
            .collect::<Vec<_>>()
            .join(", ");
        let addresses = format!(
            "{}{}",
            w.addresses.len(),
            if w.more_addresses { "+" } else { "" }
        );
        let line = format!(
            "refused {total} control connection{} or request{} from {addresses} address{} in the last {} s ({by})",
            plural(total),
            plural(total),
            if addresses == "1" { "" } else { "es" },
            elapsed.as_secs().max(1),
        );
        tracing::warn!("{line}");
        w.since = now;
        w.counts.clear();
        w.addresses.clear();
        w.more_addresses = false;
        Some(line)
    }
}

fn plural(n: u64) -> &'static str {
    if n == 1 { "" } else { "s" }
}

/// Slot limits of the control endpoint.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SlotLimits {
    /// Unauthenticated connections at once, over all peers.
    pub pending: usize,
    /// Authenticated (coordinator) connections at once.
    pub authenticated: usize,
    /// Connections at once from one address.
    pub per_peer: usize,
}

#[derive(Debug)]
struct Entry {
    id: u64,
    peer: IpAddr,
    cancel: CancellationToken,
    /// The client has sent its first bytes (a TLS hello): it is
    /// handshaking, not idle, and idle connections are shed before it.
    spoke: bool,
    /// A second descriptor of the socket, to see at eviction time whether
    /// the client has spoken though its task has not looked yet.
    probe: Option<std::net::TcpStream>,
}

impl Entry {
    /// Whether the client has sent anything: seen by its task, or waiting
    /// in the socket now.
    fn spoke(&self) -> bool {
        self.spoke
            || self
                .probe
                .as_ref()
                .is_some_and(|p| matches!(p.peek(&mut [0u8; 1]), Ok(n) if n > 0))
    }
}

/// `tcp` and a second descriptor of it for [`Admission::admit`]: the
/// admission looks through it for bytes waiting when it must shed a
/// connection, without reading them.
pub(crate) fn with_probe(
    tcp: tokio::net::TcpStream,
) -> std::io::Result<(tokio::net::TcpStream, std::net::TcpStream)> {
    let tcp = tcp.into_std()?;
    let probe = tcp.try_clone()?;
    Ok((tokio::net::TcpStream::from_std(tcp)?, probe))
}

#[derive(Debug, Default)]
struct Slots {
    next: u64,
    pending: VecDeque<Entry>,
    authenticated: VecDeque<Entry>,
    per_peer: HashMap<IpAddr, usize>,
}

/// The control endpoint's connection slots.
#[derive(Debug)]
pub(crate) struct Admission {
    limits: SlotLimits,
    slots: Mutex<Slots>,
    pub(crate) refusals: RefusalLog,
}

/// One admitted connection: cancelled when evicted, freed on drop.
#[derive(Debug)]
pub(crate) struct Ticket {
    id: u64,
    peer: IpAddr,
    /// Fires when the connection is evicted.
    pub(crate) evicted: CancellationToken,
    admission: Arc<Admission>,
}

impl Admission {
    pub(crate) fn new(limits: SlotLimits, summary_interval: Duration) -> Admission {
        Admission {
            limits,
            slots: Mutex::new(Slots::default()),
            refusals: RefusalLog::new(summary_interval),
        }
    }

    /// Admits a new, unauthenticated connection from `peer`, evicting an
    /// unauthenticated one (of this peer first when the peer is at its
    /// limit) to make room: the oldest idle one, and the oldest
    /// handshaking one only when none is idle, so that a coordinator
    /// sharing its address with strangers (a bastion, a NAT) is never cut
    /// mid-handshake by their idle connections. `probe` (from
    /// [`with_probe`]) lets it see bytes its task has not looked at yet.
    /// `None` when `peer` holds all its slots with authenticated
    /// connections.
    pub(crate) fn admit(
        self: &Arc<Self>,
        peer: IpAddr,
        probe: Option<std::net::TcpStream>,
    ) -> Option<Ticket> {
        let mut s = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        let mut evicted = Vec::new();
        if s.per_peer.get(&peer).copied().unwrap_or(0) >= self.limits.per_peer {
            let Some(i) = victim(&s.pending, |e| e.peer == peer) else {
                drop(s);
                self.refusals.note(Refusal::PerPeer, peer);
                return None;
            };
            if let Some(e) = s.pending.remove(i) {
                evicted.push(e);
            }
        }
        while s.pending.len() >= self.limits.pending.max(1) {
            match victim(&s.pending, |_| true).and_then(|i| s.pending.remove(i)) {
                Some(e) => evicted.push(e),
                None => break,
            }
        }
        for e in &evicted {
            release(&mut s, e.peer);
        }
        s.next += 1;
        let id = s.next;
        let evicted_token = CancellationToken::new();
        s.pending.push_back(Entry {
            id,
            peer,
            cancel: evicted_token.clone(),
            spoke: false,
            probe,
        });
        *s.per_peer.entry(peer).or_default() += 1;
        drop(s);
        for e in evicted {
            e.cancel.cancel();
            self.refusals.note(Refusal::Evicted, e.peer);
        }
        Some(Ticket {
            id,
            peer,
            evicted: evicted_token,
            admission: self.clone(),
        })
    }

    /// Moves an authenticated connection into the coordinator's slots,
    /// evicting the oldest authenticated connection (a crashed
    /// coordinator's leftovers) when they are full.
    pub(crate) fn authenticated(&self, ticket: &Ticket) {
        let mut s = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        let Some(i) = s.pending.iter().position(|e| e.id == ticket.id) else {
            return;
        };
        let Some(entry) = s.pending.remove(i) else {
            return;
        };
        let mut evicted = Vec::new();
        while s.authenticated.len() >= self.limits.authenticated.max(1) {
            match s.authenticated.pop_front() {
                Some(e) => evicted.push(e),
                None => break,
            }
        }
        for e in &evicted {
            release(&mut s, e.peer);
        }
        s.authenticated.push_back(entry);
        drop(s);
        for e in evicted {
            tracing::info!(peer = %e.peer, "oldest coordinator connection closed to make room");
            e.cancel.cancel();
        }
    }

    /// Notes that a pending connection has sent its first bytes.
    fn spoke(&self, id: u64) {
        let mut s = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(e) = s.pending.iter_mut().find(|e| e.id == id) {
            e.spoke = true;
        }
    }

    fn remove(&self, id: u64, peer: IpAddr) {
        let mut s = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        let before = s.pending.len() + s.authenticated.len();
        s.pending.retain(|e| e.id != id);
        s.authenticated.retain(|e| e.id != id);
        if s.pending.len() + s.authenticated.len() < before {
            release(&mut s, peer);
        }
    }

    /// Connections held now: `(unauthenticated, authenticated)`.
    #[cfg(test)]
    pub(crate) fn held(&self) -> (usize, usize) {
        let s = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        (s.pending.len(), s.authenticated.len())
    }
}

/// The pending connection to evict among those `of` selects: the oldest
/// idle one, else the oldest.
fn victim(pending: &VecDeque<Entry>, of: impl Fn(&Entry) -> bool) -> Option<usize> {
    pending
        .iter()
        .position(|e| of(e) && !e.spoke())
        .or_else(|| pending.iter().position(of))
}

impl Ticket {
    /// The client has sent its first bytes: shed idle connections first.
    pub(crate) fn spoke(&self) {
        self.admission.spoke(self.id);
    }
}

fn release(s: &mut Slots, peer: IpAddr) {
    if let Some(n) = s.per_peer.get_mut(&peer) {
        *n = n.saturating_sub(1);
        if *n == 0 {
            s.per_peer.remove(&peer);
        }
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        self.admission.remove(self.id, self.peer);
    }
}

/// A per-connection token bucket: a client's requests never spend another
/// client's budget.
#[derive(Debug)]
pub(crate) struct Bucket {
    tokens: f64,
    last: Instant,
    burst: f64,
    rate: f64,
}

impl Bucket {
    pub(crate) fn new(burst: u32, per_second: u32) -> Bucket {
        Bucket {
            tokens: f64::from(burst),
            last: Instant::now(),
            burst: f64::from(burst),
            rate: f64::from(per_second),
        }
    }

    /// Takes one token if there is one.
    pub(crate) fn take(&mut self) -> bool {
        let now = Instant::now();
        let refill = now.duration_since(self.last).as_secs_f64() * self.rate;
        self.tokens = (self.tokens + refill).min(self.burst);
        self.last = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[tokio::test]
    async fn unauthenticated_connections_are_evicted_oldest_first_and_per_peer() {
        let a = Arc::new(Admission::new(
            SlotLimits {
                pending: 4,
                authenticated: 2,
                per_peer: 3,
            },
            Duration::from_secs(3600),
        ));
        let flood: Vec<Ticket> = (0..3)
            .map(|_| a.admit(ip("198.18.0.9"), None).unwrap())
            .collect();
        // The flooding address is at its limit: its own oldest goes.
        let fourth = a.admit(ip("198.18.0.9"), None).unwrap();
        assert!(flood[0].evicted.is_cancelled());
        assert!(!flood[1].evicted.is_cancelled());
        // Another address still gets in, evicting the oldest overall.
        let coord = a.admit(ip("198.18.0.1"), None).unwrap();
        assert!(!coord.evicted.is_cancelled());
        assert_eq!(a.held(), (4, 0));
        a.authenticated(&coord);
        assert_eq!(a.held(), (3, 1));
        // A flood of new connections never evicts an authenticated one.
        let more: Vec<Ticket> = (0..20)
            .filter_map(|_| a.admit(ip("198.18.0.7"), None))
            .collect();
        assert!(!coord.evicted.is_cancelled());
        assert!(more.len() == 20 && flood[2].evicted.is_cancelled());
        drop(more);
        drop(flood);
        drop(fourth);
        assert_eq!(a.held(), (0, 1));
        // Authenticated slots are full: the oldest makes room.
        let c2 = a.admit(ip("198.18.0.1"), None).unwrap();
        a.authenticated(&c2);
        let c3 = a.admit(ip("198.18.0.1"), None).unwrap();
        a.authenticated(&c3);
        assert!(coord.evicted.is_cancelled() && !c3.evicted.is_cancelled());
        // An address holding only authenticated slots at its limit is refused.
        let c4 = a.admit(ip("198.18.0.1"), None).unwrap();
        a.authenticated(&c4);
        assert!(c2.evicted.is_cancelled());
        let lim = Arc::new(Admission::new(
            SlotLimits {
                pending: 4,
                authenticated: 4,
                per_peer: 1,
            },
            Duration::from_secs(3600),
        ));
        let only = lim.admit(ip("198.18.0.1"), None).unwrap();
        lim.authenticated(&only);
        assert!(lim.admit(ip("198.18.0.1"), None).is_none());
        let line = a.refusals.flush(true).unwrap();
        assert!(line.contains("evicted unauthenticated"), "{line}");
        assert!(line.contains("from 2 addresses"), "{line}");
    }

    #[tokio::test]
    async fn idle_strangers_from_the_coordinators_address_never_evict_its_handshake() {
        // A bastion or NAT: the coordinator and strangers share one
        // address. Their idle connections churn; the coordinator's, which
        // has spoken (its TLS hello), must survive until authenticated.
        let a = Arc::new(Admission::new(
            SlotLimits {
                pending: 64,
                authenticated: 4,
                per_peer: 8,
            },
            Duration::from_secs(3600),
        ));
        let shared = ip("198.18.0.1");
        let mut idle: VecDeque<Ticket> = (0..7).map(|_| a.admit(shared, None).unwrap()).collect();
        let coord = a.admit(shared, None).unwrap();
        coord.spoke();
        for _ in 0..10_000 {
            idle.push_back(a.admit(shared, None).unwrap());
            idle.retain(|t| !t.evicted.is_cancelled());
            assert!(!coord.evicted.is_cancelled(), "the coordinator was evicted");
        }
        a.authenticated(&coord);
        assert_eq!(a.held(), (7, 1));
        // Bytes waiting in the socket count before its task has looked.
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let mut client = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
        std::io::Write::write_all(&mut client, b"\x16\x03\x01").unwrap();
        let (server, _) = l.accept().unwrap();
        let p = Arc::new(Admission::new(
            SlotLimits {
                pending: 64,
                authenticated: 4,
                per_peer: 8,
            },
            Duration::from_secs(3600),
        ));
        let hello = p.admit(shared, Some(server)).unwrap();
        let churn: Vec<Ticket> = (0..1000).map(|_| p.admit(shared, None).unwrap()).collect();
        assert!(
            !hello.evicted.is_cancelled(),
            "a connection that spoke was evicted"
        );
        assert_eq!(
            churn.iter().filter(|t| !t.evicted.is_cancelled()).count(),
            7
        );
        // The global cap sheds idle strangers before handshakes too.
        let b = Arc::new(Admission::new(
            SlotLimits {
                pending: 4,
                authenticated: 4,
                per_peer: 64,
            },
            Duration::from_secs(3600),
        ));
        let first = b.admit(ip("198.18.0.1"), None).unwrap();
        first.spoke();
        let others: Vec<Ticket> = (0..100)
            .map(|_| b.admit(ip("198.18.0.7"), None).unwrap())
            .collect();
        assert!(!first.evicted.is_cancelled());
        assert!(others[0].evicted.is_cancelled());
        // Handshakes only: the oldest still goes, so none can hold a slot.
        let c = Arc::new(Admission::new(
            SlotLimits {
                pending: 2,
                authenticated: 4,
                per_peer: 64,
            },
            Duration::from_secs(3600),
        ));
        let h: Vec<Ticket> = (0..3)
            .map(|_| {
                let t = c.admit(ip("198.18.0.7"), None).unwrap();
                t.spoke();
                t
            })
            .collect();
        assert!(h[0].evicted.is_cancelled() && !h[1].evicted.is_cancelled());
    }

    #[test]
    fn refusals_are_summarised_not_logged_one_by_one() {
        let log = RefusalLog::new(Duration::from_secs(3600));
        for i in 0..1000u32 {
            log.note(Refusal::Handshake, IpAddr::from([10, 0, (i % 3) as u8, 1]));
        }
        assert_eq!(log.flush(false), None, "nothing before the interval");
        let line = log.flush(true).unwrap();
        assert!(
            line.starts_with("refused 1000 control connections or requests from 3 addresses"),
            "{line}"
        );
        assert_eq!(log.flush(true), None, "the window starts over");
    }
}
