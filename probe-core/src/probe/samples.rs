//! Path quality samples (`check --samples N`): more attempts of the same
//! nonce exchange, paced per target address so that the measurement never
//! loads the path it measures, each counted by the source (sent, answered,
//! round trip) while the target's canary counts what arrived.
//!
//! - UDP: sample `k` is one `PORTCALL-SAMPLE <round> <nonce> <k>` datagram
//!   on one connected socket, one every [`INTERVAL`]; the canary counts
//!   them under the path's nonce and answers each with its sequence
//!   number, so every answer is matched to its sample (a late answer is
//!   still its own sample's, never the next one's). Answers are read until
//!   the reply wait has passed after the last datagram.
//! - TCP: sample `k` is one fresh connect whose deadline
//!   ([`TCP_SAMPLE_DEADLINE`], at most the plan's timeout) is below the
//!   kernel's initial SYN retransmission (1 s), so each sample is exactly
//!   one SYN; answered is a completed handshake, its round trip the
//!   connect time. Its SYN advertises the MSS [`SAMPLE_MSS`], by which the
//!   target's trace table counts the sample SYNs that arrived. The
//!   connection then carries the sample line, so the canary knows it for
//!   ours and counts it as nothing else. At most
//!   [`TCP_IN_FLIGHT`] connects are in flight per path.
//!
//! Every loop is bounded in count ([`MAX_SAMPLES`]) and in time (the
//! caller's deadline); what was not sent by then is simply not counted.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpSocket, UdpSocket};
use tokio::time::{Instant, sleep_until, timeout, timeout_at};

use super::canary_line::{parse_sample_answer, sample_line};
use crate::plan::Plan;

/// Most samples a round takes per path.
pub use crate::plan::MAX_SAMPLES;

/// Time between two samples to one target address (at most 100 a second,
/// a few kilobytes a second: never a load on the path).
pub const INTERVAL: Duration = Duration::from_millis(10);

/// The deadline of a TCP sample's connect: below the kernel's initial SYN
/// retransmission timeout (1 s), so a sample is one SYN, never two, with
/// 500 ms for a busy machine to close the socket late. At 900 ms two lab
/// tests on each core made the kernel resend some samples' SYNs, and at
/// 700 ms CI once counted 601 SYNs for 600 samples: a connect the process
/// gives up on stays in `SYN_SENT` until it gets the CPU to close it, and
/// neither `TCP_USER_TIMEOUT` nor `TCP_SYNCNT` spares the first resend.
pub const TCP_SAMPLE_DEADLINE: Duration = Duration::from_millis(500);

/// TCP sample connects in flight at once per path (a lost SYN holds its
/// slot until the deadline). The packets stay one SYN per [`INTERVAL`]
/// whatever this is; it only bounds how many lost ones are waited for at
/// once: 32 keeps the pace of one sample per 10 ms with up to 60% of the
/// samples lost (60 × 0.5 s per 100 samples), so a lossy path gets its N
/// samples within the round's sampling time (8 gave 600 of 1,000 at 20%).
pub const TCP_IN_FLIGHT: usize = 32;

/// The MSS a TCP sample's SYN advertises (`TCP_MAXSEG` before connect):
/// the mark by which the target's trace table counts sample SYNs apart
/// from every other. Below any link's MSS (so the kernel advertises it as
/// set) and unlike the engine's path-MTU try (536). A middlebox that
/// rewrites it makes the target count fewer than were answered: counts
/// that disagree, reported as unknown.
pub const SAMPLE_MSS: u32 = 1211;

/// The MSS a schedule-mode sample's SYN advertises (connect-only samples
/// of a live service): the mark by which the target's agent counts the
/// samples that arrived (`schedule::arrivals`), apart from `check
/// --samples`' ([`SAMPLE_MSS`]) so that an agent doing both never counts
/// one as the other. The connection carries no data, so the MSS changes
/// nothing for the service.
pub const LIVE_SAMPLE_MSS: u32 = 1213;

/// Longest a connect-only sample (schedule mode's, to a live service)
/// waits, after its FIN, for the service to close too, reading and dropping
/// what it sends meanwhile: most services close at once; one that does not
/// must not hold the path's sample slots for the whole connect deadline.
pub const LIVE_CLOSE_WAIT: Duration = Duration::from_millis(100);

/// Longest a UDP sample's answer is waited for.
pub const MAX_REPLY_WAIT: Duration = Duration::from_secs(1);

