//! Every socket that listens on a planned port of this host, whoever holds
//! it: the canary decision's input. A canary opened beside a service that
//! listens only on loopback (or another interface's address, or the other
//! family) would answer in its place and make a path `open` that every
//! real client finds refused; so before holding a canary the agent looks
//! at the host's socket table (all addresses, both families), names the
//! process behind each socket, and leaves out its own canaries (this
//! round's, and an earlier round's still closing: known by their inodes,
//! [`CanaryMark`]), which are never a live service.
//!
//! The table is read through `NETLINK_SOCK_DIAG` (`sock_diag`), with
//! `/proc/net/{tcp,tcp6,udp,udp6}` where netlink fails; owners come from
//! `/proc/<pid>/fd` (`socket:[inode]`) and `/proc/<pid>/comm`, read within
//! a bound. Where none of it is available (not Linux), [`list`] says so and
//! the agent decides as before, from its binds alone.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::time::{Duration, Instant};

use super::sock_diag::{self, Bound};
use crate::control::{ListeningSocket, TransportProtocol};
use crate::port::Protocol;

/// The inodes of the canary sockets this process holds now, every round's
/// and every in-process agent's (the demo's): what the listing calls the
/// agent's own. Kept by [`CanaryMark`]s, so it holds only open canaries.
static CANARIES: std::sync::Mutex<std::collections::BTreeSet<u64>> =
    std::sync::Mutex::new(std::collections::BTreeSet::new());

/// Marks one canary socket as this agent's own while it is held: made
/// when the canary starts serving, dropped after its socket closes.
#[derive(Debug)]
pub struct CanaryMark(Option<u64>);

impl CanaryMark {
    /// The mark of the socket `fd` (none where its inode cannot be read:
    /// not Linux, where the listing is not available either).
    pub fn of(fd: &impl std::os::fd::AsRawFd) -> CanaryMark {
        let link = std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd()));
        let inode = link
            .ok()
            .as_ref()
            .and_then(|t| t.to_str())
            .and_then(socket_inode);
        if let Some(i) = inode {
            CANARIES.lock().unwrap_or_else(|e| e.into_inner()).insert(i);
        }
        CanaryMark(inode)
    }
}

impl Drop for CanaryMark {
    fn drop(&mut self) {
        if let Some(i) = self.0 {
            CANARIES
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&i);
        }
    }
}

/// Who holds a socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Owner {
    /// One of this agent's canaries, of this round or of an earlier one
    /// still closing (a [`CanaryMark`]). Never a live service. Any other
    /// socket of this process (a service a test runs in-process) is a
    /// [`Owner::Process`] like any other.
    Agent,
    /// Another process, by id and name.
    Process {
        /// Its id.
        pid: u32,
        /// Its name (`/proc/<pid>/comm`).
        name: String,
    },
    /// Not this process, and no process could be named (another user's
    /// without the privilege to look, or the scan's bound reached).
    Unknown,
}

/// A socket on a planned port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listener {
    /// TCP (listening) or UDP (bound without a peer).
    pub transport: TransportProtocol,
    /// Where it listens.
    pub local: SocketAddr,
    /// An IPv6 socket that takes no IPv4 connections.
    pub v6only: bool,
    /// Who holds it.
    pub owner: Owner,
}

impl Listener {
    /// Whether a connection to `ip` (at its port) reaches this socket, or
    /// binding `ip` would collide with it: the same address, the wildcard
    /// of its family, or `::` without `IPV6_V6ONLY`, which takes IPv4 too.
    /// A wildcard `ip` (the agent's canaries where the plan address is not
    /// local) collides with every socket of its family.
    pub fn covers(&self, ip: IpAddr) -> bool {
        let mine = self.local.ip();
        let mapped = match mine {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4),
            IpAddr::V4(_) => None,
        };
        if mine == ip || mapped == Some(ip) {
            return true;
        }
        let dual = mine == IpAddr::V6(Ipv6Addr::UNSPECIFIED) && !self.v6only;
        match ip {
            IpAddr::V4(v4) if v4.is_unspecified() => mine.is_ipv4() || dual || mapped.is_some(),
            IpAddr::V6(v6) if v6.is_unspecified() => mine.is_ipv6(),
            IpAddr::V4(_) => (mine.is_ipv4() && mine.is_unspecified()) || dual,
            IpAddr::V6(_) => mine.is_unspecified() && mine.is_ipv6(),
        }
    }

    /// The socket as the evidence carries it.
    pub fn to_wire(&self) -> ListeningSocket {
        let (process, pid) = match &self.owner {
            Owner::Process { pid, name } => (Some(name.clone()), Some(*pid)),
            Owner::Agent | Owner::Unknown => (None, None),
        };
        ListeningSocket {
            address: self.local,
            process,
            pid,
        }
    }
}

