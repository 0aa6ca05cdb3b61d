//! Port numbers as types, so that offset arithmetic and ranges can never wrap
//! silently past 65535 or land on port 0.

use std::fmt;
use std::num::NonZeroU16;

use serde::{Serialize, Serializer};

/// A TCP port number, 1..=65535. Port 0 means "any" to the OS and is never a
/// meaningful probe or listener target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Port(NonZeroU16);

/// Why a number could not become a [`Port`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PortError {
    /// The number was 0, which is not a port one can probe or listen on.
    #[error("port 0 is not a usable port (expected 1..=65535)")]
    Zero,
    /// The number was above 65535.
    #[error("port {0} is above 65535")]
    TooLarge(u64),
    /// The number was negative.
    #[error("port {0} is negative (expected 1..=65535)")]
    Negative(i64),
}

impl Port {
    /// The highest port number.
    pub const MAX: Port = Port(NonZeroU16::MAX);

    /// A port from a raw `u16`; `None` for 0.
    pub const fn new(n: u16) -> Option<Port> {
        match NonZeroU16::new(n) {
            Some(p) => Some(Port(p)),
            None => None,
        }
    }

    /// A port from any integer a config file may hold, with the reason it is
    /// out of range.
    pub fn from_i64(n: i64) -> Result<Port, PortError> {
        if n < 0 {
            return Err(PortError::Negative(n));
        }
        Port::from_u64(n as u64)
    }

    /// A port from an unsigned integer, with the reason it is out of range.
    pub fn from_u64(n: u64) -> Result<Port, PortError> {
        if n == 0 {
            return Err(PortError::Zero);
        }
        let n16 = u16::try_from(n).map_err(|_| PortError::TooLarge(n))?;
        Ok(Port::new(n16).expect("checked non-zero above"))
    }

    /// The number itself.
    pub const fn get(self) -> u16 {
        self.0.get()
    }

    /// `self + offset`, or the out-of-range sum when it passes 65535.
    pub fn checked_offset(self, offset: u16) -> Result<Port, u32> {
        let sum = u32::from(self.get()) + u32::from(offset);
        u16::try_from(sum).ok().and_then(Port::new).ok_or(sum)
    }
}

impl fmt::Display for Port {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl Serialize for Port {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u16(self.get())
    }
}

/// An inclusive range of ports, `start..=end`, whose iteration stops at
/// 65535 instead of overflowing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortRange {
    start: Port,
    end: Port,
}

impl PortRange {
    /// A range; `None` when `end < start`.
    pub fn new(start: Port, end: Port) -> Option<PortRange> {
        (start <= end).then_some(PortRange { start, end })
    }

    /// The first port.
    pub fn start(&self) -> Port {
        self.start
    }

    /// The last port (inclusive).
    pub fn end(&self) -> Port {
        self.end
    }

    /// How many ports the range holds (at least 1).
    pub fn len(&self) -> usize {
        usize::from(self.end.get() - self.start.get()) + 1
    }

    /// Always false: a range holds at least one port. Present for clippy's
    /// `len_without_is_empty`.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// Every port in the range, in order.
    pub fn iter(&self) -> impl Iterator<Item = Port> + use<> {
        (self.start.get()..=self.end.get()).filter_map(Port::new)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn zero_and_too_large_are_rejected() {
        assert_eq!(Port::from_i64(0), Err(PortError::Zero));
        assert_eq!(Port::from_i64(65536), Err(PortError::TooLarge(65536)));
        assert_eq!(Port::from_i64(-1), Err(PortError::Negative(-1)));
        assert_eq!(Port::from_i64(65535).unwrap(), Port::MAX);
    }

    #[test]
    fn range_ending_at_65535_iterates_without_overflow() {
        let r = PortRange::new(Port::new(65530).unwrap(), Port::MAX).unwrap();
        let v: Vec<u16> = r.iter().map(Port::get).collect();
        assert_eq!(v, vec![65530, 65531, 65532, 65533, 65534, 65535]);
        assert_eq!(r.len(), 6);
    }

    proptest! {
        #[test]
        fn offset_is_exact_or_reports_the_true_sum(p in 1u16.., off in 0u16..) {
            let port = Port::new(p).unwrap();
            let sum = u32::from(p) + u32::from(off);
            match port.checked_offset(off) {
                Ok(q) => { prop_assert!(sum <= 65535); prop_assert_eq!(u32::from(q.get()), sum); }
                Err(s) => { prop_assert!(sum > 65535); prop_assert_eq!(s, sum); }
            }
        }

        #[test]
        fn range_len_matches_iteration(a in 1u16.., b in 1u16..) {
            let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
            let r = PortRange::new(Port::new(lo).unwrap(), Port::new(hi).unwrap()).unwrap();
            prop_assert_eq!(r.iter().count(), r.len());
            prop_assert_eq!(r.iter().next().unwrap().get(), lo);
            prop_assert_eq!(r.iter().last().unwrap().get(), hi);
            prop_assert!(PortRange::new(Port::new(hi).unwrap(), Port::new(lo).unwrap()).is_some() == (lo == hi));
        }

        #[test]
        fn from_i64_accepts_exactly_1_to_65535(n in -100_000i64..100_000) {
            prop_assert_eq!(Port::from_i64(n).is_ok(), (1..=65535).contains(&n));
        }
    }
}

/// How a port is spoken to: a bare TCP handshake, TCP followed by a TLS
/// handshake, or UDP datagrams (which prove nothing without an answer).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// A TCP handshake is the whole probe.
    #[default]
    Tcp,
    /// TCP, then a TLS client handshake.
    Tls,
    /// UDP: a datagram out, and `open` only on an answer that proves it
    /// arrived (a canary's line, or a valid reply of a service portcall
    /// knows); see `probe::udp`.
    Udp,
}

impl Protocol {
    /// The lowercase name used in plans, targets and reports.
    pub const fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Tls => "tls",
            Protocol::Udp => "udp",
        }
    }
}

impl Protocol {
    /// True for the protocols carried over TCP (`tcp`, `tls`).
    pub const fn is_tcp(self) -> bool {
        matches!(self, Protocol::Tcp | Protocol::Tls)
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
