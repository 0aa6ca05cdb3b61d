//! The target's side of a handshake: which sources' SYNs reached this host's
//! planned ports during a round, even when no connection was ever accepted.
//! A canary only learns of connections that complete; a SYN whose SYN-ACK
//! is lost on the way back, or whose ACK is dropped by a stateless filter,
//! leaves only a request socket in `SYN_RECV`. Linux lists those without
//! root through netlink (`sock_diag`, read here) and in `/proc/net/tcp` and
//! `/proc/net/tcp6` (state `03`, read where netlink fails), and keeps
//! them while it retransmits its SYN-ACK (about a minute), so the agent
//! reads the tables when the round starts (what is already there is no
//! evidence) and again when the coordinator asks for evidence, and keeps,
//! per port and source address, the furthest stage it saw: `syn`, or
//! `connected` once the handshake completed there.
//!
//! In between it polls every [`POLL_INTERVAL`]: a request socket whose
//! SYN-ACK the host's own output filter drops is removed at the first
//! retransmission (about a second), and a connection that stalls (a
//! path-MTU black hole) is gone by the time evidence is asked for. Reading
//! the tables walks the namespace's connection hash, so polling stops
//! once the evidence is taken, and one poller thread serves every agent of
//! a process.
//!
//! Where neither can be read (not Linux) the watch reports "not
//! available" ([`SynLog::snapshot`] is `None`) and the round goes on
//! without it.