/// What the source counted of one path's samples (the wire form; the
/// target's count and the loss per direction are the join's).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SampleTally {
    /// Samples asked for.
    pub samples: u32,
    /// Samples sent (fewer than asked only when the round's sampling time
    /// ran out or the socket failed).
    pub sent: u32,
    /// Samples answered: a canary's sample answer (UDP), a completed
    /// handshake (TCP).
    pub answered: u32,
    /// Round trips of the answered samples, in microseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rtt_us: Option<RttStats>,
    /// Mean absolute difference of consecutive answered samples' round
    /// trips (in sample order), in microseconds; needs two answers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jitter_us: Option<u64>,
    /// The first local failure (a send that did not leave, a connect this
    /// host could not make), if any: such samples are not counted as sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Order statistics of round trips (nearest-rank percentiles).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RttStats {
    /// The shortest.
    pub min: u64,
    /// The median (nearest rank: the lower middle of an even count).
    pub p50: u64,
    /// The 95th percentile (nearest rank).
    pub p95: u64,
    /// The longest.
    pub max: u64,
}

/// The nearest-rank `p`th percentile of `sorted` (ascending, not empty):
/// the smallest value with at least `p`% of the values at or below it.
pub fn percentile(sorted: &[u64], p: u32) -> u64 {
    let n = sorted.len();
    // ceil(p * n / 100), at least 1.
    let rank = (p as usize * n).div_ceil(100).clamp(1, n);
    sorted[rank - 1]
}

/// Min, median, 95th percentile and max of `rtts`; `None` when empty.
pub fn rtt_stats(rtts: &[u64]) -> Option<RttStats> {
    let mut sorted = rtts.to_vec();
    sorted.sort_unstable();
    Some(RttStats {
        min: *sorted.first()?,
        p50: percentile(&sorted, 50),
        p95: percentile(&sorted, 95),
        max: *sorted.last()?,
    })
}

/// Mean absolute difference of consecutive values of `in_order` (round
/// trips in sample order), rounded; `None` below two values.
pub fn jitter(in_order: &[u64]) -> Option<u64> {
    if in_order.len() < 2 {
        return None;
    }
    let total: u128 = in_order
        .windows(2)
        .map(|w| u128::from(w[0].abs_diff(w[1])))
        .sum();
    let pairs = (in_order.len() - 1) as u128;
    u64::try_from((total + pairs / 2) / pairs).ok()
}

impl SampleTally {
    /// The tally of `samples` asked, `sent`, and the round trips of the
    /// answered ones in sample order.
    pub fn of(samples: u32, sent: u32, rtts_in_order: &[u64]) -> SampleTally {
        SampleTally {
            samples,
            sent,
            answered: u32::try_from(rtts_in_order.len()).unwrap_or(u32::MAX),
            rtt_us: rtt_stats(rtts_in_order),
            jitter_us: jitter(rtts_in_order),
            error: None,
        }
    }
}

/// The samples a round takes per path: `requested` within
/// [`MAX_SAMPLES`]; 1 or less means none beyond the probe.
pub fn clamp(requested: u32) -> u32 {
    requested.min(MAX_SAMPLES)
}

/// How long sampling `paths` paths to one target address takes at most:
/// one sample per [`INTERVAL`] to that address, then the last answers'
/// wait. 0 when the round does not sample.
pub fn sampling_time(paths: usize, samples: u32) -> Duration {
    if samples <= 1 || paths == 0 {
        return Duration::ZERO;
    }
    let n = u32::try_from(paths)
        .unwrap_or(u32::MAX)
        .saturating_mul(clamp(samples));
    INTERVAL.saturating_mul(n) + MAX_REPLY_WAIT + TCP_SAMPLE_DEADLINE
}

/// The longest any source of `plan` samples for: the most paths one source
/// has to one target address, sampled one after another (the coordinator
/// adds it to the `probe` deadline). 0 when the round does not sample.
pub fn plan_sampling_time(plan: &Plan, samples: u32) -> Duration {
    if samples <= 1 {
        return Duration::ZERO;
    }
    let mut per_address: HashMap<(String, String), usize> = HashMap::new();
    let _ = plan.for_each_path(|p| {
        *per_address
            .entry((p.from.to_owned(), p.address.to_string()))
            .or_default() += 1;
        std::ops::ControlFlow::<()>::Continue(())
    });
    sampling_time(per_address.values().copied().max().unwrap_or(0), samples)
}

