//! Proof that the right service answered: where a real service holds a
//! planned port, one request of the port's planned protocol (`http`,
//! `https`, `thrift`, `amqp`, `mysql`, `tls`) is sent and the answer read,
//! so that an open port is not taken for the planned service. Each
//! protocol lives in its own file as a pure parser of the server's bytes
//! plus the request it answers; [`ServiceExchange`] runs them behind the
//! engine's [`Exchange`] seam and keeps, per target, a typed
//! [`ServiceCheck`] (the proof level, what answered) for the join to read.
//!
//! Safety for the server: no probe sends credentials, none sends more than
//! one request per connection, and every probe leaves with a FIN after
//! reading (never a reset), which servers log as a client that left, not
//! as a broken connection. `docs/outcomes.md` defines each level per
//! protocol.

mod amqp;
mod answer;
mod http;
mod io;
mod mysql;
mod sniff;
mod thrift;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::engine::Prober;
use super::exchange::{Exchange, ExchangeContext, ExchangeFuture, ExchangeOutcome, ProbeStream};
use super::outcome::ProbeResult;
use super::target::Target;
use crate::plan::ServiceKind;

pub use amqp::{AMQP_HEADER, parse_connection_start};
pub use answer::{Proof, Retry, ServiceAnswer, ServiceCheck, ServicePlan};
pub use http::{Method, head_request, parse_response};
pub use mysql::parse_greeting;
pub use sniff::describe;
pub use thrift::{Framing, call_unknown_method, parse_reply};

/// Runs one request of `plan`'s protocol on `stream` and judges the answer,
/// all within `wait`; `retry` is the form of a second pass.
pub async fn check(
    plan: &ServicePlan,
    retry: Option<Retry>,
    stream: &mut dyn ProbeStream,
    wait: Duration,
) -> ServiceCheck {
    let deadline = tokio::time::Instant::now() + wait;
    let check = match plan.kind {
        ServiceKind::Http | ServiceKind::Https => {
            let method = if retry == Some(Retry::HttpGet) {
                Method::Get
            } else {
                Method::Head
            };
            http::check(plan, method, stream, deadline).await
        }
        ServiceKind::Thrift => {
            let framing = if retry == Some(Retry::ThriftFramed) {
                Framing::Framed
            } else {
                Framing::Unframed
            };
            thrift::check(framing, stream, deadline).await
        }
        ServiceKind::Amqp => amqp::check(stream, deadline).await,
        ServiceKind::Mysql => mysql::check(stream, deadline).await,
        // The engine's TLS handshake completed before the exchange: the
        // TLS protocol's own "ready" (its Finished message) was read.
        ServiceKind::Tls => Ok(ServiceCheck::proven(
            Proof::Healthy,
            ServiceAnswer::of("tls"),
        )),
        ServiceKind::None => Ok(ServiceCheck {
            proof: Proof::L4,
            answer: None,
            wrong: None,
            again: None,
        }),
    };
    let check = check.unwrap_or_else(|u| sniff::other(plan.kind.as_str(), &u));
    if !matches!(plan.kind, ServiceKind::Tls | ServiceKind::None) {
        // A silent server used the whole wait: leaving still gets a short
        // grace (half the wait at most, so the whole exchange stays within
        // the engine's exchange timeout, twice the wait), so the FIN goes
        // out and is read before the engine's reset.
        let grace = tokio::time::Instant::now() + (wait / 2).min(Duration::from_millis(250));
        io::leave(stream, deadline.max(grace)).await;
    }
    check
}

