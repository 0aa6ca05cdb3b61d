//! The plan digest, taken one path at a time, so that an agent holding
//! only its own paths still fingerprints the whole plan.

use std::fmt::Write;

use super::defaults::Defaults;
use super::host::Host;
use super::path::PathView;

/// FNV-1a over the digest's text, fed as it is written.
pub(crate) struct Digest(u64);

impl Write for Digest {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        for b in s.bytes() {
            self.0 ^= u64::from(b);
            self.0 = self.0.wrapping_mul(0x0000_0100_0000_01b3);
        }
        Ok(())
    }
}

impl Digest {
    /// The plan's name, defaults and hosts; the paths follow.
    pub(crate) fn start(name: &str, d: &Defaults, hosts: &[Host]) -> Digest {
        let mut s = Digest(0xcbf2_9ce4_8422_2325);
        let _ = writeln!(
            s,
            "{}|{}|{}|{}",
            name, d.timeout_ms, d.retries, d.control_port
        );
        // Only when set, so that plans without it keep their digest.
        if !d.adaptive {
            let _ = s.write_str("fixed-timeouts\n");
        }
        for h in hosts {
            let _ = write!(s, "H|{}|{}", h.name, h.address);
            // Further addresses only when there are any, so a single-address
            // plan keeps the digest it always had.
            for a in h.addresses.iter().skip(1) {
                let _ = write!(s, "|+{a}");
            }
            for p in &h.ports {
                let _ = write!(
                    s,
                    "|{}:{}:{}:{}",
                    p.name,
                    p.port,
                    p.protocol.as_str(),
                    p.role
                );
            }
            let _ = s.write_char('\n');
        }
        s
    }

    /// One path, in plan order.
    pub(crate) fn path(&mut self, p: &PathView<'_>) {
        let _ = writeln!(
            self,
            "P|{}|{}|{}|{}|{}|{}|{}|{}",
            p.from,
            p.to,
            p.address,
            p.port,
            p.service,
            p.protocol.as_str(),
            p.expect,
            p.role.unwrap_or("-")
        );
    }

    /// As lowercase hex.
    pub(crate) fn finish(self) -> String {
        format!("{:016x}", self.0)
    }
}
