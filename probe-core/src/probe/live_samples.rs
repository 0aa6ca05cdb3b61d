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

use std::sync::Mutex;

use super::samples::{
    MAX_REPLY_WAIT, PacedUdp, SampleRequest, SampleTally, clamp, paced_udp, udp_socket,
};
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
    let socket = match udp_socket(req.target, req.source) {
        Ok(s) => s,
        Err(e) => {
            let mut t = SampleTally::of(n, 0, &[]);
            t.error = Some(e.to_string());
            return (t, Vec::new());
        }
    };
    let wait = req.timeout.min(MAX_REPLY_WAIT);
    // Each sample's query (its id is how its answer is known).
    let queries: Mutex<Vec<ServiceRequest>> = Mutex::new(Vec::with_capacity(n as usize));
    let paced = paced_udp(
        &socket,
        PacedUdp {
            samples: n,
            wait,
            deadline: req.deadline,
            reply_len: 4096,
        },
        // A query is sent only with its answer's wait still before the
        // deadline: one sent at the last moment would be lost by our own
        // clock, not by the path.
        |next| next + wait <= req.deadline,
        |k| {
            let r = ServiceRequest::dns();
            let payload = r.payload.clone();
            let mut q = queries.lock().unwrap_or_else(|e| e.into_inner());
            // A query that did not leave is replaced by the next one.
            q.truncate(k as usize);
            q.push(r);
            payload
        },
        |reply, answered| {
            let q = queries.lock().unwrap_or_else(|e| e.into_inner());
            q.iter()
                .zip(answered)
                .position(|(r, rtt)| rtt.is_none() && r.check(reply).is_some())
        },
    )
    .await;
    let in_order: Vec<u64> = paced.rtts.into_iter().flatten().collect();
    let mut t = SampleTally::of(n, paced.sent, &in_order);
    t.error = paced.error;
    (t, in_order)
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;
    use std::time::Duration;

    use tokio::net::UdpSocket;
    use tokio::time::Instant;

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