/// One path's samples to take.
#[derive(Debug, Clone)]
pub struct SampleRequest {
    /// The round's id.
    pub round: String,
    /// The path's nonce (its probe's).
    pub nonce: String,
    /// Where the samples go.
    pub target: SocketAddr,
    /// The source address to bind, where the host has one of the family.
    pub source: Option<IpAddr>,
    /// How many.
    pub samples: u32,
    /// The plan's per-attempt timeout: a UDP answer's wait and a TCP
    /// connect's deadline are at most this.
    pub timeout: Duration,
    /// When sampling stops, whatever is left.
    pub deadline: Instant,
}

/// Takes `req.samples` UDP samples of a path whose canary answered.
pub async fn udp_samples(req: &SampleRequest) -> SampleTally {
    let n = clamp(req.samples);
    let socket = match udp_socket(req.target, req.source) {
        Ok(s) => s,
        Err(e) => return failed(n, 0, &e),
    };
    let wait = req.timeout.min(MAX_REPLY_WAIT);
    let paced = paced_udp(
        &socket,
        PacedUdp {
            samples: n,
            wait,
            deadline: req.deadline,
            reply_len: super::canary_line::MAX_LINE + 1,
        },
        |next| next < req.deadline,
        |k| sample_line(&req.round, &req.nonce, k).into_bytes(),
        |reply, _answered| {
            let (nonce, seq) = std::str::from_utf8(reply)
                .ok()
                .and_then(parse_sample_answer)?;
            (nonce == req.nonce).then_some(seq as usize)
        },
    )
    .await;
    let in_order: Vec<u64> = paced.rtts.into_iter().flatten().collect();
    let mut t = SampleTally::of(n, paced.sent, &in_order);
    t.error = paced.error;
    t
}

/// How [`paced_udp`] samples: how many, how long an answer is waited for
/// after the last datagram, when it stops, the longest answer read.
pub(super) struct PacedUdp {
    pub(super) samples: u32,
    pub(super) wait: Duration,
    pub(super) deadline: Instant,
    pub(super) reply_len: usize,
}

/// What [`paced_udp`] found: the datagrams that left, each sample's round
/// trip (in microseconds) where it was answered, the first send error.
pub(super) struct Paced {
    pub(super) sent: u32,
    pub(super) rtts: Vec<Option<u64>>,
    pub(super) error: Option<String>,
}

/// One datagram per sample on `socket`, one every [`INTERVAL`] while
/// `may_send(next)` holds: sample k's is `payload(k)` (asked again for the
/// same k when it did not leave), and an answer is sample
/// `answer_to(reply, answered)`'s (`answered`: the round trips of the
/// samples that left so far) when that one left and has no answer yet (a
/// late answer is its own sample's, never the next one's). After
/// the last datagram, answers are read for `wait` (within the deadline); a
/// read never outlasts it.
pub(super) async fn paced_udp(
    socket: &UdpSocket,
    how: PacedUdp,
    may_send: impl Fn(Instant) -> bool,
    mut payload: impl FnMut(u32) -> Vec<u8>,
    answer_to: impl Fn(&[u8], &[Option<u64>]) -> Option<usize>,
) -> Paced {
    let n = how.samples;
    let mut sent_at: Vec<Option<Instant>> = vec![None; n as usize];
    let mut rtts: Vec<Option<u64>> = vec![None; n as usize];
    let mut sent = 0u32;
    let mut next = Instant::now();
    let mut buf = vec![0u8; how.reply_len];
    let mut error = None;
    let mut last_read = how.deadline;
    loop {
        let sending = sent < n && may_send(next);
        if !sending && last_read == how.deadline {
            last_read = (Instant::now() + how.wait).min(how.deadline);
        }
        let until = if sending { next } else { last_read };
        tokio::select! {
            () = sleep_until(until) => {
                if !sending {
                    break;
                }
                match socket.try_send(&payload(sent)) {
                    Ok(_) => {
                        sent_at[sent as usize] = Some(Instant::now());
                        sent += 1;
                    }
                    // A full send buffer, or an ICMP error queued for an
                    // earlier sample (reported instead of sending): this
                    // sample did not leave, so it is not counted; it is
                    // sent again at the next tick.
                    Err(e) => {
                        error.get_or_insert_with(|| format!("send: {e}"));
                    }
                }
                next += INTERVAL;
            }
            got = socket.recv(&mut buf) => {
                let Ok(len) = got else { continue };
                let now = Instant::now();
                let Some(k) = answer_to(&buf[..len], &rtts[..sent as usize]) else {
                    continue;
                };
                if k >= rtts.len() || rtts[k].is_some() {
                    continue;
                }
                if let Some(at) = sent_at[k] {
                    rtts[k] = Some(micros(now - at));
                }
            }
        }
    }
    Paced { sent, rtts, error }
}