use std::collections::{BTreeMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::control::{Handshake, HandshakeStage};

/// How often the socket tables are read.
pub const POLL_INTERVAL: Duration = Duration::from_millis(400);

/// Most (port, source) pairs kept per round: a scan of the host must not
/// grow the agent.
pub const MAX_ENTRIES: usize = 4096;

/// What the watch saw in one round.
#[derive(Debug, Default)]
pub struct SynLog {
    ips: Vec<IpAddr>,
    ports: HashSet<u16>,
    /// Sockets already there when the round began (say, a request socket
    /// of the previous round's probe, which lingers for half a minute):
    /// never evidence of this round.
    baseline: HashSet<(u16, SocketAddr)>,
    seen: Mutex<BTreeMap<(u16, IpAddr), HandshakeStage>>,
    available: Mutex<Option<bool>>,
    /// The evidence was taken: polling for this round stops.
    finished: AtomicBool,
}

impl SynLog {
    /// Reads the tables once more, now: the evidence request calls it so
    /// that the answer includes the latest state whatever the poller's
    /// schedule (a busy host may have delayed it).
    pub fn refresh(&self) {
        if !self.ports.is_empty() {
            let rows = read_tables(Tables::for_ips(&self.ips), Some(&self.ports));
            self.absorb(rows.as_deref(), &self.ips, &self.ports);
        }
    }

    /// Stops polling for this round (the evidence has been taken).
    pub fn finish(&self) {
        self.finished.store(true, Ordering::Release);
    }

    /// Every (port, source) seen with its furthest stage; `None` when the
    /// socket tables could not be read.
    pub fn snapshot(&self) -> Option<Vec<Handshake>> {
        if *self.available.lock().unwrap_or_else(|e| e.into_inner()) != Some(true) {
            return None;
        }
        let seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        Some(
            seen.iter()
                .map(|((port, source), stage)| Handshake {
                    port: *port,
                    source: *source,
                    stage: *stage,
                })
                .collect(),
        )
    }

    fn note(&self, port: u16, source: IpAddr, stage: HandshakeStage) {
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        if seen.len() >= MAX_ENTRIES && !seen.contains_key(&(port, source)) {
            return;
        }
        let e = seen.entry((port, source)).or_insert(stage);
        if stage > *e {
            *e = stage;
        }
    }

    /// Takes in one reading of the tables (`None`: they could not be read).
    fn absorb(&self, rows: Option<&[Row]>, ips: &[IpAddr], ports: &HashSet<u16>) {
        if let Some(rows) = rows {
            for (local, port, remote, stage) in rows {
                if ports.contains(port)
                    && ips.iter().any(|ip| ip.is_unspecified() || ip == local)
                    && !self.baseline.contains(&(*port, *remote))
                {
                    self.note(*port, remote.ip(), *stage);
                }
            }
        }
        let mut available = self.available.lock().unwrap_or_else(|e| e.into_inner());
        if *available != Some(true) {
            *available = Some(rows.is_some());
        }
    }

    #[cfg(test)]
    fn poll(&self, ips: &[IpAddr], ports: &HashSet<u16>) -> bool {
        let rows = read_tables(Tables::for_ips(ips), Some(ports));
        self.absorb(rows.as_deref(), ips, ports);
        rows.is_some()
    }
}

use super::sock_diag::{self, Row};

/// How old a reading of the tables may be and still serve as another
/// watch's baseline: the agents of one process (`portcall demo`) prepare
/// at the same moment, and one walk of the kernel's tables serves them
/// all. (An older baseline only leaves out fewer sockets.)
const SHARED_READING: Duration = Duration::from_millis(100);

/// Which of the two tables a watch needs: reading one walks the kernel's
/// whole connection hash, so a host with IPv4 addresses only never reads
/// `/proc/net/tcp6` (nor an IPv6-only one `/proc/net/tcp`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
struct Tables {
    v4: bool,
    v6: bool,
}

impl Tables {
    /// The tables sockets on `ips` are listed in: IPv4 addresses (and
    /// `0.0.0.0`) in `tcp`; IPv6 ones in `tcp6`, and `::` in both (a
    /// dual-stack socket lists its IPv4 peers there as mapped addresses).
    fn for_ips(ips: &[IpAddr]) -> Tables {
        if ips.is_empty() {
            return Tables { v4: true, v6: true };
        }
        let mut t = Tables::default();
        for ip in ips {
            match ip {
                IpAddr::V4(_) => t.v4 = true,
                IpAddr::V6(v6) if v6.is_unspecified() => {
                    t.v4 = true;
                    t.v6 = true;
                }
                IpAddr::V6(_) => t.v6 = true,
            }
        }
        t
    }

    fn union(self, other: Tables) -> Tables {
        Tables {
            v4: self.v4 || other.v4,
            v6: self.v6 || other.v6,
        }
    }

    /// Whether a reading of `self` holds everything a reading of `want`
    /// would.
    fn covers(self, want: Tables) -> bool {
        (self.v4 || !want.v4) && (self.v6 || !want.v6)
    }
}

/// The last reading of the tables, which tables it read, and when.
type Reading = (std::time::Instant, Tables, Option<Arc<[Row]>>);
static LAST_READING: Mutex<Option<Reading>> = Mutex::new(None);

/// The `tables`' handshakes for a baseline, read now or at most
/// [`SHARED_READING`] ago; `None` when none can be read. Concurrent
/// callers wait for one reading instead of each walking the tables.
fn read_baseline(tables: Tables) -> Option<Vec<Row>> {
    let mut last = LAST_READING.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((at, read, rows)) = last.as_ref() {
        if at.elapsed() < SHARED_READING && read.covers(tables) {
            return rows.as_ref().map(|r| r.to_vec());
        }
    }
    // Every port: the reading may serve another watch's baseline.
    let rows = read_tables(tables, None);
    *last = Some((
        std::time::Instant::now(),
        tables,
        rows.as_ref().map(|r| Arc::from(r.as_slice())),
    ));
    rows
}

/// The `tables`' handshakes, read now through netlink (`sock_diag`), or
/// from `/proc` where that cannot be used; `None` when neither can be read.
/// With `ports`, only sockets on those local ports need be listed (the
/// kernel filters them where it can).
fn read_tables(tables: Tables, ports: Option<&HashSet<u16>>) -> Option<Vec<Row>> {
    sock_diag::read(tables.v4, tables.v6, ports).or_else(|| read_proc_tables(tables))
}

/// [`read_tables`] from `/proc/net/tcp{,6}`.
fn read_proc_tables(tables: Tables) -> Option<Vec<Row>> {
    let mut rows = Vec::new();
    let mut any = false;
    for (file, wanted) in [("/proc/net/tcp", tables.v4), ("/proc/net/tcp6", tables.v6)] {
        if !wanted {
            continue;
        }
        if let Some(text) = read_proc(file) {
            any = true;
            rows.extend(parse_table(&text));
        }
    }
    any.then_some(rows)
}

/// A `/proc` file in a few large reads: each read of a socket table
/// resumes the kernel's walk, so fewer reads walk less.
fn read_proc(file: &str) -> Option<String> {
    use std::io::Read;
    let mut buf = Vec::with_capacity(256 * 1024);
    std::fs::File::open(file).ok()?.read_to_end(&mut buf).ok()?;
    String::from_utf8(buf).ok()
}

/// One round's watch: what to look for, until when, and where to record it.
struct Watch {
    ips: Vec<IpAddr>,
    ports: HashSet<u16>,
    until: std::time::Instant,
    cancel: CancellationToken,
    log: Weak<SynLog>,
}

/// Every watch of this process. One poller thread serves them all, so that
/// many agents in one process (`portcall demo`) read the tables once per
/// interval, not once each.
static WATCHES: Mutex<Vec<Watch>> = Mutex::new(Vec::new());
static POLLING: AtomicBool = AtomicBool::new(false);

/// Starts watching `ports` on `ips` until `cancel` fires or `deadline`
/// passes, or [`SynLog::finish`] is called. The tables are read now (the
/// baseline), on [`SynLog::refresh`], and with `poll` every
/// [`POLL_INTERVAL`] in between.
pub fn start(
    ips: Vec<IpAddr>,
    ports: Vec<u16>,
    poll: bool,
    deadline: Instant,
    cancel: &CancellationToken,
) -> Arc<SynLog> {
    let ports: HashSet<u16> = ports.into_iter().collect();
    // The baseline is read here, before any probe of the round can leave;
    // that reading also says whether the tables are there at all.
    let tables = if ports.is_empty() {
        None
    } else {
        read_baseline(Tables::for_ips(&ips))
    };
    let baseline = tables
        .iter()
        .flatten()
        .filter(|(_, port, _, _)| ports.contains(port))
        .map(|(_, port, remote, _)| (*port, *remote))
        .collect();
    let log = Arc::new(SynLog {
        ips: ips.clone(),
        ports: ports.clone(),
        baseline,
        available: Mutex::new(tables.as_ref().map(|_| true)),
        ..SynLog::default()
    });
    if ports.is_empty() || !poll {
        return log;
    }
    WATCHES
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push(Watch {
            ips,
            ports,
            until: deadline.into_std(),
            cancel: cancel.clone(),
            log: Arc::downgrade(&log),
        });
    if !POLLING.swap(true, Ordering::AcqRel) {
        let spawned = std::thread::Builder::new()
            .name("portcall-syn-watch".into())
            .spawn(poller);
        if spawned.is_err() {
            POLLING.store(false, Ordering::Release);
        }
    }
    log
}

/// Reads the tables every [`POLL_INTERVAL`] while any watch is live, and
/// hands each reading to every watch.
fn poller() {
    loop {
        let (tables, ports) = {
            let mut watches = WATCHES.lock().unwrap_or_else(|e| e.into_inner());
            let now = std::time::Instant::now();
            watches.retain(|w| {
                now < w.until
                    && !w.cancel.is_cancelled()
                    && w.log
                        .upgrade()
                        .is_some_and(|l| !l.finished.load(Ordering::Acquire))
            });
            if watches.is_empty() {
                POLLING.store(false, Ordering::Release);
                return;
            }
            let ports: HashSet<u16> = watches
                .iter()
                .flat_map(|w| w.ports.iter().copied())
                .collect();
            let tables = watches
                .iter()
                .fold(Tables::default(), |t, w| t.union(Tables::for_ips(&w.ips)));
            (tables, ports)
        };
        let rows = read_tables(tables, Some(&ports));
        {
            let mut watches = WATCHES.lock().unwrap_or_else(|e| e.into_inner());
            for w in watches.iter() {
                if let Some(log) = w.log.upgrade() {
                    log.absorb(rows.as_deref(), &w.ips, &w.ports);
                }
            }
            if rows.is_none() {
                // Not Linux, or no /proc: nothing to watch, ever.
                watches.clear();
                POLLING.store(false, Ordering::Release);
                return;
            }
        }
        std::thread::sleep(POLL_INTERVAL);
    }
}

/// The sockets of one `/proc/net/tcp{,6}` table that show a handshake from
/// a peer: `(local address, local port, remote, stage)`. Listening
/// sockets and our own outgoing SYNs are left out.
fn parse_table(text: &str) -> Vec<Row> {
    let mut out = Vec::new();
    for line in text.lines().skip(1) {
        let mut f = line.split_whitespace();
        let (Some(_sl), Some(local), Some(remote), Some(state)) =
            (f.next(), f.next(), f.next(), f.next())
        else {
            continue;
        };
        let Some(stage) = u8::from_str_radix(state, 16)
            .ok()
            .and_then(sock_diag::stage)
        else {
            continue;
        };
        let (Some((lip, lport)), Some((rip, rport))) = (endpoint(local), endpoint(remote)) else {
            continue;
        };
        out.push((lip, lport, SocketAddr::new(rip, rport), stage));
    }
    out
}

/// `0100007F:0CEA` (IPv4) or 32 hex digits and a port (IPv6): the kernel
/// prints the address as native-endian 32-bit words.
fn endpoint(s: &str) -> Option<(IpAddr, u16)> {
    let (addr, port) = s.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    let ip = match addr.len() {
        8 => IpAddr::V4(Ipv4Addr::from(
            u32::from_str_radix(addr, 16).ok()?.swap_bytes(),
        )),
        32 => {
            let mut bytes = [0u8; 16];
            for (i, chunk) in bytes.chunks_mut(4).enumerate() {
                let word = u32::from_str_radix(addr.get(i * 8..i * 8 + 8)?, 16).ok()?;
                chunk.copy_from_slice(&word.swap_bytes().to_be_bytes());
            }
            let v6 = Ipv6Addr::from(bytes);
            v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4)
        }
        _ => return None,
    };
    Some((ip, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    const TCP: &str = "\
  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 281212C6:24FB 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1 0 100 0 0 10 0
   1: 281212C6:24FB 140112C6:9C40 03 00000000:00000000 02:00000064 00000002     0        0 0 1 0
   2: 281212C6:0CEA 150112C6:9C41 01 00000000:00000000 00:00000000 00000000     0        0 2 1 0
   3: 140112C6:9C42 281212C6:24FB 02 00000000:00000000 01:00000064 00000000     0        0 3 1 0
";

    #[test]
    fn only_the_tables_of_the_watched_families_are_read() {
        let v4: IpAddr = "198.18.0.1".parse().unwrap();
        let v6: IpAddr = "2001:2::1".parse().unwrap();
        let t = |ips: &[IpAddr]| {
            let t = Tables::for_ips(ips);
            (t.v4, t.v6)
        };
        assert_eq!(t(&[v4]), (true, false));
        assert_eq!(t(&[v6]), (false, true));
        assert_eq!(t(&[v4, v6]), (true, true));
        assert_eq!(t(&[Ipv4Addr::UNSPECIFIED.into()]), (true, false));
        assert_eq!(t(&[Ipv6Addr::UNSPECIFIED.into()]), (true, true));
        assert_eq!(t(&[]), (true, true));
        let only4 = Tables::for_ips(&[v4]);
        let both = only4.union(Tables::for_ips(&[v6]));
        assert!(both.covers(only4) && !only4.covers(both));
        // An IPv4-only watch still sees what the IPv4 table lists.
        if std::path::Path::new("/proc/net/tcp").exists() {
            assert!(read_tables(only4, None).is_some());
        }
    }

    #[test]
    fn request_sockets_and_connections_are_read_from_the_table() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let rows = parse_table(TCP);
        assert_eq!(
            rows,
            vec![
                (
                    ip("198.18.18.40"),
                    9467,
                    "198.18.1.20:40000".parse().unwrap(),
                    HandshakeStage::Syn
                ),
                (
                    ip("198.18.18.40"),
                    3306,
                    "198.18.1.21:40001".parse().unwrap(),
                    HandshakeStage::Connected
                ),
            ]
        );
        let v6 = "  sl  local_address                         remote_address                        st\n   0: 02000120030000000000000040000000:24FB 02000120010000000000000020000000:9C40 03 0\n   1: 0000000000000000FFFF0000281212C6:24FB 0000000000000000FFFF0000140112C6:9C40 01 0\n";
        let rows = parse_table(v6);
        assert_eq!(rows[0].0, ip("2001:2:0:3::40"));
        assert_eq!(rows[0].2.ip(), ip("2001:2:0:1::20"));
        assert_eq!(rows[1].0, ip("198.18.18.40"));
        assert_eq!(rows[1].2.ip(), ip("198.18.1.20"));
    }

    /// Netlink and `/proc` agree on a live connection, stage included.
    #[cfg(target_os = "linux")]
    #[test]
    fn netlink_and_proc_read_the_same_connection() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let c = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        let row = (
            IpAddr::V4(Ipv4Addr::LOCALHOST),
            port,
            c.local_addr().unwrap(),
            HandshakeStage::Connected,
        );
        let v4 = Tables {
            v4: true,
            v6: false,
        };
        let netlink = sock_diag::read(true, false, None).expect("sock_diag on Linux");
        let proc = read_proc_tables(v4).expect("/proc/net/tcp on Linux");
        assert!(netlink.contains(&row), "{netlink:?}");
        assert!(proc.contains(&row), "{proc:?}");
    }

    #[test]
    fn the_furthest_stage_per_port_and_source_is_kept_and_the_log_is_capped() {
        let log = SynLog::default();
        let a: IpAddr = "198.18.1.20".parse().unwrap();
        log.note(9443, a, HandshakeStage::Connected);
        log.note(9443, a, HandshakeStage::Syn);
        *log.available.lock().unwrap() = Some(true);
        let snap = log.snapshot().unwrap();
        assert_eq!(snap.len(), 1);
        assert_eq!(snap[0].stage, HandshakeStage::Connected);
        for i in 0..(MAX_ENTRIES as u32 + 10) {
            log.note(1, IpAddr::V4(Ipv4Addr::from(i)), HandshakeStage::Syn);
        }
        assert_eq!(log.snapshot().unwrap().len(), MAX_ENTRIES);
        assert_eq!(SynLog::default().snapshot(), None, "never polled");
    }

    /// A real listener on loopback that never accepts: the watch sees the
    /// connection from our address as `connected` (the kernel completed the
    /// handshake), and nothing on other ports.
    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn a_connection_to_a_watched_port_is_seen_with_its_source() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let _c = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        let log = SynLog::default();
        let ports: HashSet<u16> = [port].into();
        assert!(log.poll(&["127.0.0.1".parse().unwrap()], &ports));
        let snap = log.snapshot().unwrap();
        assert!(
            snap.iter().any(|h| h.port == port
                && h.source == std::net::IpAddr::from([127, 0, 0, 1])
                && h.stage == HandshakeStage::Connected),
            "{snap:?}"
        );
        let other = SynLog::default();
        assert!(other.poll(&["127.0.0.2".parse().unwrap()], &ports));
        assert_eq!(other.snapshot(), Some(vec![]));
        // A watch started while the connection already existed leaves it
        // out: it belongs to an earlier round. (Past SHARED_READING, any
        // reading another test of this process shares was taken after the
        // connection existed.)
        std::thread::sleep(SHARED_READING + Duration::from_millis(50));
        let cancel = CancellationToken::new();
        let later = start(
            vec!["127.0.0.1".parse().unwrap()],
            vec![port],
            false,
            Instant::now() + Duration::from_secs(5),
            &cancel,
        );
        later.refresh();
        assert_eq!(later.snapshot(), Some(vec![]));
        let _c2 = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        later.refresh();
        assert_eq!(later.snapshot().unwrap().len(), 1);
        cancel.cancel();
    }
}
