//! The third step of joining a path: the `detail` words for what was
//! observed, by what the target offered (a canary, a dialled empty port, a
//! live service). Words only: every decision was taken from the evidence's
//! fields before; the prober's own words are shown, never read.

use super::super::PathReport;
use super::super::blame::TargetStage;
use super::super::evidence::{note_elsewhere, silence_words};
use super::classify::Listener;
use super::observe::Case;
use crate::control::listening_words;
use crate::port::Protocol;
use crate::probe::Observed;

/// The path's detail for `observed`, and the address of the host our
/// nonce turned up at instead of the target, if it did (for the blame).
pub(super) fn describe(
    c: &Case<'_>,
    observed: Observed,
    r: &PathReport,
) -> (String, Option<String>) {
    let w = Words { c, r };
    match c.listener {
        Listener::Canary => w.at_canary(observed),
        Listener::Dialled => (w.dialled(), None),
        Listener::Live { why } => (w.live(why), None),
        Listener::Elsewhere => (w.elsewhere(), None),
    }
}

/// The phrases the details share.
struct Words<'c, 'a> {
    c: &'c Case<'a>,
    r: &'c PathReport,
}

impl Words<'_, '_> {
    /// "dropped: no answer within N ms (k attempts)" and `whose`.
    fn silence(&self, whose: &str) -> String {
        let timeout_ms = self.c.plan.defaults.timeout_ms;
        format!(
            "dropped: {}{whose}",
            silence_words(self.c.probe, timeout_ms)
        )
    }

    /// `base`, with the prober's detail in parentheses when it has one.
    fn with(&self, base: String) -> String {
        if self.c.probe.detail.is_empty() {
            base
        } else {
            format!("{base} ({})", self.c.probe.detail)
        }
    }

    /// Who sent the ICMP error that came back, if one did.
    fn icmp(&self, canary: &str) -> Option<String> {
        let to = self.c.path.to;
        let source = self.c.path.from;
        let own = self.c.round.agents.get(source).is_some_and(|src| {
            super::super::evidence::icmp_from_source(self.c.plan, source, src, self.c.probe)
        });
        self.c.probe.icmp.as_ref().map(|icmp| {
            let from_target = icmp.from == self.r.address;
            if own {
                // The source's own kernel: ARP or neighbour discovery failed.
                match &self.c.probe.neighbour {
                    Some(n) => format!(
                        "neighbour discovery failed: {source}'s neighbour entry for {} is {} (no answer to ARP or neighbour solicitation), so nothing was sent{canary}",
                        n.address, n.state
                    ),
                    None => format!(
                        "{source}'s own kernel reported {to} unreachable (ICMP {} from {}): its neighbour resolution failed, so nothing was sent{canary}",
                        icmp.kind, icmp.from
                    ),
                }
            } else if from_target {
                format!("rejected by {to} (ICMP {}){canary}", icmp.kind)
            } else {
                format!(
                    "rejected by {} (ICMP {}), a device on the way, not {to}",
                    icmp.from, icmp.kind
                )
            }
        })
    }

    /// The source's own refusal to send.
    fn denied(&self, whose: &str) -> String {
        self.with(format!(
            "refused on {} itself before anything was sent: its own packet filter or security policy{whose}",
            self.c.path.from
        ))
    }

    fn at_canary(&self, observed: Observed) -> (String, Option<String>) {
        let (path, probe) = (self.c.path, self.c.probe);
        let canary = format!(" while the canary of {} was listening", path.to);
        let half_open = self.r.target_stage == Some(TargetStage::Syn);
        let mut redirected_to = None;
        let detail = match observed {
            Observed::Open => format!(
                "{} saw our nonce from {}",
                path.to,
                self.r.seen_source.as_deref().unwrap_or("?")
            ),
            Observed::Timeout if half_open => format!(
                "return path lost: {} got our SYN but its answers never came back; {}",
                path.to,
                self.silence("")
            ),
            Observed::Timeout => self.silence(&canary),
            Observed::Unreachable if self.c.denied => self.denied(&canary),
            Observed::Unreachable | Observed::Refused if probe.icmp.is_some() => {
                self.icmp(&canary).unwrap_or_default()
            }
            Observed::Unreachable => self.with(format!("rejected with an ICMP error{canary}")),
            Observed::Refused => {
                format!("reset (TCP RST){canary}: a firewall rejects with reset")
            }
            _ if probe.path_mtu => probe.detail.to_string(),
            Observed::TlsError | Observed::WrongHost if half_open => format!(
                "handshake incomplete at {}: our SYN arrived, but the rest of the connection never did (a stateless filter or an asymmetric route); {}",
                path.to, probe.detail
            ),
            Observed::TlsError => self.with(format!("TLS with the canary of {} failed", path.to)),
            Observed::WrongHost => {
                let mut s = if probe.observed == Observed::Open {
                    format!(
                        "connected, but the canary of {} did not record our nonce",
                        path.to
                    )
                } else {
                    probe.detail.to_string()
                };
                let c = self.c;
                note_elsewhere(c.plan, c.round, path, probe, &mut s, &mut redirected_to);
                s
            }
            Observed::LocalError | Observed::WrongService | Observed::Lossy => {
                probe.detail.to_string()
            }
        };
        (detail, redirected_to)
    }

