//! Maps the operating system's answer to a connect attempt onto the outcome
//! taxonomy, by raw errno only: message text differs between libc versions
//! and locales, errno values do not.

use std::io;

use super::outcome::Observed;

/// How one failed connect attempt is to be treated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectClass {
    /// Evidence about the path; final unless it is a timeout with retries
    /// left.
    Network(Observed),
    /// The prober ran out of something (descriptors, buffers, ephemeral
    /// ports). Worth trying again after a pause; never evidence.
    LocalTransient,
    /// The prober cannot try at all (e.g. an unknown errno, a source address
    /// that is not local). Reported as `local-error` without retrying.
    LocalPermanent,
}

/// Classifies an error returned by `connect` (including the `SO_ERROR` a
/// non-blocking connect reports, which carries ICMP errors).
pub fn classify_connect_error(err: &io::Error) -> ConnectClass {
    match err.raw_os_error() {
        Some(code) => classify_errno(code),
        None if err.kind() == io::ErrorKind::TimedOut => ConnectClass::Network(Observed::Timeout),
        None => ConnectClass::LocalPermanent,
    }
}

/// Classifies a raw errno from `connect`.
pub fn classify_errno(code: i32) -> ConnectClass {
    match code {
        libc::ECONNREFUSED => ConnectClass::Network(Observed::Refused),
        libc::EHOSTUNREACH | libc::ENETUNREACH | libc::EACCES | libc::EPERM | libc::EHOSTDOWN => {
            ConnectClass::Network(Observed::Unreachable)
        }
        // The kernel gave up on its own SYN retransmissions before our
        // deadline: silence all the same.
        libc::ETIMEDOUT => ConnectClass::Network(Observed::Timeout),
        libc::EMFILE | libc::ENFILE | libc::EADDRNOTAVAIL | libc::ENOBUFS | libc::ENOMEM => {
            ConnectClass::LocalTransient
        }
        _ => ConnectClass::LocalPermanent,
    }
}

/// The one definition of a local denial: the source host's own firewall
/// refused the packet before it left (netfilter's `reject` or `drop` in the
/// output path makes `connect` fail with `EPERM`; an ICMPv6
/// administratively-prohibited answer is `EACCES`). The join, blame and
/// suggest all ask this, never the detail text.
pub fn is_local_denial(errno: Option<i32>) -> bool {
    matches!(errno, Some(libc::EPERM | libc::EACCES))
}

/// A short stable name for an errno, for the `detail` column; the numeric
/// value for ones without a name here.
pub fn errno_name(code: i32) -> String {
    errno_static_name(code).map_or_else(|| format!("os error {code}"), str::to_string)
}

/// The name [`errno_name`] gives an errno, when it has one of its own.
pub fn errno_static_name(code: i32) -> Option<&'static str> {
    Some(match code {
        libc::ECONNREFUSED => "ECONNREFUSED (connection refused)",
        libc::EHOSTUNREACH => "EHOSTUNREACH (no route to host)",
        libc::ENETUNREACH => "ENETUNREACH (network unreachable)",
        libc::EACCES => "EACCES (permission denied)",
        libc::EPERM => "EPERM (operation not permitted)",
        libc::EHOSTDOWN => "EHOSTDOWN (host is down)",
        libc::ETIMEDOUT => "ETIMEDOUT (kernel connect timeout)",
        libc::EMFILE => "EMFILE (too many open files in the prober)",
        libc::ENFILE => "ENFILE (system file table full)",
        libc::EADDRNOTAVAIL => "EADDRNOTAVAIL (local address or ephemeral port not available)",
        libc::ENOBUFS => "ENOBUFS (no buffer space)",
        libc::ENOMEM => "ENOMEM (out of memory)",
        libc::EADDRINUSE => "EADDRINUSE (local address in use)",
        libc::EAFNOSUPPORT => "EAFNOSUPPORT (address family not supported)",
        libc::ENETDOWN => "ENETDOWN (network is down)",
        libc::ECONNRESET => "ECONNRESET (connection reset)",
        _ => return None,
    })
}

/// The detail text for an I/O error: its errno name when there is one.
pub fn error_detail(err: &io::Error) -> String {
    match err.raw_os_error() {
        Some(code) => errno_name(code),
        None => err.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errnos_map_to_the_taxonomy() {
        let net = |o| ConnectClass::Network(o);
        let cases = [
            (libc::ECONNREFUSED, net(Observed::Refused)),
            (libc::EHOSTUNREACH, net(Observed::Unreachable)),
            (libc::ENETUNREACH, net(Observed::Unreachable)),
            (libc::EACCES, net(Observed::Unreachable)),
            (libc::EPERM, net(Observed::Unreachable)),
            (libc::EHOSTDOWN, net(Observed::Unreachable)),
            (libc::ETIMEDOUT, net(Observed::Timeout)),
            (libc::EMFILE, ConnectClass::LocalTransient),
            (libc::ENFILE, ConnectClass::LocalTransient),
            (libc::EADDRNOTAVAIL, ConnectClass::LocalTransient),
            (libc::ENOBUFS, ConnectClass::LocalTransient),
            (libc::EINVAL, ConnectClass::LocalPermanent),
        ];
        for (code, want) in cases {
            let err = io::Error::from_raw_os_error(code);
            assert_eq!(classify_connect_error(&err), want, "errno {code}");
        }
    }

    #[test]
    fn message_text_is_never_consulted() {
        // An error whose text says "refused" but carries no errno is not
        // evidence of anything.
        let err = io::Error::other("connection refused");
        assert_eq!(classify_connect_error(&err), ConnectClass::LocalPermanent);
        let err = io::Error::new(io::ErrorKind::TimedOut, "x");
        assert_eq!(
            classify_connect_error(&err),
            ConnectClass::Network(Observed::Timeout)
        );
    }

    #[test]
    fn local_failures_are_never_evidence() {
        for code in [
            libc::EMFILE,
            libc::ENFILE,
            libc::EADDRNOTAVAIL,
            libc::ENOBUFS,
        ] {
            assert!(!matches!(classify_errno(code), ConnectClass::Network(_)));
        }
        assert!(errno_name(libc::EMFILE).starts_with("EMFILE"));
        assert_eq!(errno_name(9999), "os error 9999");
    }
}