/// The sockets on a round's planned ports.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Listening {
    /// Every socket on a planned port, the agent's own included.
    pub sockets: Vec<Listener>,
}

impl Listening {
    /// Sockets of other processes on `port` and `transport`.
    pub fn foreign(
        &self,
        port: u16,
        transport: TransportProtocol,
    ) -> impl Iterator<Item = &Listener> {
        self.sockets.iter().filter(move |l| {
            l.local.port() == port && l.transport == transport && l.owner != Owner::Agent
        })
    }

    /// Whether one of this agent's own sockets on `port` and `transport`
    /// collides with any of `ips`: an earlier round's canary not yet
    /// closed.
    pub fn own_on(&self, ips: &[IpAddr], port: u16, transport: TransportProtocol) -> bool {
        self.sockets.iter().any(|l| {
            l.local.port() == port
                && l.transport == transport
                && l.owner == Owner::Agent
                && ips.iter().any(|ip| l.covers(*ip))
        })
    }
}

/// Why the host's sockets cannot be listed here.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum NotAvailable {
    /// Neither `sock_diag` nor `/proc/net` could be read.
    #[error("the host's socket table is not available here")]
    NoSocketTable,
}

/// How long a new round waits for an earlier round's canaries of this
/// agent to close before deciding without them.
const SETTLE: Duration = Duration::from_secs(2);

