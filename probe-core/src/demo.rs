//! `portcall demo`: the bundled WSO2 plan played on loopback, so a fresh
//! clone shows a real matrix in seconds with no root and no setup. Every
//! host becomes an in-process [`Agent`] on its own 127.0.x.y address, with
//! a throwaway CA for the control channel, and the round goes through the
//! same coordinator code as `portcall check`: nothing is simulated.
//!
//! Two things differ from a real network, and the demo says so: nothing
//! filters loopback traffic (so must-be-blocked paths come out open, which
//! is exactly what a missing firewall rule looks like), and ports below
//! 1024 need privileges a normal user lacks (so they are moved up by 10000).
//!
//! Demos run side by side on one machine do not meet: each holds a slot (an
//! abstract Unix socket, released by the kernel when the process ends) that
//! names the second octet of its addresses, so a second demo plays on
//! 127.1.x.y instead of taking the first one's canaries for live services.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::UnixListener;
use std::sync::Arc;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::agent::{Agent, AgentConfig, AgentError, AgentLimits};
use crate::control::{ClientSecurity, ServerSecurity};
use crate::pki::{Authority, COORDINATOR, IssueRequest, PkiError, TlsIdentity};
use crate::plan::{Address, Expect, Family, Plan, PlanError};
use crate::port::Port;
use crate::probe::Observed;
use crate::report::{Report, Verdict};
use crate::round::{self, RoundConfig};

/// The bundled example plan, embedded in the binary.
pub const WSO2_PLAN: &str = include_str!("../../examples/wso2-distributed.toml");

/// The name the embedded plan goes by in messages.
pub const WSO2_PLAN_FILE: &str = "examples/wso2-distributed.toml";

/// Added to a planned port below 1024 to play it as a normal user.
pub const LOW_PORT_SHIFT: u16 = 10_000;

/// Why the demo could not run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DemoError {
    /// The plan is invalid.
    #[error(transparent)]
    Plan(#[from] PlanError),
    /// The throwaway PKI could not be made.
    #[error("demo certificates")]
    Pki(#[from] PkiError),
    /// An agent could not start (say, its loopback address is unusable).
    #[error("start the demo agent of {host}")]
    Agent {
        /// The host.
        host: String,
        /// Why.
        #[source]
        source: AgentError,
    },
    /// The plan has more hosts than the loopback scheme can number.
    #[error("plan has {hosts} hosts; the demo numbers at most 65000 on loopback")]
    TooManyHosts {
        /// How many.
        hosts: usize,
    },
    /// Every loopback slot is held by another demo on this machine.
    #[error(
        "{SLOTS} other portcall demos are running on this machine (each holds its own 127.N.x.y); wait for one to finish"
    )]
    Busy,
}

/// How many demos may run side by side: slot `k` plays on 127.k.x.y.
const SLOTS: u8 = 32;

/// The loopback slot a demo holds for its whole run.
struct Slot {
    /// The second octet of every address the demo uses.
    octet: u8,
    /// Bound while the demo runs; `None` when abstract sockets are not
    /// available (the demo then plays on slot 0 unguarded).
    _hold: Option<UnixListener>,
}

/// Takes the lowest free slot: a demo alone on the machine always gets 0,
/// so its addresses are the documented 127.0.x.y.
fn take_slot() -> Result<Slot, DemoError> {
    for octet in 0..SLOTS {
        let name = format!("portcall-demo-slot-{octet}");
        let bound = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())
            .and_then(|addr| UnixListener::bind_addr(&addr));
        match bound {
            Ok(hold) => {
                return Ok(Slot {
                    octet,
                    _hold: Some(hold),
                });
            }
            Err(e) if e.kind() != std::io::ErrorKind::AddrInUse => {
                tracing::warn!(error = %e, "cannot hold a demo slot; playing on 127.0.x.y unguarded");
                return Ok(Slot {
                    octet: 0,
                    _hold: None,
                });
            }
            // Held by another demo: try the next slot.
            Err(_) => {}
        }
    }
    Err(DemoError::Busy)
}

/// A planned port moved because a normal user cannot bind it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortMove {
    /// The host.
    pub host: String,
    /// The port's name.
    pub service: String,
    /// The plan's port.
    pub from: Port,
    /// The port the demo uses.
    pub to: Port,
}

/// A plan rewritten to run on loopback.
#[derive(Debug, Clone)]
pub struct LoopbackPlan {
    /// The rewritten plan: loopback addresses, low ports moved.
    pub plan: Plan,
    /// Each host's original and loopback address.
    pub addresses: Vec<(String, Address, IpAddr)>,
    /// Every port moved.
    pub moves: Vec<PortMove>,
    /// The second octet of every loopback address.
    pub octet: u8,
}

