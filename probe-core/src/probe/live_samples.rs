//! Schedule mode's quality samples of a live UDP service: the request
//! portcall proves the service with ([`ServiceRequest`]), repeated, each
//! with a fresh id, one every [`INTERVAL`] on one connected socket; an
//! answer counts for the sample whose id it carries (DNS id), so a late
//! answer is its own sample's, never the next one's.
//!
//! Only DNS is sampled ([`sampled_service`]): an NTP server rate-limits a
//! client asking many times a second (its silence would be our own
//! artefact, not the path's loss), and an SNMP agent is a device's CPU,
//! not a service to load. No target agent can count what arrived: the
//! datagrams are the service's own protocol, indistinguishable at the
//! target from the source host's other queries, so a UDP path has sent
//! and answered only.

use std::net::{IpAddr, SocketAddr};

use tokio::net::UdpSocket;
use tokio::time::{Instant, sleep_until};

use super::samples::{INTERVAL, MAX_REPLY_WAIT, SampleRequest, SampleTally, clamp};
use super::udp_service::{ServiceRequest, UdpOptions, UdpService};

/// The live UDP service schedule mode samples on `port`, if any: DNS only.
pub fn sampled_service(port: u16) -> Option<UdpService> {
    (UdpService::for_port(port, &UdpOptions::default()) == UdpService::Dns)
        .then_some(UdpService::Dns)
}

/// Takes `req.samples` samples of the live DNS service at `req.target`
/// (`req.round` and `req.nonce` are not used). Returns the tally and the
/// answered samples' round trips in microseconds, in sample order.
pub async fn udp_service_samples(req: &SampleRequest) -> (SampleTally, Vec<u64>) {
    let n = clamp(req.samples);
    let socket = match socket(req.target, req.source) {
        Ok(s) => s,
        Err(e) => {
            let mut t = SampleTally::of(n, 0, &[]);
            t.error = Some(e.to_string());
            return (t, Vec::new());
        }
    };
    let wait = req.timeout.min(MAX_REPLY_WAIT);
    // Each sample's request and when it left.
    let mut out: Vec<(ServiceRequest, Instant)> = Vec::with_capacity(n as usize);
    let mut rtts: Vec<Option<u64>> = vec![None; n as usize];
    let mut next = Instant::now();
    let mut buf = [0u8; 4096];
    let mut error = None;
    let mut last_read = req.deadline;
    loop {
        // A query is sent only with its answer's wait still before the
        // deadline: one sent at the last moment would be lost by our own
        // clock, not by the path.
        let sending = out.len() < n as usize && next + wait <= req.deadline;
        if !sending && last_read == req.deadline {
            last_read = (Instant::now() + wait).min(req.deadline);
        }
        let until = if sending { next } else { last_read };
        tokio::select! {
            () = sleep_until(until) => {
                if !sending {
                    break;
                }
                let r = ServiceRequest::dns();
                match socket.try_send(&r.payload) {
                    Ok(_) => out.push((r, Instant::now())),
                    // Not sent (a full buffer, a queued ICMP error): not
                    // counted, tried again at the next tick.
                    Err(e) => {
                        error.get_or_insert_with(|| format!("send: {e}"));
                    }
                }
                next += INTERVAL;
            }
            got = socket.recv(&mut buf) => {
                let Ok(len) = got else { continue };
                let now = Instant::now();
                let reply = &buf[..len];
                let found = out
                    .iter()
                    .enumerate()
                    .find(|(k, (r, _))| rtts[*k].is_none() && r.check(reply).is_some());
                if let Some((k, (_, at))) = found {
                    rtts[k] = Some(u64::try_from((now - *at).as_micros()).unwrap_or(u64::MAX));
                }
            }
        }
    }
    let sent = u32::try_from(out.len()).unwrap_or(u32::MAX);
    let in_order: Vec<u64> = rtts.into_iter().flatten().collect();
    let mut t = SampleTally::of(n, sent, &in_order);
    t.error = error;
    (t, in_order)
}

/// A UDP socket bound to `source` (when of the target's family) and
/// connected to `target`.
fn socket(target: SocketAddr, source: Option<IpAddr>) -> std::io::Result<UdpSocket> {
    let socket = std::net::UdpSocket::bind(match source {
        Some(s) if s.is_ipv4() == target.is_ipv4() => SocketAddr::new(s, 0),
        _ if target.is_ipv4() => SocketAddr::from(([0, 0, 0, 0], 0)),
        _ => SocketAddr::from((std::net::Ipv6Addr::UNSPECIFIED, 0)),
    })?;
    socket.connect(target)?;
    socket.set_nonblocking(true)?;
    UdpSocket::from_std(socket)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// A DNS server stand-in on loopback that answers every query except
    /// every fourth it receives, each answer carrying its query's id.
    async fn dns_answering() -> SocketAddr {
        let s = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = s.local_addr().unwrap();
        tokio::spawn(async move {
            let mut buf = [0u8; 512];
            let mut k = 0u32;
            while let Ok((n, peer)) = s.recv_from(&mut buf).await {
                k += 1;
                if k % 4 == 0 || n < 12 {
                    continue;
                }
                let mut a = buf[..n].to_vec();
                a[2] |= 0x80; // a response
                let _ = s.send_to(&a, peer).await;
            }
        });
        addr
    }

    #[tokio::test]
    async fn dns_samples_count_each_answer_for_its_own_query() {
        let target = dns_answering().await;
        let req = SampleRequest {
            round: String::new(),
            nonce: String::new(),
            target,
            source: None,
            samples: 40,
            timeout: Duration::from_millis(200),
            deadline: Instant::now() + Duration::from_secs(10),
        };
        let (t, rtts) = udp_service_samples(&req).await;
        assert_eq!((t.samples, t.sent, t.answered), (40, 40, 30), "{t:?}");
        assert_eq!(rtts.len(), 30);
        assert!(t.rtt_us.is_some() && t.jitter_us.is_some(), "{t:?}");
    }

    #[test]
    fn only_dns_is_sampled() {
        assert_eq!(sampled_service(53), Some(UdpService::Dns));
        assert_eq!(sampled_service(123), None, "NTP servers rate-limit");
        assert_eq!(sampled_service(161), None);
        assert_eq!(sampled_service(5000), None);
    }
}