/// The host's sockets on `ports` for a new round at `ips`, read off the
/// runtime's workers; `None` where they cannot be listed (logged). An
/// earlier round of this agent whose canaries are still closing (its
/// round was just ended) is waited for, within [`SETTLE`], so that the
/// new round can hold its own canaries there.
pub(crate) async fn survey(
    ips: &[IpAddr],
    ports: impl Iterator<Item = (u16, Protocol)>,
) -> Option<Listening> {
    let wanted: HashSet<(u16, TransportProtocol)> = ports
        .map(|(port, protocol)| {
            let t = if protocol.is_tcp() {
                TransportProtocol::Tcp
            } else {
                TransportProtocol::Udp
            };
            (port, t)
        })
        .collect();
    let until = tokio::time::Instant::now() + SETTLE;
    loop {
        let w = wanted.clone();
        let listing = match tokio::task::spawn_blocking(move || list(&w)).await {
            Ok(Ok(l)) => l,
            Ok(Err(why)) => {
                tracing::info!(reason = %why, "no socket listing: canaries decided by their binds alone");
                return None;
            }
            Err(_) => return None,
        };
        let own = wanted
            .iter()
            .any(|(port, t)| listing.own_on(ips, *port, *t));
        if !own || tokio::time::Instant::now() >= until {
            return Some(listing);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Most `/proc/<pid>/fd` entries read to name the owners of one listing.
const MAX_FD_ENTRIES: usize = 200_000;
/// Longest a listing may spend naming owners.
const OWNER_SCAN: Duration = Duration::from_millis(500);

/// The sockets on `ports` (TCP listening, UDP bound), both families, all
/// addresses, each with its owner. Blocking: run it off the runtime's
/// workers.
pub fn list(ports: &HashSet<(u16, TransportProtocol)>) -> Result<Listening, NotAvailable> {
    let mut found: Vec<(TransportProtocol, Bound)> = Vec::new();
    for transport in [TransportProtocol::Tcp, TransportProtocol::Udp] {
        if !ports.iter().any(|(_, t)| *t == transport) {
            continue;
        }
        let udp = transport == TransportProtocol::Udp;
        let bound = sock_diag::read_bound(udp)
            .or_else(|| read_proc_bound(udp))
            .ok_or(NotAvailable::NoSocketTable)?;
        found.extend(
            bound
                .into_iter()
                .filter(|b| ports.contains(&(b.local.port(), transport)))
                .map(|b| (transport, b)),
        );
    }
    if found.is_empty() {
        return Ok(Listening::default());
    }
    let wanted: HashSet<u64> = found.iter().map(|(_, b)| b.inode).collect();
    let owners = owners(&wanted);
    let sockets = found
        .into_iter()
        .map(|(transport, b)| Listener {
            transport,
            local: b.local,
            v6only: b.v6only,
            owner: owners.get(&b.inode).cloned().unwrap_or(Owner::Unknown),
        })
        .collect();
    Ok(Listening { sockets })
}

/// The owners of the sockets `inodes`: this agent's canaries first (its
/// [`CanaryMark`]s), then every process's (this one's too) until all are
/// named or the bound ([`MAX_FD_ENTRIES`], [`OWNER_SCAN`]) is reached. An
/// inode not found is absent (the caller says "unknown").
fn owners(inodes: &HashSet<u64>) -> HashMap<u64, Owner> {
    let mut out = HashMap::new();
    {
        let canaries = CANARIES.lock().unwrap_or_else(|e| e.into_inner());
        for inode in inodes.iter().filter(|i| canaries.contains(i)) {
            out.insert(*inode, Owner::Agent);
        }
    }
    let started = Instant::now();
    let mut budget = MAX_FD_ENTRIES;
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return out;
    };
    for entry in dir.flatten() {
        if out.len() == inodes.len() || budget == 0 || started.elapsed() > OWNER_SCAN {
            break;
        }
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let mut hits = Vec::new();
        for inode in socket_inodes(&entry.path().join("fd"), &mut budget) {
            if inodes.contains(&inode) && !out.contains_key(&inode) {
                hits.push(inode);
            }
        }
        if hits.is_empty() {
            continue;
        }
        // A process that exited meanwhile, or whose name cannot be read,
        // is still not our canary: unknown.
        let owner = std::fs::read_to_string(entry.path().join("comm"))
            .ok()
            .map(|n| n.trim_end_matches('\n').to_string())
            .filter(|n| !n.is_empty())
            .map_or(Owner::Unknown, |name| Owner::Process { pid, name });
        for inode in hits {
            out.insert(inode, owner.clone());
        }
    }
    out
}

/// The socket inodes among the descriptors in `fd_dir`, reading at most
/// `budget` entries (decremented); nothing when it cannot be read.
fn socket_inodes(fd_dir: &std::path::Path, budget: &mut usize) -> Vec<u64> {
    let Ok(dir) = std::fs::read_dir(fd_dir) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for entry in dir.flatten() {
        if *budget == 0 {
            break;
        }
        *budget -= 1;
        if let Some(inode) = std::fs::read_link(entry.path())
            .ok()
            .as_ref()
            .and_then(|t| t.to_str())
            .and_then(socket_inode)
        {
            out.push(inode);
        }
    }
    out
}

/// The inode of a descriptor's link text `socket:[12345]`.
fn socket_inode(link: &str) -> Option<u64> {
    link.strip_prefix("socket:[")?
        .strip_suffix(']')?
        .parse()
        .ok()
}

/// [`sock_diag::read_bound`] from `/proc/net/{tcp,tcp6}` (`udp`:
/// `{udp,udp6}`). `/proc` does not show `IPV6_V6ONLY`: a `::` socket is
/// taken as dual-stack when `net.ipv6.bindv6only` is 0 (the default, and
/// what a socket that sets nothing gets). `None` when no table is readable.
fn read_proc_bound(udp: bool) -> Option<Vec<Bound>> {
    let (files, state) = if udp {
        (["/proc/net/udp", "/proc/net/udp6"], "07")
    } else {
        (["/proc/net/tcp", "/proc/net/tcp6"], "0A")
    };
    let v6only =
        std::fs::read_to_string("/proc/sys/net/ipv6/bindv6only").is_ok_and(|s| s.trim() == "1");
    let mut any = false;
    let mut out = Vec::new();
    for file in files {
        if let Ok(text) = std::fs::read_to_string(file) {
            any = true;
            out.extend(parse_proc_bound(&text, state, v6only));
        }
    }
    any.then_some(out)
}

/// The sockets in state `state` (hex, as the table prints it) of one
/// `/proc/net` socket table.
fn parse_proc_bound(text: &str, state: &str, v6only: bool) -> Vec<Bound> {
    let mut out = Vec::new();
    for line in text.lines().skip(1) {
        let f: Vec<&str> = line.split_whitespace().collect();
        // sl local rem st tx:rx tr:when retrnsmt uid timeout inode
        let (Some(local), Some(st), Some(inode)) = (f.get(1), f.get(3), f.get(9)) else {
            continue;
        };
        if !st.eq_ignore_ascii_case(state) {
            continue;
        }
        let (Some(local), Ok(inode)) = (proc_endpoint(local), inode.parse::<u64>()) else {
            continue;
        };
        out.push(Bound {
            local,
            v6only: v6only && local.is_ipv6(),
            inode,
        });
    }
    out
}

/// `0100007F:0CEA` (IPv4) or 32 hex digits and a port (IPv6), the address
/// printed as native-endian 32-bit words. Unlike the handshake watch's
/// reading, a v4-mapped IPv6 address stays IPv6: a listener's family
/// decides what it takes.
fn proc_endpoint(s: &str) -> Option<SocketAddr> {
    let (addr, port) = s.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    let ip = match addr.len() {
        8 => IpAddr::V4(u32::from_str_radix(addr, 16).ok()?.swap_bytes().into()),
        32 => {
            let mut bytes = [0u8; 16];
            for (i, chunk) in bytes.chunks_mut(4).enumerate() {
                let word = u32::from_str_radix(addr.get(i * 8..i * 8 + 8)?, 16).ok()?;
                chunk.copy_from_slice(&word.swap_bytes().to_be_bytes());
            }
            IpAddr::V6(Ipv6Addr::from(bytes))
        }
        _ => return None,
    };
    Some(SocketAddr::new(ip, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(addr: &str, v6only: bool) -> Listener {
        Listener {
            transport: TransportProtocol::Tcp,
            local: addr.parse().unwrap(),
            v6only,
            owner: Owner::Unknown,
        }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn a_socket_covers_its_address_its_wildcard_and_a_dual_stack_wildcard_takes_ipv4() {
        let plan4 = ip("198.18.0.42");
        let plan6 = ip("2001:2::42");
        // (socket, v6only, covers plan4, covers plan6)
        let table = [
            ("198.18.0.42:3307", false, true, false),
            ("127.0.0.1:3307", false, false, false),
            ("198.18.200.42:3307", false, false, false),
            ("0.0.0.0:3307", false, true, false),
            ("[::]:3307", false, true, true),
            ("[::]:3307", true, false, true),
            ("[::1]:3307", false, false, false),
            ("[2001:2::42]:3307", true, false, true),
            ("[::ffff:198.18.0.42]:3307", false, true, false),
        ];
        for (sock, v6only, c4, c6) in table {
            let l = at(sock, v6only);
            assert_eq!(l.covers(plan4), c4, "{sock} v6only={v6only} on {plan4}");
            assert_eq!(l.covers(plan6), c6, "{sock} v6only={v6only} on {plan6}");
        }
        // A wildcard canary address collides with every socket of its
        // family.
        assert!(at("127.0.0.1:3307", false).covers(ip("0.0.0.0")));
        assert!(!at("[::1]:3307", true).covers(ip("0.0.0.0")));
        assert!(at("[::1]:3307", true).covers(ip("::")));
    }

    #[test]
    fn proc_tables_give_listeners_with_their_inodes_and_v6only_from_the_sysctl() {
        let tcp = "\
  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:33C5 00000000:0000 0A 00000000:00000000 00:00000000 00000000   104        0 4242 1 0 100 0 0 10 0
   1: 2A0012C6:33C5 290012C6:9C40 01 00000000:00000000 02:00000064 00000002     0        0 4243 1 0
";
        let got = parse_proc_bound(tcp, "0A", false);
        assert_eq!(
            got,
            [Bound {
                local: "127.0.0.1:13253".parse().unwrap(),
                v6only: false,
                inode: 4242,
            }]
        );
        let tcp6 = "\
  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000000000000000000000000000:33C5 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 77 1 0 100 0 0 10 0
";
        let got = parse_proc_bound(tcp6, "0A", true);
        assert_eq!(got[0].local, "[::]:13253".parse().unwrap());
        assert!(
            got[0].v6only,
            "bindv6only=1 makes every IPv6 socket IPv6-only"
        );
        assert!(!parse_proc_bound(tcp6, "0A", false)[0].v6only);
        assert_eq!(socket_inode("socket:[77]"), Some(77));
        assert_eq!(socket_inode("pipe:[77]"), None);
        assert_eq!(socket_inode("/dev/null"), None);
    }

    /// On Linux the listing finds our own canary (marked: the agent's),
    /// and another process's listener, named by its `comm`, with the
    /// IPv6-only flag read from the kernel.
    #[cfg(target_os = "linux")]
    #[test]
    fn the_listing_tells_our_own_sockets_from_another_process_and_names_it() {
        use std::io::BufRead;
        let ours = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let our_port = ours.local_addr().unwrap().port();
        let mark = CanaryMark::of(&ours);
        // Another process: python3 listening on an IPv6-only loopback
        // socket (or IPv4 where there is no IPv6), saying its port.
        let script = "import socket,sys,time\n\
try:\n s=socket.socket(socket.AF_INET6); s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1); s.bind(('::1',0))\n\
except OSError:\n s=socket.socket(); s.bind(('127.0.0.1',0))\n\
s.listen(1); print(s.getsockname()[1], flush=True); sys.stdin.read(); time.sleep(0)\n";
        let Ok(mut child) = std::process::Command::new("python3")
            .args(["-c", script])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
        else {
            // No python3 here: no other process to list.
            return;
        };
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let their_port: u16 = line.trim().parse().unwrap();
        let wanted: HashSet<_> = [
            (our_port, TransportProtocol::Tcp),
            (their_port, TransportProtocol::Tcp),
        ]
        .into();
        let listing = list(&wanted).expect("a socket table on Linux");
        drop(child.stdin.take());
        let _ = child.wait();
        let mine: Vec<_> = listing
            .sockets
            .iter()
            .filter(|l| l.local.port() == our_port)
            .collect();
        assert_eq!(mine.len(), 1, "{listing:?}");
        assert_eq!(mine[0].owner, Owner::Agent, "a marked canary");
        assert_eq!(listing.foreign(our_port, TransportProtocol::Tcp).count(), 0);
        assert!(listing.own_on(&[ip("127.0.0.1")], our_port, TransportProtocol::Tcp));
        let theirs: Vec<_> = listing
            .foreign(their_port, TransportProtocol::Tcp)
            .collect();
        assert_eq!(theirs.len(), 1, "{listing:?}");
        match &theirs[0].owner {
            Owner::Process { name, .. } => assert!(name.starts_with("python"), "{name}"),
            other => panic!("not named: {other:?}"),
        }
        if theirs[0].local.is_ipv6() {
            assert!(theirs[0].v6only, "{:?}", theirs[0]);
        }
        // Nothing of the other protocol was asked for, nor listed.
        assert!(
            listing
                .sockets
                .iter()
                .all(|l| l.transport == TransportProtocol::Tcp)
        );
        // Unmarked, the same socket is this process's like any service's.
        drop(mark);
        let listing = list(&wanted).expect("a socket table on Linux");
        let me = listing
            .foreign(our_port, TransportProtocol::Tcp)
            .next()
            .expect("listed");
        assert!(
            matches!(&me.owner, Owner::Process { pid, .. } if *pid == std::process::id()),
            "{me:?}"
        );
        drop(ours);
    }
}