/// An [`Exchange`] that proves the planned service of targets held by a
/// real service and hands every other target to `inner` (the agents'
/// nonce exchange), keeping each target's [`ServiceCheck`].
pub struct ServiceExchange {
    plans: Mutex<Vec<Option<ServicePlan>>>,
    wait: Duration,
    inner: Option<Arc<dyn Exchange>>,
    checks: Mutex<Vec<Option<ServiceCheck>>>,
    /// In a second pass: the first pass's index of each target swept.
    second: Mutex<Option<Vec<(usize, Retry)>>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl ServiceExchange {
    /// One optional plan per target, in sweep order; `wait` bounds each
    /// exchange (keep it below the engine's exchange timeout).
    pub fn new(
        plans: Vec<Option<ServicePlan>>,
        wait: Duration,
        inner: Option<Arc<dyn Exchange>>,
    ) -> ServiceExchange {
        let checks = Mutex::new(vec![None; plans.len()]);
        ServiceExchange {
            plans: Mutex::new(plans),
            wait,
            inner,
            checks,
            second: Mutex::new(None),
        }
    }

    /// New plans for the next sweep (schedule mode reuses one prober for
    /// every round); forgets the last sweep's checks.
    pub fn set_plans(&self, plans: Vec<Option<ServicePlan>>) {
        let n = plans.len();
        *lock(&self.plans) = plans;
        *lock(&self.checks) = vec![None; n];
        *lock(&self.second) = None;
    }

    /// Target `i`'s check, if it was a service target that connected.
    pub fn check(&self, i: usize) -> Option<ServiceCheck> {
        lock(&self.checks).get(i).cloned().flatten()
    }

    /// The targets (first-pass indices) whose request must be repeated in
    /// another form; from now on the exchange's indices are positions in
    /// this list, until [`ServiceExchange::end_second_pass`].
    pub fn begin_second_pass(&self) -> Vec<usize> {
        let again: Vec<(usize, Retry)> = lock(&self.checks)
            .iter()
            .enumerate()
            .filter_map(|(i, c)| Some((i, c.as_ref()?.again?)))
            .collect();
        let indices = again.iter().map(|(i, _)| *i).collect();
        *lock(&self.second) = Some(again);
        indices
    }

    /// Back to first-pass indices.
    pub fn end_second_pass(&self) {
        *lock(&self.second) = None;
    }

    /// The first-pass index and retry form of exchange index `index`.
    fn resolve(&self, index: usize) -> (usize, Option<Retry>) {
        match lock(&self.second).as_ref() {
            Some(map) => map
                .get(index)
                .map_or((usize::MAX, None), |(i, r)| (*i, Some(*r))),
            None => (index, None),
        }
    }

    fn plan(&self, index: usize) -> Option<ServicePlan> {
        lock(&self.plans).get(index).cloned().flatten()
    }
}

impl Exchange for ServiceExchange {
    /// A service target is read or asked by the protocol; every other
    /// target is the inner exchange's.
    fn speaks_first(&self, index: usize) -> bool {
        let (first, _) = self.resolve(index);
        self.plan(first).is_none() && self.inner.as_ref().is_some_and(|i| i.speaks_first(index))
    }

    fn exchange<'a>(
        &'a self,
        context: ExchangeContext<'a>,
        stream: &'a mut dyn ProbeStream,
    ) -> ExchangeFuture<'a> {
        Box::pin(async move {
            let (first, retry) = self.resolve(context.index);
            let Some(plan) = self.plan(first) else {
                return match &self.inner {
                    Some(inner) => inner.exchange(context, stream).await,
                    None => ExchangeOutcome::Confirmed {
                        detail: String::new(),
                    },
                };
            };
            let mut check = check(&plan, retry, stream, self.wait).await;
            if !plan.planned {
                check.wrong = None;
                check.again = None;
            }
            let outcome = match &check.wrong {
                Some(why) => ExchangeOutcome::WrongService {
                    detail: format!("planned {}: {why}", plan.kind),
                },
                None => ExchangeOutcome::Confirmed {
                    detail: check
                        .answer
                        .as_ref()
                        .map(|a| format!("{} answered: {}", plan.kind, a.summary()))
                        .unwrap_or_default(),
                },
            };
            if let Some(slot) = lock(&self.checks).get_mut(first) {
                *slot = Some(check);
            }
            outcome
        })
    }
}

/// Sweeps `targets` with `prober` (whose exchange is `exchange`), then
/// once more, on new connections, the service targets whose server asked
/// for another form of request ([`ServiceCheck::again`]): each connection
/// still carries one request. A second pass's result replaces the first's,
/// its attempts added.
pub async fn sweep_proving(
    prober: &Prober,
    exchange: &ServiceExchange,
    targets: Vec<Target>,
    cancel: &CancellationToken,
) -> Vec<ProbeResult> {
    let mut results = prober.sweep(targets.clone(), cancel, |_, _| {}).await;
    let again = exchange.begin_second_pass();
    if !again.is_empty() && !cancel.is_cancelled() {
        let subset = again.iter().map(|&i| targets[i].clone()).collect();
        let second = prober.sweep(subset, cancel, |_, _| {}).await;
        for (&i, mut r) in again.iter().zip(second) {
            r.attempts = r.attempts.saturating_add(results[i].attempts);
            results[i] = r;
        }
    }
    exchange.end_second_pass();
    results
}