/// Rewrites `plan` for loopback: each host gets its own 127.0.x.y (the last
/// two octets of its IPv4 address when those are unique and usable, else
/// numbered in order), and each planned port below 1024 moves up by
/// [`LOW_PORT_SHIFT`] (further if that collides on the host).
pub fn to_loopback(plan: &Plan) -> Result<LoopbackPlan, DemoError> {
    to_loopback_at(plan, 0)
}

/// [`to_loopback`] on 127.`octet`.x.y.
pub fn to_loopback_at(plan: &Plan, octet: u8) -> Result<LoopbackPlan, DemoError> {
    let n = plan.hosts.len();
    if n > 65_000 {
        return Err(DemoError::TooManyHosts { hosts: n });
    }
    let tails: Vec<Option<(u8, u8)>> = plan
        .hosts
        .iter()
        .map(|h| match h.address {
            Address::Ip(IpAddr::V4(a)) => {
                let o = a.octets();
                (o[3] != 0 && o[3] != 255 && (o[2], o[3]) != (0, 1)).then_some((o[2], o[3]))
            }
            _ => None,
        })
        .collect();
    let unique = tails.iter().all(Option::is_some)
        && tails.iter().collect::<HashSet<_>>().len() == tails.len();
    let ips: Vec<IpAddr> = (0..n)
        .map(|i| {
            let (c, d) = match (unique, tails[i]) {
                (true, Some(t)) => t,
                _ => {
                    let k = i + 1;
                    (1 + (k / 250) as u8, (k % 250) as u8 + 1)
                }
            };
            IpAddr::V4(Ipv4Addr::new(127, octet, c, d))
        })
        .collect();

    let mut out = plan.clone();
    let mut moves = Vec::new();
    let mut addresses = Vec::new();
    for (h, ip) in out.hosts.iter_mut().zip(&ips) {
        addresses.push((h.name.clone(), h.address.clone(), *ip));
        h.address = Address::Ip(*ip);
        h.addresses = vec![h.address.clone()];
        let mut used: BTreeSet<u16> = h.ports.iter().map(|p| p.port.get()).collect();
        let mut moved: BTreeMap<u16, Port> = BTreeMap::new();
        for p in &mut h.ports {
            let from = p.port.get();
            if from >= 1024 {
                continue;
            }
            let to = match moved.get(&from) {
                Some(to) => *to,
                None => {
                    let mut to = from + LOW_PORT_SHIFT;
                    while used.contains(&to) {
                        to += 1;
                    }
                    used.insert(to);
                    let to = Port::new(to).expect("below 1024 plus 10000 and a few is a port");
                    moved.insert(from, to);
                    moves.push(PortMove {
                        host: h.name.clone(),
                        service: p.name.clone(),
                        from: p.port,
                        to,
                    });
                    to
                }
            };
            p.port = to;
        }
    }
    let by_host: BTreeMap<&str, IpAddr> = addresses
        .iter()
        .map(|(name, _, ip)| (name.as_str(), *ip))
        .collect();
    // Loopback has one family here: a dual-stack pair's paths become one.
    let mut kept = HashSet::new();
    out.paths
        .retain(|p| kept.insert((p.from.clone(), p.to.clone(), p.port)));
    for path in &mut out.paths {
        if let Some(ip) = by_host.get(path.to.as_str()) {
            path.address = Address::Ip(*ip);
            path.family = Some(Family::of(*ip));
        }
        if path.role.is_some() {
            if let Some(m) = moves
                .iter()
                .find(|m| m.host == path.to && m.from == path.port)
            {
                path.port = m.to;
            }
        }
    }
    Ok(LoopbackPlan {
        plan: out,
        addresses,
        moves,
        octet,
    })
}

/// The result of a demo run.
#[derive(Debug, Clone)]
pub struct DemoRun {
    /// The round's report.
    pub report: Report,
    /// What the user should know about loopback, one sentence each.
    pub notes: Vec<String>,
}

impl DemoRun {
    /// The demo's exit code. On loopback every must-be-blocked path is
    /// inevitably open, so those violations are the demo working as
    /// designed, not a failure: 0 when the only violations are
    /// must-be-blocked paths observed open, 1 for any other violation (a
    /// must-be-open path that failed means something is wrong on this
    /// machine, and wins over errors), else 3 when some path could not be
    /// measured.
    pub fn exit_code(&self) -> u8 {
        let r = &self.report;
        let unexpected = r.paths.iter().any(|p| {
            p.verdict == Verdict::Violation
                && !(p.expect == Expect::Blocked && p.observed == Some(Observed::Open))
        });
        if unexpected {
            1
        } else if r.summary.errors > 0 {
            3
        } else {
            0
        }
    }
}

/// Runs the embedded WSO2 plan on loopback.
pub async fn run_wso2() -> Result<DemoRun, DemoError> {
    let plan = Plan::parse(WSO2_PLAN, WSO2_PLAN_FILE)?;
    run(&plan).await
}

