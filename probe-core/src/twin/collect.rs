//! `portcall state collect`: every plan host's state asked of its agent
//! through the ordinary transport (mTLS or ssh) with the read-only `state`
//! request, and written as a state directory the twin reads
//! ([`super::state`]): `net.toml` per host and its ruleset as
//! `ruleset.json` (`nft -j list ruleset`).

use std::path::{Path, PathBuf};
use std::time::Duration;

use std::sync::Arc;

use tokio::sync::Semaphore;

use super::state::{Cidr, HostState, Interface, Route, RouteTo, Ruleset, RulesetSyntax, State};
use crate::control::{ControlError, Dial, Request, Response, StateReply, Transport};
use crate::plan::Plan;

/// Hosts asked at once.
const AT_ONCE: usize = 16;

/// What one host answered.
#[derive(Debug)]
pub struct Collected {
    /// The host.
    pub host: String,
    /// Its state, or why it could not be had.
    pub reply: Result<StateReply, ControlError>,
}

/// Asks every plan host's agent for its state through `transport`, at
/// most [`AT_ONCE`] at a time.
pub async fn collect<T: Transport + ?Sized>(
    plan: &Plan,
    transport: &T,
    timeout: Duration,
) -> Vec<Collected> {
    let slots = Arc::new(Semaphore::new(AT_ONCE));
    let mut tasks = Vec::new();
    for h in &plan.hosts {
        let dial = Dial {
            host: h.name.clone(),
            address: h.address.clone(),
            control_port: plan.defaults.control_port.get(),
            endpoint: None,
            connect_timeout: timeout,
        };
        let host = h.name.clone();
        let slot = slots.clone().acquire_owned().await;
        // The transport's future owns what it needs: it runs as a task.
        let opening = transport.open(dial);
        tasks.push((
            host.clone(),
            tokio::spawn(async move {
                let _slot = slot;
                ask(host, opening, timeout).await
            }),
        ));
    }
    let mut out = Vec::new();
    for (host, task) in tasks {
        let reply = task.await.unwrap_or_else(|e| {
            Err(ControlError::Transport {
                host: host.clone(),
                peer: "agent".into(),
                message: format!("the request task failed: {e}"),
            })
        });
        out.push(Collected { host, reply });
    }
    out
}

async fn ask(
    host: String,
    opening: crate::control::transport::BoxFuture<
        Result<crate::control::ControlStream, ControlError>,
    >,
    timeout: Duration,
) -> Result<StateReply, ControlError> {
    let mut stream = opening.await?;
    let r = stream.request(&Request::State, timeout).await;
    stream.close(Duration::from_secs(2)).await;
    let refused = |message: String| ControlError::Transport {
        host: host.clone(),
        peer: "agent".into(),
        message,
    };
    match r? {
        Response::State(s) => Ok(s),
        Response::Error(e) => Err(refused(e.message)),
        _ => Err(refused(
            "answered `state` with something else (an agent older than this coordinator?)".into(),
        )),
    }
}

/// A host's reply as the twin's [`HostState`], its ruleset written to
/// `dir/HOST/ruleset.json`; values the twin cannot read (an address
/// without a prefix) are left out and named in the returned notes.
pub fn host_state(reply: &StateReply, dir: &Path) -> std::io::Result<(HostState, Vec<String>)> {
    let mut notes: Vec<String> = reply
        .unavailable
        .iter()
        .map(|u| format!("{}: {u}", reply.host))
        .collect();
    let mut host = HostState {
        forwarding: reply.forwarding,
        ..HostState::default()
    };
    for i in &reply.interfaces {
        let mut addresses = Vec::new();
        for a in &i.addresses {
            match a.parse::<Cidr>() {
                Ok(c) => addresses.push(c),
                Err(e) => notes.push(format!("{}: {}: {e}", reply.host, i.name)),
            }
        }
        host.interfaces.push(Interface {
            name: i.name.clone(),
            addresses,
        });
    }
    for r in &reply.routes {
        let to = if r.to == "default" {
            Some(RouteTo::Default)
        } else {
            r.to.parse::<Cidr>().ok().map(RouteTo::Net)
        };
        let via = r.via.as_deref().and_then(|v| v.parse().ok());
        match to {
            Some(to) if via.is_some() || r.dev.is_some() => host.routes.push(Route {
                to,
                via,
                dev: r.dev.clone(),
            }),
            _ => notes.push(format!("{}: route {} left out", reply.host, r.to)),
        }
    }
    for l in &reply.listening {
        let (port, proto) = l.split_once('/').unwrap_or((l, "tcp"));
        if let Ok(port) = port.parse() {
            host.listening.push(super::state::Listening {
                port,
                udp: proto == "udp",
            });
        }
    }
    if let Some(ruleset) = &reply.ruleset {
        let d = dir.join(&reply.host);
        std::fs::create_dir_all(&d)?;
        let path: PathBuf = d.join(super::state::RULESET_JSON);
        std::fs::write(&path, ruleset)?;
        host.ruleset = Some(Ruleset {
            path,
            syntax: RulesetSyntax::Json,
        });
    }
    Ok((host, notes))
}

/// Writes what was collected as a state directory `dir`; returns the
/// notes (hosts that failed, parts left out).
pub fn write(collected: &[Collected], dir: &Path) -> Result<Vec<String>, super::StateError> {
    let io = |e: std::io::Error| super::StateError::Io {
        path: dir.display().to_string(),
        source: e,
    };
    std::fs::create_dir_all(dir).map_err(io)?;
    let mut state = State {
        dir: dir.to_path_buf(),
        ..State::default()
    };
    let mut notes = Vec::new();
    for c in collected {
        match &c.reply {
            Ok(reply) => {
                let (host, n) = host_state(reply, dir).map_err(io)?;
                notes.extend(n);
                state.hosts.insert(c.host.clone(), host);
            }
            Err(e) => notes.push(format!("{}: {}", c.host, crate::error_chain(e))),
        }
    }
    state.write(dir)?;
    Ok(notes)
}