/// Takes `req.samples` TCP samples of a path that connected: one connect
/// each, at most [`TCP_IN_FLIGHT`] at once, one started per [`INTERVAL`].
pub async fn tcp_samples(req: &SampleRequest) -> SampleTally {
    tcp_sampling(req, Mark::Canary).await.0
}

/// Takes `req.samples` connect-only TCP samples of a live service (schedule
/// mode): paced and counted as [`tcp_samples`], but each sample's SYN
/// advertises [`LIVE_SAMPLE_MSS`] and its connection carries no data: it is closed with a FIN
/// once the handshake completed, and whatever the service sent (a greeting)
/// is read and dropped until it closes too (at most [`LIVE_CLOSE_WAIT`]),
/// so that the close is polite rather than a reset. `req.round` and
/// `req.nonce` are not used. Returns the tally and the answered samples'
/// round trips in microseconds, in sample order.
pub async fn tcp_connect_samples(req: &SampleRequest) -> (SampleTally, Vec<u64>) {
    tcp_sampling(req, Mark::None).await
}

/// Whether a TCP sample is one of a canary's (SYN marked [`SAMPLE_MSS`],
/// sample line) or one to a live service (SYN marked [`LIVE_SAMPLE_MSS`],
/// no data).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mark {
    Canary,
    None,
}

async fn tcp_sampling(req: &SampleRequest, mark: Mark) -> (SampleTally, Vec<u64>) {
    let n = clamp(req.samples);
    let deadline = req.timeout.min(TCP_SAMPLE_DEADLINE);
    let slots = Arc::new(tokio::sync::Semaphore::new(TCP_IN_FLIGHT));
    let mut set = tokio::task::JoinSet::new();
    let mut next = Instant::now();
    let mut sent = 0u32;
    let mut done = TcpDone::default();
    while sent < n && next < req.deadline && done.error.is_none() {
        sleep_until(next).await;
        let Ok(Ok(permit)) = timeout_at(req.deadline, slots.clone().acquire_owned()).await else {
            break;
        };
        let (target, source) = (req.target, req.source);
        let line = (mark == Mark::Canary).then(|| sample_line(&req.round, &req.nonce, sent));
        let seq = sent;
        set.spawn(async move {
            let r = tcp_sample(target, source, deadline, line).await;
            drop(permit);
            (seq, r)
        });
        sent += 1;
        next += INTERVAL;
        while let Some(r) = set.try_join_next() {
            done.take(r);
        }
    }
    while let Some(r) = set.join_next().await {
        done.take(r);
    }
    done.rtts.sort_unstable();
    let in_order: Vec<u64> = done.rtts.into_iter().map(|(_, r)| r).collect();
    // A sample this host could not send (no descriptor, no source
    // address) is not the path's loss: it is not counted as sent.
    let mut t = SampleTally::of(n, sent.saturating_sub(done.local_failures), &in_order);
    t.error = done.error;
    (t, in_order)
}

/// What the TCP samples that finished gave.
#[derive(Default)]
struct TcpDone {
    rtts: Vec<(u32, u64)>,
    local_failures: u32,
    error: Option<String>,
}

impl TcpDone {
    fn take(&mut self, r: Result<(u32, std::io::Result<Option<u64>>), tokio::task::JoinError>) {
        match r {
            Ok((seq, Ok(Some(rtt)))) => self.rtts.push((seq, rtt)),
            Ok((_, Ok(None))) => {}
            Ok((_, Err(e))) => {
                self.local_failures += 1;
                self.error.get_or_insert(e.to_string());
            }
            Err(e) => {
                self.local_failures += 1;
                self.error.get_or_insert(e.to_string());
            }
        }
    }
}