/// Plays `plan` on loopback: one in-process agent per host that takes part,
/// a throwaway CA, one round through [`round::check`].
pub async fn run(plan: &Plan) -> Result<DemoRun, DemoError> {
    let slot = take_slot()?;
    let lp = to_loopback_at(plan, slot.octet)?;
    let plan = Arc::new(lp.plan.clone());
    let ca = Authority::generate("portcall demo CA")?;
    let ca_pem = ca.pem().cert_pem.clone();
    let identity = |name: &str, ip: Option<IpAddr>| -> Result<TlsIdentity, PkiError> {
        let mut req = IssueRequest::new(name);
        req.ips.extend(ip);
        let pair = ca.issue(&req)?;
        TlsIdentity::from_pem(name, &ca_pem, &pair.cert_pem, &pair.key_pem)
    };
    let coordinator = identity(COORDINATOR, None)?;

    let involved: BTreeSet<&str> = plan
        .paths
        .iter()
        .flat_map(|p| [p.from.as_str(), p.to.as_str()])
        .collect();
    let cancel = CancellationToken::new();
    let tracker = TaskTracker::new();
    let mut endpoints = BTreeMap::new();
    let mut started = Ok(());
    for (name, _, ip) in &lp.addresses {
        if !involved.contains(name.as_str()) {
            continue;
        }
        let id = identity(name, Some(*ip))?;
        let config = AgentConfig {
            plan: plan.clone(),
            host: name.clone(),
            security: ServerSecurity::Mtls(id.control_server_config()?),
            canary_tls: id.canary_server_config()?,
            listen: Some(SocketAddr::new(*ip, 0)),
            coordinator: COORDINATOR.to_string(),
            limits: AgentLimits::default(),
            rule_trace: false,
        };
        match Agent::bind(config).await {
            Ok(agent) => {
                endpoints.insert(name.clone(), agent.local_addr());
                tracker.spawn(agent.run(cancel.clone()));
            }
            Err(source) => {
                started = Err(DemoError::Agent {
                    host: name.clone(),
                    source,
                });
                break;
            }
        }
    }
    let report = match started {
        Ok(()) => {
            let config = RoundConfig {
                endpoints,
                ..RoundConfig::default()
            };
            Ok(round::check(&plan, &ClientSecurity::Mtls(coordinator), &config, &cancel).await)
        }
        Err(e) => Err(e),
    };
    cancel.cancel();
    tracker.close();
    tracker.wait().await;
    let mut report = report?;
    drop(slot);
    let notes = notes(&lp, &report);
    report.notes = notes.clone();
    Ok(DemoRun { notes, report })
}

fn notes(lp: &LoopbackPlan, report: &Report) -> Vec<String> {
    let mut notes = vec![format!(
        "demo: plan {} played on loopback: each of its {} hosts is an in-process agent on its own 127.{}.x.y address (mutual TLS with a throwaway CA), through the same round as `portcall check`",
        report.plan,
        lp.addresses.len(),
        lp.octet
    )];
    if lp.octet != 0 {
        notes.push(format!(
            "another portcall demo is running on this machine, so this one plays on 127.{}.x.y instead of 127.0.x.y",
            lp.octet
        ));
    }
    if !lp.moves.is_empty() {
        let moved: Vec<String> = lp
            .moves
            .iter()
            .map(|m| format!("{} {} {} -> {}", m.host, m.service, m.from, m.to))
            .collect();
        notes.push(format!(
            "ports below 1024 need privileges, so they are played {} higher: {}",
            LOW_PORT_SHIFT,
            moved.join(", ")
        ));
    }
    let blocked_open = report
        .paths
        .iter()
        .filter(|p| p.expect == Expect::Blocked && p.observed == Some(Observed::Open))
        .count();
    notes.push(format!(
        "nothing filters traffic on loopback, so the {blocked_open} must-be-blocked paths show up as violations: exactly what a missing firewall rule looks like"
    ));
    notes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_wso2_plan_maps_onto_distinct_loopback_addresses_with_low_ports_moved() {
        let plan = Plan::parse(WSO2_PLAN, WSO2_PLAN_FILE).unwrap();
        let lp = to_loopback(&plan).unwrap();
        let ips: HashSet<IpAddr> = lp.addresses.iter().map(|a| a.2).collect();
        assert_eq!(ips.len(), plan.hosts.len());
        assert!(ips.iter().all(IpAddr::is_loopback));
        let lb = lp.plan.host("lb").unwrap();
        assert_eq!(lb.address.to_string(), "127.0.1.10");
        let ports: Vec<u16> = lb.ports.iter().map(|p| p.port.get()).collect();
        assert_eq!(ports, [10_080, 10_443]);
        assert_eq!(lp.moves.len(), 2);
        assert!(lp.plan.paths.iter().all(|p| p.port.get() >= 1024));
        assert!(
            lp.plan
                .paths
                .iter()
                .all(|p| matches!(p.address, Address::Ip(ip) if ip.is_loopback()))
        );
        assert_eq!(lp.plan.paths.len(), plan.paths.len());
    }
}
