//! Requests that survive a lossy control channel: under heavy loss a lost
//! segment is resent only after the kernel's backed-off timer (seconds,
//! doubling), while a fresh connection starts with short ones. So a probe
//! reply that is late is asked for again on fresh connections beside the
//! first ([`hedged`]), and evidence whose reply was lost on a fresh one
//! ([`evidence_one`]); both are requests an agent answers alike when
//! asked twice.

use std::time::Duration;

use tokio::task::JoinSet;

use super::session::{Session, died};
use crate::control::transport::BoxFuture;
use crate::control::{ControlError, ControlStream, ListenerState, Request, Response};
use crate::error_chain;
use crate::report::AgentOutcome;

/// Fresh connections the probe phase may ask again on, beside a reply
/// that is late.
pub(super) const PROBE_HEDGES: usize = 2;

/// How long a probe reply may take before the same request goes again on
/// a fresh connection; then again after as long once more.
const PROBE_HEDGE_AFTER: Duration = Duration::from_secs(4);

/// Where other agents were asked to probe too, a reply is late only once
/// this long has passed since the first of theirs came ([`PeerReplies`]).
const PROBE_HEDGE_AFTER_PEERS: Duration = Duration::from_secs(2);

/// Where other agents were asked to probe too and none has answered, the
/// sweeps are long for everyone (a large plan, a loaded host): the first
/// hedge waits half the probe deadline, up to this long (and at least
/// [`PROBE_HEDGE_AFTER`], so a short deadline leaves time for a hedge).
const PROBE_HEDGE_UNANSWERED: Duration = Duration::from_secs(12);

/// When the agents of a probe phase answered: a reply is late against the
/// others', not against a fixed clock. In a 100-host mesh every sweep
/// takes 5-7 s on a loaded machine; hedging each at 4 s cost a hundred
/// TLS handshakes and a hundred repeated replies while the sweeps ran,
/// for no reply that was lost.
#[derive(Debug, Clone)]
pub(super) struct PeerReplies {
    /// Agents asked to probe in this phase.
    asked: usize,
    first: std::sync::Arc<tokio::sync::watch::Sender<Option<tokio::time::Instant>>>,
}

impl PeerReplies {
    /// A phase that asked `asked` agents to probe.
    pub(super) fn new(asked: usize) -> PeerReplies {
        PeerReplies {
            asked,
            first: std::sync::Arc::new(tokio::sync::watch::Sender::new(None)),
        }
    }

    /// An agent answered (its probe reply came).
    pub(super) fn answered(&self) {
        self.first.send_if_modified(|first| {
            if first.is_some() {
                return false;
            }
            *first = Some(tokio::time::Instant::now());
            true
        });
    }

    /// When a request sent at `asked_at`, with `deadline` to answer, is
    /// late enough to hedge, as far as the replies so far tell:
    /// [`PROBE_HEDGE_AFTER`] after it, and, where others were asked too,
    /// [`PROBE_HEDGE_AFTER_PEERS`] after the first reply came, or, while
    /// none has, half the deadline (at most [`PROBE_HEDGE_UNANSWERED`]).
    fn hedge_at(&self, asked_at: tokio::time::Instant, deadline: Duration) -> tokio::time::Instant {
        let least = asked_at + PROBE_HEDGE_AFTER;
        if self.asked <= 1 {
            return least;
        }
        let unanswered = asked_at + (deadline / 2).min(PROBE_HEDGE_UNANSWERED);
        let against_peers = match *self.first.borrow() {
            Some(first) => (first + PROBE_HEDGE_AFTER_PEERS).min(unanswered),
            None => unanswered,
        };
        least.max(against_peers)
    }
}

/// `request` on `conn`; while no reply has come, the same request again
/// on each of `hedges`' fresh connections in turn: the first once `peers`
/// say the reply is late ([`PeerReplies`]; at once when `conn` broke),
/// the next [`PROBE_HEDGE_AFTER`] later. The first reply wins, with the
/// fresh connection it came on. Only for requests an agent answers alike
/// when asked twice: a repeated `probe` of a round waits for the running
/// sweep and gets its results. A lost segment under heavy loss is resent
/// only after the kernel's backed-off timer (seconds, doubling), a fresh
/// connection starts with short ones.
pub(super) async fn hedged(
    conn: &mut ControlStream,
    request: &Request,
    deadline: Duration,
    hedges: Vec<BoxFuture<Result<ControlStream, ControlError>>>,
    peers: &PeerReplies,
) -> (Result<Response, ControlError>, Option<ControlStream>) {
    let asked_at = tokio::time::Instant::now();
    let give_up = asked_at + deadline;
    let host = conn.host().to_string();
    let mut set = JoinSet::new();
    let mut hedges = hedges.into_iter();
    // Until the first hedge goes, its time moves with the peers' replies
    // (subscribed first: a reply that comes in between is not missed).
    let mut replies = peers.first.subscribe();
    let mut next = peers.hedge_at(asked_at, deadline);
    let mut first_hedged = false;
    let first = conn.request(request, deadline);
    tokio::pin!(first);
    let mut first_err: Option<ControlError> = None;
    loop {
        tokio::select! {
            r = &mut first, if first_err.is_none() => match r {
                Ok(reply) => return (Ok(reply), None),
                Err(e) if set.is_empty() && hedges.len() == 0 => return (Err(e), None),
                Err(e) => {
                    first_err = Some(e);
                    next = tokio::time::Instant::now();
                    first_hedged = true;
                }
            },
            Ok(()) = replies.changed(), if !first_hedged => {
                next = peers.hedge_at(asked_at, deadline);
            },
            Some(done) = set.join_next() => {
                if let Ok(Ok((reply, fresh))) = done {
                    return (Ok(reply), Some(fresh));
                }
                if set.is_empty() && hedges.len() == 0 && first_err.is_some() {
                    break;
                }
            },
            () = tokio::time::sleep_until(next), if hedges.len() > 0 => {
                let Some(opening) = hedges.next() else { continue };
                let request = request.clone();
                let left = give_up.saturating_duration_since(tokio::time::Instant::now());
                set.spawn(async move {
                    let mut fresh = opening.await?;
                    let reply = fresh.request(&request, left).await?;
                    Ok::<_, ControlError>((reply, fresh))
                });
                first_hedged = true;
                next += PROBE_HEDGE_AFTER;
            },
            else => break,
        }
    }
    let e = first_err.unwrap_or_else(|| ControlError::RequestTimeout {
        host,
        addr: String::new(),
        op: "probe",
        after_ms: deadline.as_millis(),
    });
    (Err(e), None)
}