    fn dialled(&self) -> String {
        let (path, probe) = (self.c.path, self.c.probe);
        let port = path.port.get();
        let sp = path.server_port.map_or(0, |p| p.get());
        let note = format!(
            "{} dials {port}; {}'s {} listens on {sp}",
            path.from, path.to, path.service
        );
        match probe.observed {
            Observed::Refused => format!("refused: {note}, and nothing listens on {port}"),
            Observed::Open => format!("connected to something else on {port}: {note}"),
            Observed::Timeout => self.silence(&format!("; {note}")),
            _ => self.with(note),
        }
    }

    /// Words for a path whose service listens only at other addresses:
    /// where it listens, by which process, and what the path met.
    fn elsewhere(&self) -> String {
        let (path, probe) = (self.c.path, self.c.probe);
        let there = listening_words(&self.r.listening_elsewhere);
        let here = match self.r.address.parse::<std::net::IpAddr>() {
            Ok(ip) => std::net::SocketAddr::new(ip, path.port.get()).to_string(),
            Err(_) => format!("{}:{}", self.r.address, path.port.get()),
        };
        let note = format!(" ({there}; no canary, so nothing listens on {here})");
        match probe.observed {
            Observed::Refused if probe.icmp.is_none() => {
                format!("refused: nothing listens on {here}; {there}")
            }
            Observed::Open => format!(
                "connected: something listens on {here} now, though {} listed only other addresses when the round was prepared ({there})",
                path.to
            ),
            Observed::Timeout => self.silence(&note),
            Observed::Unreachable if self.c.denied => self.denied(&note),
            Observed::Unreachable | Observed::Refused => self
                .icmp(&note)
                .unwrap_or_else(|| self.with(format!("rejected with an ICMP error{note}"))),
            Observed::TlsError
            | Observed::WrongHost
            | Observed::WrongService
            | Observed::Lossy
            | Observed::LocalError => self.with(format!("unexpected{note}")),
        }
    }

    fn live(&self, why: &str) -> String {
        let (path, probe) = (self.c.path, self.c.probe);
        let udp = path.protocol == Protocol::Udp;
        let live = format!(" ({why})");
        match probe.observed {
            Observed::Open if udp => self.with(format!("the live service answered{live}")),
            Observed::Open => match &probe.service_answer {
                Some(a) => format!("connected to the live service{live}; {}", a.summary()),
                None => format!("connected to the live service{live}"),
            },
            Observed::WrongService => format!(
                "right port, wrong service on {}:{}{live}: {}",
                path.to,
                path.port.get(),
                probe.detail
            ),
            Observed::Refused if probe.icmp.is_none() => format!(
                "refused: service down on {}:{}{live}; a refusal here cannot tell a firewall reset from a stopped service",
                path.to,
                path.port.get()
            ),
            Observed::Timeout => self.silence(&live),
            Observed::Unreachable if self.c.denied => self.denied(&live),
            Observed::Unreachable | Observed::Refused => self
                .icmp(&live)
                .unwrap_or_else(|| self.with(format!("rejected with an ICMP error{live}"))),
            Observed::TlsError if probe.path_mtu => probe.detail.to_string(),
            Observed::TlsError => self.with(format!("TLS with the live service failed{live}")),
            Observed::Lossy => format!("{}{live}", probe.detail),
            Observed::WrongHost | Observed::LocalError => self.with(format!("unexpected{live}")),
        }
    }
}
