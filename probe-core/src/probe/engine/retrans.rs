//! How many TCP segments other than SYNs and SYN-ACKs this network
//! namespace has resent (`RetransSegs` of `/proc/net/snmp` less
//! `TCPSynRetrans` of `/proc/net/netstat`, the kernel's own counters), and
//! how many it sent (`OutSegs`).
//!
//! A silent port on a host that answers others is a firewall's drop or
//! packet loss. The sweep spends its loss retries on it only where loss
//! has shown ([`super::retry::Decision::AwaitLoss`]). A host's own ports
//! show it when one answers only after silence; this counter shows it for
//! the whole namespace: a data segment is resent only when one was lost
//! (or its acknowledgement was), on any connection of the namespace, the
//! sweep's exchanges and the agent's control channel included. SYNs are
//! left out: a sweep's own attempts at dropped ports resend theirs when
//! they outlive the kernel's first SYN timer, and prove nothing. A load
//! that delays answers (a starved agent) resends few of these, as the
//! kernel acknowledges what arrives whatever its applications do: a
//! hundred agents on two cores resent up to 0.25% of their segments with
//! no packet lost, so loss counts from [`LOSS_SHARE`] on. Below it, two
//! attempts at an open port are lost together well under once in ten
//! thousand.

use std::fs::File;

use super::icmp_count::read_all;

/// The share of a namespace's sent segments that, resent, shows loss: 1%.
pub(super) const LOSS_SHARE: (u64, u64) = (1, 100);

/// Resent data segments and all sent segments, as counted at one instant.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Segments {
    pub(super) resent: u64,
    pub(super) sent: u64,
}

impl Segments {
    /// Whether more than [`LOSS_SHARE`] of the segments sent since `start`
    /// were resent data.
    pub(super) fn lossy_since(self, start: Segments) -> bool {
        let resent = self.resent.saturating_sub(start.resent);
        let sent = self.sent.saturating_sub(start.sent);
        resent > 0 && resent.saturating_mul(LOSS_SHARE.1) > sent.saturating_mul(LOSS_SHARE.0)
    }
}

/// The two counter files, opened once per sweep (in the namespace the
/// sweep's sockets are opened in).
pub(super) struct DataRetrans {
    snmp: Option<File>,
    netstat: Option<File>,
    buf: Vec<u8>,
}

impl DataRetrans {
    /// The counters of this thread's network namespace; a file that cannot
    /// be opened makes [`DataRetrans::read`] say "unknown".
    pub(super) fn open() -> DataRetrans {
        DataRetrans {
            snmp: File::open("/proc/thread-self/net/snmp").ok(),
            netstat: File::open("/proc/thread-self/net/netstat").ok(),
            buf: vec![0; 16 * 1024],
        }
    }

    /// Segments other than SYNs and SYN-ACKs resent so far, and segments
    /// sent; `None` when unknown.
    pub(super) fn read(&mut self) -> Option<Segments> {
        let (all, sent) = read_all(self.snmp.as_ref()?, &mut self.buf).and_then(|t| {
            Some((
                named_value(t, "Tcp: ", "RetransSegs")?,
                named_value(t, "Tcp: ", "OutSegs")?,
            ))
        })?;
        let syn = read_all(self.netstat.as_ref()?, &mut self.buf)
            .and_then(|t| named_value(t, "TcpExt: ", "TCPSynRetrans"))?;
        Some(Segments {
            resent: all.saturating_sub(syn),
            sent,
        })
    }
}

/// The value named `name` in the two lines starting with `prefix` (names,
/// then values), as `/proc/net/snmp` and `/proc/net/netstat` write them.
fn named_value(text: &str, prefix: &str, name: &str) -> Option<u64> {
    let mut lines = text.lines().filter(|l| l.starts_with(prefix));
    let names = lines.next()?;
    let values = lines.next()?;
    let k = names.split_whitespace().position(|n| n == name)?;
    values.split_whitespace().nth(k)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_counters_are_found_in_the_kernels_text() {
        let snmp = "Tcp: RtoAlgorithm RtoMin RetransSegs InErrs\nTcp: 1 200 97 0\n\
                    Udp: InDatagrams\nUdp: 5\n";
        assert_eq!(named_value(snmp, "Tcp: ", "RetransSegs"), Some(97));
        let netstat = "TcpExt: SyncookiesSent TCPSynRetrans\nTcpExt: 0 40\n\
                       IpExt: InNoRoutes\nIpExt: 0\n";
        assert_eq!(named_value(netstat, "TcpExt: ", "TCPSynRetrans"), Some(40));
        assert_eq!(named_value(netstat, "TcpExt: ", "Missing"), None);
        assert_eq!(
            named_value("Ip: Forwarding\nIp: 2\n", "Tcp: ", "RetransSegs"),
            None
        );
    }

    /// Loss counts from more than 1% of the segments sent since the start.
    #[test]
    fn loss_is_a_share_of_the_segments_sent_since_the_start() {
        let start = Segments {
            resent: 50,
            sent: 1000,
        };
        let at = |resent, sent| Segments { resent, sent };
        assert!(!at(50, 1000).lossy_since(start));
        assert!(!at(50, 5000).lossy_since(start));
        // 24 of 10,000: a loaded mesh without loss.
        assert!(!at(74, 11_000).lossy_since(start));
        assert!(!at(150, 11_000).lossy_since(start));
        assert!(at(151, 11_000).lossy_since(start));
        // A third of a lossy link's segments.
        assert!(at(350, 2000).lossy_since(start));
        // Counters that went backwards (a namespace that changed) are no loss.
        assert!(!at(10, 100).lossy_since(start));
    }

    /// On Linux the files are there and read again and again: the sweep
    /// relies on them, and treats "unknown" as loss.
    #[cfg(target_os = "linux")]
    #[test]
    fn this_namespaces_counters_read() {
        let mut count = DataRetrans::open();
        let first = count
            .read()
            .expect("the counters of a Linux namespace read");
        let second = count.read().expect("and read again");
        // Other tests' connections may send and resend meanwhile; never fewer.
        assert!(second.resent >= first.resent && second.sent >= first.sent);
    }
}