/// Fresh connections the evidence phase may open to an agent whose reply
/// was lost (timed out, or the connection broke).
pub(super) const EVIDENCE_REOPENS: usize = 2;

/// Asks one agent for its evidence, where it has any to give; when the
/// reply is lost, again on each of `reopen`'s fresh connections in turn.
pub(super) async fn evidence_one(
    mut s: Session,
    evidence: &Request,
    request_timeout: Duration,
    reopen: Vec<BoxFuture<Result<ControlStream, ControlError>>>,
) -> Session {
    // Held ports too: the agent's handshake watch covers them. A host that
    // only probed has its firewall trace of its probes.
    let has_listeners = s
        .evidence
        .listeners
        .iter()
        .any(|l| l.state != ListenerState::Failed || !l.elsewhere.is_empty());
    let has_probes = !s.evidence.probes.is_empty();
    if (!has_listeners && !has_probes) || s.evidence.outcome != AgentOutcome::Up {
        return s;
    }
    let mut reopen = reopen.into_iter();
    let mut conn = match s.conn.take() {
        Some(c) => c,
        // The probe request's connection was dropped (its reply was late):
        // a fresh one asks for the evidence.
        None => {
            let mut fresh = None;
            for opening in reopen.by_ref() {
                if let Ok(c) = opening.await {
                    fresh = Some(c);
                    break;
                }
            }
            let Some(c) = fresh else {
                s.evidence.evidence_error = Some(
                    "the control connection was dropped after the probe request failed".into(),
                );
                return s;
            };
            c
        }
    };
    let mut answer = conn.request(evidence, request_timeout).await;
    for opening in reopen {
        match &answer {
            Err(e) if died(e) || matches!(e, ControlError::RequestTimeout { .. }) => {}
            _ => break,
        }
        tracing::debug!(host = %s.host, error = %answer.as_ref().err().map(|e| error_chain(e)).unwrap_or_default(), "evidence lost; asking again on a fresh connection");
        let Ok(mut fresh) = opening.await else {
            continue;
        };
        answer = fresh.request(evidence, request_timeout).await;
        conn = fresh;
    }
    s.conn = Some(conn);
    let conn = s.conn.as_mut().expect("just set");
    match answer {
        Ok(Response::Evidence(mut e)) => {
            // Read into vectors grown by doubling, and held for the round.
            for c in &mut e.canaries {
                c.seen.shrink_to_fit();
            }
            s.evidence.canaries = e.canaries;
            s.evidence.handshakes = e.handshakes;
            s.evidence.trace = e.trace;
            s.evidence.syn_samples = e.syn_samples;
        }
        Ok(_) => s.evidence.evidence_error = Some(error_chain(&conn.unexpected(evidence))),
        Err(e) if died(&e) => s.lost(format!("lost during evidence: {}", error_chain(&e))),
        Err(e) => {
            s.evidence.evidence_error = Some(error_chain(&e));
            s.conn = None;
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::time::{Instant, advance};

    #[tokio::test(start_paused = true)]
    async fn a_probe_reply_is_late_against_the_other_agents_replies() {
        let s = Duration::from_secs;
        let deadline = s(30);
        // One agent asked: late after the fixed wait, whatever happens.
        let asked_at = Instant::now();
        let alone = PeerReplies::new(1);
        assert_eq!(alone.hedge_at(asked_at, deadline), asked_at + s(4));

        // Many asked, none answered yet: every sweep is long, no hedge
        // before the long wait (half a short deadline, not less than 4 s).
        let peers = PeerReplies::new(100);
        assert_eq!(peers.hedge_at(asked_at, deadline), asked_at + s(12));
        assert_eq!(peers.hedge_at(asked_at, s(14)), asked_at + s(7));
        assert_eq!(peers.hedge_at(asked_at, s(5)), asked_at + s(4));
        let mut changes = peers.first.subscribe();

        // The first reply came 5 s in: another is late 2 s after it.
        advance(s(5)).await;
        peers.answered();
        assert!(changes.has_changed().unwrap(), "a waiting hedge is told");
        assert_eq!(peers.hedge_at(asked_at, deadline), asked_at + s(7));
        // Later replies do not move it.
        changes.mark_unchanged();
        advance(s(1)).await;
        peers.answered();
        assert!(!changes.has_changed().unwrap());
        assert_eq!(peers.hedge_at(asked_at, deadline), asked_at + s(7));

        // A first reply that came at once leaves the fixed wait.
        let quick = PeerReplies::new(2);
        let asked_at = Instant::now();
        advance(Duration::from_millis(300)).await;
        quick.answered();
        assert_eq!(quick.hedge_at(asked_at, deadline), asked_at + s(4));
        // A request sent long after the first reply still waits its own 4 s.
        advance(s(10)).await;
        let late_ask = Instant::now();
        assert_eq!(quick.hedge_at(late_ask, deadline), late_ask + s(4));
    }
}