/// One TCP sample: `Ok(Some(rtt_us))` when the handshake completed within
/// `deadline`, `Ok(None)` when it did not (the path's loss), `Err` when
/// this host could not even try. With a `line`, the SYN is marked
/// [`SAMPLE_MSS`] and the line sent (a canary's sample); without, the SYN
/// is marked [`LIVE_SAMPLE_MSS`] and the connection is closed politely and
/// carries nothing (a live service's).
async fn tcp_sample(
    target: SocketAddr,
    source: Option<IpAddr>,
    deadline: Duration,
    line: Option<String>,
) -> std::io::Result<Option<u64>> {
    let socket = if target.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    if let Some(s) = source.filter(|s| s.is_ipv4() == target.is_ipv4()) {
        socket.bind(SocketAddr::new(s, 0))?;
    }
    let mss = if line.is_some() {
        SAMPLE_MSS
    } else {
        LIVE_SAMPLE_MSS
    };
    socket2::SockRef::from(&socket).set_tcp_mss(mss)?;
    let started = Instant::now();
    let mut stream = match timeout(deadline, socket.connect(target)).await {
        Ok(Ok(s)) => s,
        // Silent, refused, unreachable: the sample was lost on the path.
        Err(_) => return Ok(None),
        Ok(Err(e)) => match super::classify::classify_connect_error(&e) {
            super::classify::ConnectClass::Network(_) => return Ok(None),
            // This host's own shortage is never the path's loss.
            _ => return Err(e),
        },
    };
    let rtt = micros(started.elapsed());
    match line {
        // The line tells the canary the connection is a sample of ours; its
        // answer is not waited for (the handshake is the measurement).
        Some(line) => {
            let _ = timeout(deadline, stream.write_all(line.as_bytes())).await;
            let _ = stream.shutdown().await;
        }
        None => close_politely(stream, deadline.min(LIVE_CLOSE_WAIT)).await,
    }
    Ok(Some(rtt))
}

/// Sends a FIN, then reads and drops what the service sends until it
/// closes too (or `wait` passes): a socket closed with unread data would
/// reset the connection instead.
async fn close_politely(mut stream: tokio::net::TcpStream, wait: Duration) {
    use tokio::io::AsyncReadExt;
    let _ = stream.shutdown().await;
    let mut buf = [0u8; 1024];
    let _ = timeout(wait, async {
        // Bounded by the wait; each read returns data, EOF or an error.
        while let Ok(1..) = stream.read(&mut buf).await {}
    })
    .await;
}

fn failed(n: u32, sent: u32, e: &std::io::Error) -> SampleTally {
    let mut t = SampleTally::of(n, sent, &[]);
    t.error = Some(e.to_string());
    t
}

