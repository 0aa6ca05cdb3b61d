//! How many ICMP messages this network namespace has received, from the
//! kernel's own counters (`Icmp: InMsgs` in `/proc/net/snmp`,
//! `Icmp6InMsgs` in `/proc/net/snmp6`).
//!
//! A refused connect reads the same (`ECONNREFUSED`) whether the target's
//! stack sent a reset or something sent an ICMP port-unreachable; only the
//! socket's error queue tells them apart. A closed port of a large sweep
//! is nearly always the reset, and the queue then holds nothing: reading it
//! costs a system call for nothing on every such port. The scheduler reads
//! these counters instead, once for a batch of refused sockets it keeps
//! open: when no ICMP message reached the namespace between a reading taken
//! before the batch's sockets were opened and one after they were refused,
//! no queue of theirs can hold an ICMP error; otherwise every queue is read
//! as before. Where the counters cannot be read, every queue is read.

use std::fs::File;
use std::os::unix::fs::FileExt;

/// The two counter files, opened once per sweep (in the namespace the
/// sweep's sockets are opened in).
pub(super) struct IcmpCount {
    v4: Option<File>,
    v6: Option<File>,
    buf: Vec<u8>,
}

impl IcmpCount {
    /// The counters of this thread's network namespace; a file that cannot
    /// be opened makes [`IcmpCount::read`] say "unknown" for its family.
    pub(super) fn open() -> IcmpCount {
        IcmpCount {
            v4: File::open("/proc/thread-self/net/snmp").ok(),
            v6: File::open("/proc/thread-self/net/snmp6").ok(),
            buf: vec![0; 16 * 1024],
        }
    }

    /// ICMP (`v6`: ICMPv6) messages received so far; `None` when unknown.
    pub(super) fn read(&mut self, v6: bool) -> Option<u64> {
        if v6 {
            read_all(self.v6.as_ref()?, &mut self.buf).and_then(parse_v6)
        } else {
            read_all(self.v4.as_ref()?, &mut self.buf).and_then(parse_v4)
        }
    }
}

/// The whole file from its start (a `pread`, which makes the kernel write
/// the counters afresh).
fn read_all<'a>(file: &File, buf: &'a mut [u8]) -> Option<&'a str> {
    let mut len = 0;
    loop {
        match file.read_at(&mut buf[len..], len as u64) {
            Ok(0) => break,
            Ok(n) => len += n,
            Err(_) => return None,
        }
        if len == buf.len() {
            // Larger than any counter file: not the file expected.
            return None;
        }
    }
    std::str::from_utf8(&buf[..len]).ok()
}

/// `InMsgs` of the two `Icmp:` lines (names, then values).
fn parse_v4(text: &str) -> Option<u64> {
    let mut lines = text.lines().filter(|l| l.starts_with("Icmp: "));
    let names = lines.next()?;
    let values = lines.next()?;
    let k = names.split_whitespace().position(|n| n == "InMsgs")?;
    values.split_whitespace().nth(k)?.parse().ok()
}

/// The `Icmp6InMsgs` line's value.
fn parse_v6(text: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        let mut words = l.split_whitespace();
        (words.next()? == "Icmp6InMsgs").then_some(())?;
        words.next()?.parse().ok()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_counters_are_found_in_the_kernels_text() {
        let v4 = "Ip: Forwarding DefaultTTL\nIp: 2 64\n\
                  Icmp: InMsgs InErrors InCsumErrors\nIcmp: 351 0 0\n\
                  IcmpMsg: InType3\nIcmpMsg: 351\n";
        assert_eq!(parse_v4(v4), Some(351));
        assert_eq!(parse_v4("Ip: Forwarding\nIp: 2\n"), None);
        let v6 = "Ip6InReceives                   \t10\nIcmp6InMsgs                     \t45\n";
        assert_eq!(parse_v6(v6), Some(45));
        assert_eq!(parse_v6("Ip6InReceives 10\n"), None);
    }

    /// On Linux the files are there (and readable again and again): the
    /// scheduler relies on them.
    #[cfg(target_os = "linux")]
    #[test]
    fn this_namespaces_counters_read() {
        let mut count = IcmpCount::open();
        let first = count
            .read(false)
            .expect("the counters of a Linux namespace read");
        let second = count.read(false).expect("and read again");
        assert!(second >= first);
        if std::path::Path::new("/proc/net/snmp6").exists() {
            assert!(count.read(true).is_some());
        }
    }
}