/// A UDP socket bound to `source` (when of the target's family) and
/// connected to `target`, so only the target's answers reach it.
pub(super) fn udp_socket(target: SocketAddr, source: Option<IpAddr>) -> std::io::Result<UdpSocket> {
    let socket = std::net::UdpSocket::bind(match source {
        Some(s) if s.is_ipv4() == target.is_ipv4() => SocketAddr::new(s, 0),
        _ if target.is_ipv4() => SocketAddr::from(([0, 0, 0, 0], 0)),
        _ => SocketAddr::from((std::net::Ipv6Addr::UNSPECIFIED, 0)),
    })?;
    socket.connect(target)?;
    socket.set_nonblocking(true)?;
    UdpSocket::from_std(socket)
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_nearest_rank() {
        let v: Vec<u64> = (1..=100).collect();
        assert_eq!(percentile(&v, 50), 50);
        assert_eq!(percentile(&v, 95), 95);
        assert_eq!(percentile(&v, 100), 100);
        assert_eq!(percentile(&[7], 95), 7);
        assert_eq!(percentile(&[1, 2], 50), 1, "the lower middle");
        assert_eq!(percentile(&[1, 2, 3], 50), 2);
        // 20 values: the 95th percentile is the 19th.
        let v: Vec<u64> = (1..=20).map(|x| x * 10).collect();
        assert_eq!(percentile(&v, 95), 190);
    }

    #[test]
    fn stats_sort_a_copy_and_jitter_follows_sample_order() {
        let rtts = [30, 10, 20, 40];
        let s = rtt_stats(&rtts).unwrap();
        assert_eq!((s.min, s.p50, s.p95, s.max), (10, 20, 40, 40));
        // |10-30| + |20-10| + |40-20| = 50 over 3 pairs.
        assert_eq!(jitter(&rtts), Some(17));
        assert_eq!(jitter(&[5, 5, 5]), Some(0));
        assert_eq!(jitter(&[5]), None);
        assert_eq!(rtt_stats(&[]), None);
        let t = SampleTally::of(10, 9, &rtts);
        assert_eq!((t.samples, t.sent, t.answered), (10, 9, 4));
    }

    #[test]
    fn sampling_time_grows_with_the_paths_one_address_shares() {
        assert_eq!(sampling_time(3, 1), Duration::ZERO);
        let one = sampling_time(1, 100);
        let two = sampling_time(2, 100);
        assert_eq!(two - one, INTERVAL * 100);
        assert!(sampling_time(1, u32::MAX) <= sampling_time(1, MAX_SAMPLES));
    }

    /// A canary stand-in on loopback answering every sample line except
    /// those whose sequence number `drop` says to ignore.
    async fn answering(drop: fn(u32) -> bool) -> SocketAddr {
        let s = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = s.local_addr().unwrap();
        tokio::spawn(async move {
            let mut buf = [0u8; 256];
            while let Ok((n, peer)) = s.recv_from(&mut buf).await {
                let line = std::str::from_utf8(&buf[..n]).unwrap();
                let (_, nonce, seq) = crate::probe::canary_line::parse_sample_line(line).unwrap();
                if !drop(seq) {
                    let a = crate::probe::canary_line::sample_answer(nonce, seq);
                    let _ = s.send_to(a.as_bytes(), peer).await;
                }
            }
        });
        addr
    }

    fn request(target: SocketAddr, samples: u32) -> SampleRequest {
        SampleRequest {
            round: "ab12".into(),
            nonce: "ff00".into(),
            target,
            source: None,
            samples,
            timeout: Duration::from_millis(200),
            deadline: Instant::now() + Duration::from_secs(10),
        }
    }

    #[tokio::test]
    async fn udp_samples_count_every_answer_by_its_sequence_number() {
        let target = answering(|seq| seq % 4 == 0).await;
        let t = udp_samples(&request(target, 40)).await;
        assert_eq!((t.samples, t.sent, t.answered), (40, 40, 30), "{t:?}");
        assert!(t.rtt_us.is_some() && t.jitter_us.is_some(), "{t:?}");
    }

    #[tokio::test]
    async fn udp_samples_stop_at_the_deadline() {
        let target = answering(|_| false).await;
        let mut req = request(target, 1000);
        req.deadline = Instant::now() + Duration::from_millis(100);
        let started = Instant::now();
        let t = udp_samples(&req).await;
        assert!(started.elapsed() < Duration::from_millis(400));
        assert!(t.sent < 20 && t.sent > 0, "{t:?}");
    }

    #[tokio::test]
    async fn tcp_samples_time_each_handshake_and_a_closed_port_answers_none() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let target = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((s, _)) = listener.accept().await {
                drop(s);
            }
        });
        let t = tcp_samples(&request(target, 12)).await;
        assert_eq!((t.sent, t.answered), (12, 12), "{t:?}");
        let closed = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap()
        };
        let t = tcp_samples(&request(closed, 5)).await;
        assert_eq!((t.sent, t.answered), (5, 0), "{t:?}");
    }

    /// Schedule mode's samples of a live service: a service that greets
    /// first gets no byte from any sample and sees each one end with a
    /// FIN (a clean end of stream), never a reset.
    #[tokio::test]
    async fn connect_only_samples_send_nothing_and_close_without_a_reset() {
        use tokio::io::AsyncReadExt;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let target = listener.local_addr().unwrap();
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                let tx = tx.clone();
                tokio::spawn(async move {
                    let _ = s.write_all(b"220 greeting\r\n").await;
                    let mut got = Vec::new();
                    let end = s.read_to_end(&mut got).await.map(|_| got.len());
                    let _ = tx.send(end.map_err(|e| e.kind()));
                });
            }
        });
        let (t, rtts) = tcp_connect_samples(&request(target, 10)).await;
        assert_eq!((t.sent, t.answered, rtts.len()), (10, 10, 10), "{t:?}");
        for _ in 0..10 {
            let end = timeout(Duration::from_secs(5), rx.recv()).await.unwrap();
            assert_eq!(end, Some(Ok(0)), "no data, a clean close");
        }
    }

    /// A live service that never closes its end must not hold the sample
    /// slots for the connect deadline: 400 samples through 32 slots take
    /// about 4.1 s (one per 10 ms, each slot held 100 ms), not the 6.3 s
    /// that slots held 500 ms would allow.
    #[tokio::test]
    async fn connect_only_samples_do_not_wait_long_for_a_service_that_keeps_the_connection() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let target = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((s, _)) = listener.accept().await {
                held.push(s);
            }
        });
        let mut req = request(target, 400);
        req.timeout = Duration::from_millis(900);
        let started = Instant::now();
        let (t, rtts) = tcp_connect_samples(&req).await;
        assert_eq!((t.sent, t.answered, rtts.len()), (400, 400, 400), "{t:?}");
        assert!(
            started.elapsed() < Duration::from_millis(5200),
            "{:?}",
            started.elapsed()
        );
    }
}
