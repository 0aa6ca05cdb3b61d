//! The firewall commands that would fix a report's violations, as a shell
//! script per host: the last step from "what is wrong" to "what to change",
//! for `nft`, `iptables`/`ip6tables` and `firewalld`.
//!
//! For each violation the rule goes on the path's target host, restricted to
//! the path's source address and port:
//! - a must-be-open path gets an accept, inserted at the head of the chain
//!   (or, for firewalld, a rich rule of priority -32768) so that it precedes
//!   the drops and rejects that stopped it;
//! - a must-be-blocked path gets a drop for the port, also inserted at the
//!   head (firewalld: priority -32767), so that it precedes any accept that
//!   let it through, with accepts for the port's must-be-open sources
//!   inserted ahead of it (firewalld: at -32768, which sorts first).
//!
//! The layout: `decide` (which host, which [`Action`]), `rule` (the one
//! rule model every action becomes), `backend` (the firewall, its names
//! checked) with `nft`, `iptables` and `firewalld` (each one's syntax),
//! `quote` (what makes the script safe for `sh`) and `script` (the
//! script's text).
//!
//! Which source address: the one the target's firewall sees. When the
//! target's canary saw the connection (`seen_source`, present for paths
//! observed open) that is exactly it, after any address translation on the
//! way, so it wins over the source's planned address; the script says so
//! when they differ. Otherwise (a must-be-open path that never arrived) the
//! planned address (`hosts[].address` of the source) is the best available:
//! if a NAT rewrites it before the target, the rule has to name the
//! translated address instead.
//!
//! Some violations have no fix at the target, and the script says why in
//! `#` comments instead of guessing: a connection refused by the source's
//! own egress policy (`unreachable` with the path's `local_denial` errno,
//! `EPERM`/`EACCES`; reported under the source host), a connection
//! answered by another host (`wrong-host`: a NAT or redirect, not a
//! filter), a failed TLS handshake over a TCP path that
//! works, a live service that refused (the service is down), and paths that
//! were not measured at all (`error`).
//!
//! An output-chain *drop* on the source is not among them: Linux ignores the
//! error of a SYN its own netfilter dropped and retransmits until the
//! deadline, so the prober sees a `timeout` like any other drop. For
//! timeouts the script suggests the accept at the target and says where
//! else the drop may be.
//!
//! Every command token is either fixed text, a number, an address printed
//! from its parsed form, or a validated name, and is still quoted for `sh`;
//! names from the report only ever appear inside comments, with control
//! characters removed so that a line break cannot start a command.

mod backend;
mod decide;
mod firewalld;
mod iptables;
mod model;
mod nft;
mod options;
mod quote;
mod rule;
mod script;

use super::{Report, Verdict};
use crate::port::Protocol;
use backend::Backend;
pub use model::{Action, HostSuggestions, Item, Suggestions};
pub use options::{FirewallFormat, SuggestError, SuggestOptions};

/// Works out, for every violation (and unmeasured path) of `report`, the
/// rule that fixes it or why none can.
pub fn suggest(report: &Report, options: &SuggestOptions) -> Result<Suggestions, SuggestError> {
    let backend = Backend::new(options)?;
    if let Some(r) = &options.router
        && !report.hosts.iter().any(|h| &h.name == r)
    {
        return Err(SuggestError::UnknownRouter {
            host: r.clone(),
            known: report
                .hosts
                .iter()
                .map(|x| x.name.as_str())
                .collect::<Vec<_>>()
                .join(", "),
        });
    }
    if let Some(h) = &options.host {
        let known = report.hosts.iter().any(|x| &x.name == h)
            || report.paths.iter().any(|p| &p.from == h || &p.to == h);
        if !known {
            return Err(SuggestError::UnknownHost {
                host: h.clone(),
                known: report
                    .hosts
                    .iter()
                    .map(|x| x.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
            });
        }
    }
    let mut hosts: Vec<HostSuggestions> = Vec::new();
    // The first path whose item holds each (host, port)'s default deny.
    let mut denied: Vec<(String, u16, Protocol, String)> = Vec::new();
    for p in report.paths.iter().filter(|p| p.verdict != Verdict::Ok) {
        let (host, mut item) = decide::decide(report, &backend, options.router.as_deref(), p);
        if let Action::DefaultDeny { port, .. } = item.action {
            let udp = |p: Protocol| p == Protocol::Udp;
            match denied
                .iter()
                .find(|(h, q, pr, _)| *h == host && *q == port && udp(*pr) == udp(item.protocol))
            {
                Some((_, _, _, by)) => {
                    item.notes.clear();
                    item.action = Action::Covered { by: by.clone() };
                }
                None => denied.push((host.clone(), port, item.protocol, item.path.clone())),
            }
        }
        if options.host.as_ref().is_some_and(|h| *h != host) {
            continue;
        }
        match hosts.iter_mut().find(|x| x.host == host) {
            Some(x) => x.items.push(item),
            None => hosts.push(HostSuggestions {
                address: report
                    .hosts
                    .iter()
                    .find(|x| x.name == host)
                    .map(|x| x.address.clone()),
                host,
                items: vec![item],
            }),
        }
    }
    let order = |name: &str| {
        report
            .hosts
            .iter()
            .position(|x| x.name == name)
            .unwrap_or(usize::MAX)
    };
    hosts.sort_by_key(|x| order(&x.host));
    Ok(Suggestions {
        format: options.format,
        backend,
        plan: report.plan.clone(),
        finished_at: report.finished_at.clone(),
        only: options.host.clone(),
        hosts,
    })
}

#[cfg(test)]
mod tests {
    use expect_test::expect;

    use super::quote::sh_quote;
    use super::*;
    use crate::plan::Expect;
    use crate::port::Protocol;
    use crate::probe::Observed;
    use crate::report::PathReport;
    use crate::report::blame::{Blame, Where};
    use crate::report::{AgentState, HostReport, Summary};

    fn host(name: &str, address: &str) -> HostReport {
        HostReport {
            name: name.into(),
            address: address.into(),
            agent: AgentState::Up,
            conflicts: vec![],
            agent_detail: None,
            plan_mismatch: None,
            zone: None,
            addresses: vec![],
            rule_trace: None,
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn path(
        from: &str,
        to: &str,
        port: u16,
        expect: Expect,
        observed: Option<Observed>,
        verdict: Verdict,
        detail: &str,
        seen: Option<&str>,
    ) -> PathReport {
        PathReport {
            from: from.into(),
            to: to.into(),
            address: match to {
                "db" => "198.18.0.4".into(),
                "db6" => "2001:db8::4".into(),
                _ => "198.18.0.9".into(),
            },
            port,
            service: "svc".into(),
            protocol: Protocol::Tcp,
            expect,
            observed,
            verdict,
            detail: detail.into(),
            latency_ms: Some(1.0),
            attempts: 1,
            target_saw: seen.map(|_| true).or(match observed {
                Some(Observed::Timeout | Observed::Refused) => Some(false),
                _ => None,
            }),
            seen_source: seen.map(str::to_string),
            family: Some(if to == "db6" {
                crate::plan::Family::Ipv6
            } else {
                crate::plan::Family::Ipv4
            }),
            icmp: None,
            target_stage: None,
            blame: None,
            flows: vec![],
            flow_from: vec![],
            server_port: None,
            tls_ms: None,
            flow: String::new(),
            role: None,
            cert: None,
            service_banner: None,
            arrived: None,
            local_denial: None,
            listening_elsewhere: Vec::new(),
            proof: None,
            service_answer: None,
            answered: None,
            quality: None,
        }
    }

    /// One path of every kind the script treats differently.
    pub(crate) fn report() -> Report {
        use Expect::*;
        use Observed as O;
        use Verdict as V;
        let mut r = Report {
            notes: Vec::new(),
            schema: crate::report::SCHEMA.into(),
            plan: "suggest".into(),
            started_at: "2025-01-01T00:00:00.000Z".into(),
            finished_at: "2025-01-01T00:00:01.000Z".into(),
            summary: Summary::default(),
            hosts: vec![
                host("web", "198.18.0.2"),
                host("web6", "2001:db8::2"),
                host("nat", "198.18.0.3"),
                host("db", "198.18.0.4"),
                host("db6", "2001:db8::4"),
                host("named", "web.example"),
                host("ops", "198.18.0.7"),
            ],
            paths: vec![
                path(
                    "web",
                    "db",
                    3306,
                    Open,
                    Some(O::Open),
                    V::Ok,
                    "db saw our nonce from 198.18.0.2",
                    Some("198.18.0.2"),
                ),
                path(
                    "web",
                    "db",
                    5432,
                    Open,
                    Some(O::Timeout),
                    V::Violation,
                    "dropped: no answer within 500 ms (2 attempts) while the canary of db was listening",
                    None,
                ),
                path(
                    "web6",
                    "db6",
                    5432,
                    Open,
                    Some(O::Refused),
                    V::Violation,
                    "reset (TCP RST) while the canary of db6 was listening: a firewall rejects with reset",
                    None,
                ),
                path(
                    "web",
                    "db",
                    22,
                    Blocked,
                    Some(O::Open),
                    V::Violation,
                    "db saw our nonce from 198.18.0.2",
                    Some("198.18.0.2"),
                ),
                path(
                    "ops",
                    "db",
                    22,
                    Open,
                    Some(O::Open),
                    V::Ok,
                    "db saw our nonce from 2001:db8::7",
                    Some("2001:db8::7"),
                ),
                path(
                    "nat",
                    "db",
                    22,
                    Blocked,
                    Some(O::Open),
                    V::Violation,
                    "db saw our nonce from 198.18.0.1",
                    Some("198.18.0.1"),
                ),
                path(
                    "web6",
                    "db6",
                    22,
                    Blocked,
                    Some(O::Open),
                    V::Violation,
                    "db6 saw our nonce from 2001:db8::2",
                    Some("2001:db8::2"),
                ),
                path(
                    "web",
                    "db",
                    9443,
                    Open,
                    Some(O::Unreachable),
                    V::Violation,
                    "refused on web itself before anything was sent: its own packet filter or security policy while the canary of db was listening (EPERM (operation not permitted))",
                    None,
                ),
                path(
                    "web",
                    "db",
                    8080,
                    Open,
                    Some(O::Unreachable),
                    V::Violation,
                    "rejected with an ICMP error while the canary of db was listening (EHOSTUNREACH (no route to host))",
                    None,
                ),
                path(
                    "web",
                    "db",
                    8243,
                    Open,
                    Some(O::TlsError),
                    V::Violation,
                    "TLS with the canary of db failed (alert: handshake failure)",
                    None,
                ),
                path(
                    "web",
                    "db",
                    7611,
                    Open,
                    Some(O::WrongHost),
                    V::Violation,
                    "connected, but the canary of db did not record our nonce",
                    None,
                ),
                path(
                    "web",
                    "db",
                    6379,
                    Open,
                    Some(O::Refused),
                    V::Error,
                    "refused: service down on db:6379 (a real service holds the port)",
                    None,
                ),
                path(
                    "web",
                    "db6",
                    1,
                    Open,
                    None,
                    V::Error,
                    "target agent db6 unreachable, nothing to measure against: connect refused",
                    None,
                ),
                path(
                    "named",
                    "db",
                    5432,
                    Open,
                    Some(O::Timeout),
                    V::Violation,
                    "dropped",
                    None,
                ),
            ],
        };
        r.paths[11].target_saw = None;
        // web's own kernel refused to send to 9443.
        r.paths
            .iter_mut()
            .find(|p| p.port == 9443)
            .expect("the 9443 path")
            .local_denial = Some(libc::EPERM);
        // The internet zone's flow to the console port.
        r.paths[3].flow_from = vec!["zone:dmz".into()];
        for h in &mut r.hosts[..3] {
            h.zone = Some("dmz".into());
        }
        r.hosts[2].addresses = vec!["198.18.0.3".into(), "2001:db8::13".into()];
        r.recount();
        r
    }

    fn script(options: &SuggestOptions) -> String {
        let s = suggest(&report(), options).unwrap();
        let mut out = Vec::new();
        s.write(&mut out).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn a_service_listening_elsewhere_gets_no_firewall_rule_but_its_bind_address() {
        let mut r = report();
        r.paths.clear();
        let mut p = path(
            "web",
            "db",
            3307,
            Expect::Open,
            Some(Observed::Refused),
            Verdict::Violation,
            "refused: nothing listens on 198.18.0.4:3307; mariadbd listens on 127.0.0.1:3307 only",
            None,
        );
        p.target_saw = None;
        p.listening_elsewhere = vec![crate::control::ListeningSocket {
            address: "127.0.0.1:3307".parse().unwrap(),
            process: Some("mariadbd".into()),
            pid: Some(42),
        }];
        r.paths = vec![p];
        r.recount();
        let s = suggest(&r, &SuggestOptions::new(FirewallFormat::Nft)).unwrap();
        let mut out = Vec::new();
        s.write(&mut out).unwrap();
        let out = String::from_utf8(out).unwrap();
        assert!(
            out.contains(
                "mariadbd listens on 127.0.0.1:3307 only, not on 198.18.0.4: make it listen there"
            ),
            "{out}"
        );
        assert!(!out.contains("dport 3307"), "no rule: {out}");
    }

    #[test]
    fn udp_violations_get_udp_rules_in_every_backend() {
        use Expect::*;
        let mut r = report();
        r.paths.clear();
        // A dropped must-be-open 53/udp (blamed on the target), a
        // must-be-blocked 514/udp that got through, and an open 53/tcp that
        // must stay out of the UDP default deny.
        let mut dropped = path(
            "web",
            "db",
            53,
            Open,
            Some(Observed::Timeout),
            Verdict::Violation,
            "dropped",
            None,
        );
        dropped.protocol = Protocol::Udp;
        dropped.arrived = Some(0);
        dropped.blame = Some(Blame {
            at: Where::Target,
            hop: None,
            hop_distance: None,
            cause: super::super::blame::Cause::Drop,
            rule: None,
        });
        let mut through = path(
            "web",
            "db",
            514,
            Blocked,
            Some(Observed::Open),
            Verdict::Violation,
            "db saw our nonce",
            Some("198.18.0.2"),
        );
        through.protocol = Protocol::Udp;
        let mut tcp = path(
            "ops",
            "db",
            514,
            Open,
            Some(Observed::Open),
            Verdict::Ok,
            "",
            None,
        );
        tcp.protocol = Protocol::Tcp;
        r.paths = vec![dropped, through, tcp];
        r.recount();
        let run = |format| {
            let s = suggest(&r, &SuggestOptions::new(format)).unwrap();
            let mut out = Vec::new();
            s.write(&mut out).unwrap();
            String::from_utf8(out).unwrap()
        };
        let nft = run(FirewallFormat::Nft);
        assert!(
            nft.contains(
                "nft insert rule inet filter input ip saddr 198.18.0.2 udp dport 53 counter accept"
            ),
            "{nft}"
        );
        assert!(
            nft.contains("nft insert rule inet filter input udp dport 514 counter drop"),
            "{nft}"
        );
        // ops must reach 514/tcp, not 514/udp: the UDP deny keeps no one.
        assert!(!nft.contains("keep port 514 open for ops"), "{nft}");
        assert!(!nft.contains("tcp dport"), "{nft}");
        let ipt = run(FirewallFormat::Iptables);
        assert!(
            ipt.contains("iptables -w -I INPUT -s 198.18.0.2 -p udp --dport 53 "),
            "{ipt}"
        );
        assert!(
            ipt.contains("-p udp --dport 514 ") && !ipt.contains("-p tcp"),
            "{ipt}"
        );
        let fwd = run(FirewallFormat::Firewalld);
        assert!(
            fwd.contains(r#"port port="53" protocol="udp" accept"#),
            "{fwd}"
        );
        assert!(
            fwd.contains(r#"port port="514" protocol="udp" drop"#)
                && !fwd.contains(r#"protocol="tcp""#),
            "{fwd}"
        );
    }

    #[test]
    fn nft_script_accepts_drops_and_explains_the_rest() {
        expect![[r##"
            # portcall suggest --format nft: plan suggest, round finished 2025-01-01T00:00:01.000Z
            # Each rule is inserted at the head of chain input of table inet filter, so accepts precede the chain's drops and rejects, and drops precede its accepts; a port's default deny is its drop, then accepts for the port's must-be-open sources inserted ahead of it.
            # Review, then run each host's section on that host with sh.

            # host web (198.18.0.2)
            # web -> db:9443/tcp (svc)
            #   violation: must be open, observed unreachable: refused on web itself before anything was sent: its own packet filter or security policy while the canary of db was listening (EPERM (operation not permitted))
            #   NO RULE HERE: the connection never left web: connect failed locally with EPERM (operation not permitted), which is the source's own egress filter (an output-chain drop or reject, or a cgroup policy); allow TCP to 198.18.0.4:9443 in web's output rules, no rule on db can help

            # host db (198.18.0.4)
            # web -> db:5432/tcp (svc)
            #   violation: must be open, observed timeout: dropped: no answer within 500 ms (2 attempts) while the canary of db was listening
            #   note: dropped without an answer, which db's input filter, a network firewall on the way and web's own output filter all look like; if this rule does not fix it, allow the path there
            nft insert rule inet filter input ip saddr 198.18.0.2 tcp dport 5432 counter accept comment '"portcall: web -> db:5432/tcp (svc)"'
            # web -> db:22/tcp (svc)
            #   violation: must be blocked, observed open: db saw our nonce from 198.18.0.2
            #   note: the flow's source zone:dmz covers zone dmz's hosts web (198.18.0.2), web6 (2001:db8::2), nat (198.18.0.3, 2001:db8::13); the drop below blocks them and every other address the plan does not allow
            #   note: must stay open for ops: 198.18.0.7 (plan), 2001:db8::7 (seen by the target in this round, not in the plan)
            nft insert rule inet filter input tcp dport 22 counter drop comment '"portcall: default deny of port 22, web -> db:22/tcp (svc)"'
            nft insert rule inet filter input ip saddr 198.18.0.7 tcp dport 22 counter accept comment '"portcall: keep port 22 open for ops"'
            nft insert rule inet filter input ip6 saddr 2001:db8::7 tcp dport 22 counter accept comment '"portcall: keep port 22 open for ops"'
            # nat -> db:22/tcp (svc)
            #   violation: must be blocked, observed open: db saw our nonce from 198.18.0.1
            #   covered by the default deny written for web -> db:22/tcp (svc)
            # web -> db:8080/tcp (svc)
            #   violation: must be open, observed unreachable: rejected with an ICMP error while the canary of db was listening (EHOSTUNREACH (no route to host))
            nft insert rule inet filter input ip saddr 198.18.0.2 tcp dport 8080 counter accept comment '"portcall: web -> db:8080/tcp (svc)"'
            # web -> db:8243/tcp (svc)
            #   violation: must be open, observed tls-error: TLS with the canary of db failed (alert: handshake failure)
            #   NO RULE HERE: TCP reaches db:8243, only the TLS handshake failed: fix the certificate or TLS settings, not the firewall
            # web -> db:7611/tcp (svc)
            #   violation: must be open, observed wrong-host: connected, but the canary of db did not record our nonce
            #   NO RULE HERE: another host (or no agent) answered at 198.18.0.4:7611: an address translation, a redirect or a stale address sends the connection elsewhere, which no filter rule on db changes; fix the NAT or the address
            # web -> db:6379/tcp (svc)
            #   error: must be open, observed refused: refused: service down on db:6379 (a real service holds the port)
            #   NO RULE HERE: the live service on db:6379 refused the connection, so it is down (no canary held the port); start it, a firewall rule would not help
            # named -> db:5432/tcp (svc)
            #   violation: must be open, observed timeout: dropped
            #   note: dropped without an answer, which db's input filter, a network firewall on the way and named's own output filter all look like; if this rule does not fix it, allow the path there
            #   NO RULE HERE: named's address "web.example" is not an IP address and db saw no source, so a source-restricted rule cannot be written here; resolve the name and write the rule by hand

            # host db6 (2001:db8::4)
            # web6 -> db6:5432/tcp (svc)
            #   violation: must be open, observed refused: reset (TCP RST) while the canary of db6 was listening: a firewall rejects with reset
            nft insert rule inet filter input ip6 saddr 2001:db8::2 tcp dport 5432 counter accept comment '"portcall: web6 -> db6:5432/tcp (svc)"'
            # web6 -> db6:22/tcp (svc)
            #   violation: must be blocked, observed open: db6 saw our nonce from 2001:db8::2
            #   note: no flow of the plan must reach db6:22, so the port is dropped for every source
            nft insert rule inet filter input tcp dport 22 counter drop comment '"portcall: default deny of port 22, web6 -> db6:22/tcp (svc)"'
            # web -> db6:1/tcp (svc)
            #   error: must be open, observed nothing (not measured): target agent db6 unreachable, nothing to measure against: connect refused
            #   NO RULE HERE: the path was not measured, so there is nothing to fix yet; resolve the reason above and check again
        "##]]
        .assert_eq(&script(&SuggestOptions::new(FirewallFormat::Nft)));
    }

    #[test]
    fn a_silent_path_gets_the_sources_planned_address_of_its_family() {
        use crate::plan::Family;
        let mut r = report();
        let mut dual = host("dual", "198.18.0.5");
        dual.addresses = vec!["198.18.0.5".into(), "2001:db8::5".into()];
        r.hosts.push(dual);
        let dropped = |from: &str| {
            let mut p = path(
                from,
                "db6",
                5432,
                Expect::Open,
                Some(Observed::Timeout),
                Verdict::Violation,
                "dropped",
                None,
            );
            p.family = Some(Family::Ipv6);
            p
        };
        // A dual-stack source over IPv6, and an IPv4-only one whose IPv6
        // source its kernel chose unseen.
        r.paths = vec![dropped("dual"), dropped("web")];
        r.recount();
        let mut o = SuggestOptions::new(FirewallFormat::Nft);
        o.host = Some("db6".into());
        let s = suggest(&r, &o).unwrap();
        let mut out = Vec::new();
        s.write(&mut out).unwrap();
        let out = String::from_utf8(out).unwrap();
        assert!(
            out.contains("ip6 saddr 2001:db8::5 tcp dport 5432 counter accept"),
            "{out}"
        );
        assert!(!out.contains("198.18.0.5 tcp dport"), "{out}");
        assert!(
            out.contains(
                "NO RULE HERE: the plan gives web no ipv6 address and db6 saw no connection"
            ),
            "{out}"
        );
    }

    #[test]
    fn iptables_uses_ip6tables_for_ipv6_sources() {
        let mut o = SuggestOptions::new(FirewallFormat::Iptables);
        o.host = Some("db6".into());
        expect![[r#"
            # portcall suggest --format iptables: plan suggest, round finished 2025-01-01T00:00:01.000Z
            # Each rule is inserted at the head of chain INPUT (iptables for IPv4 sources, ip6tables for IPv6), so accepts precede the chain's drops and rejects, and drops precede its accepts; a port's default deny is its drop (both families), then accepts for the port's must-be-open sources inserted ahead of it.
            # Review, then run each host's section on that host with sh.

            # host db6 (2001:db8::4)
            # web6 -> db6:5432/tcp (svc)
            #   violation: must be open, observed refused: reset (TCP RST) while the canary of db6 was listening: a firewall rejects with reset
            ip6tables -w -I INPUT -s 2001:db8::2 -p tcp --dport 5432 -m comment --comment 'portcall: web6 -> db6:5432/tcp (svc)' -j ACCEPT
            # web6 -> db6:22/tcp (svc)
            #   violation: must be blocked, observed open: db6 saw our nonce from 2001:db8::2
            #   note: no flow of the plan must reach db6:22, so the port is dropped for every source
            iptables -w -I INPUT -p tcp --dport 22 -m comment --comment 'portcall: default deny of port 22, web6 -> db6:22/tcp (svc)' -j DROP
            ip6tables -w -I INPUT -p tcp --dport 22 -m comment --comment 'portcall: default deny of port 22, web6 -> db6:22/tcp (svc)' -j DROP
            # web -> db6:1/tcp (svc)
            #   error: must be open, observed nothing (not measured): target agent db6 unreachable, nothing to measure against: connect refused
            #   NO RULE HERE: the path was not measured, so there is nothing to fix yet; resolve the reason above and check again
        "#]]
        .assert_eq(&script(&o));
    }

    #[test]
    fn firewalld_rich_rules_with_priorities_and_a_reload() {
        let mut o = SuggestOptions::new(FirewallFormat::Firewalld);
        o.host = Some("db6".into());
        o.zone = Some("internal".into());
        expect![[r##"
            # portcall suggest --format firewalld: plan suggest, round finished 2025-01-01T00:00:01.000Z
            # Rich rules in the internal zone, accepts at priority -32768 and a port's default-deny drop at -32767, both ahead of the zone's other rules and its target.
            # Review, then run each host's section on that host with sh.

            # host db6 (2001:db8::4)
            # web6 -> db6:5432/tcp (svc)
            #   violation: must be open, observed refused: reset (TCP RST) while the canary of db6 was listening: a firewall rejects with reset
            firewall-cmd --permanent --zone=internal '--add-rich-rule=rule priority="-32768" family="ipv6" source address="2001:db8::2" port port="5432" protocol="tcp" accept'
            # web6 -> db6:22/tcp (svc)
            #   violation: must be blocked, observed open: db6 saw our nonce from 2001:db8::2
            #   note: no flow of the plan must reach db6:22, so the port is dropped for every source
            firewall-cmd --permanent --zone=internal '--add-rich-rule=rule priority="-32767" port port="22" protocol="tcp" drop'
            # web -> db6:1/tcp (svc)
            #   error: must be open, observed nothing (not measured): target agent db6 unreachable, nothing to measure against: connect refused
            #   NO RULE HERE: the path was not measured, so there is nothing to fix yet; resolve the reason above and check again
            # load the permanent rules into the running firewall
            firewall-cmd --reload
        "##]]
        .assert_eq(&script(&o));
    }

    #[test]
    fn host_filter_keeps_only_that_host_and_unknown_hosts_are_errors() {
        let mut o = SuggestOptions::new(FirewallFormat::Nft);
        o.host = Some("web".into());
        let text = script(&o);
        assert!(text.contains("# host web (198.18.0.2)"), "{text}");
        assert!(!text.contains("# host db"), "{text}");
        assert!(text.contains("egress filter"), "{text}");
        o.host = Some("nope".into());
        let err = suggest(&report(), &o).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("host \"nope\" is not in the report (its hosts: web, web6"),
            "{err}"
        );
    }

    #[test]
    fn a_client_server_port_mismatch_gets_no_firewall_rule() {
        let mut r = report();
        let mut p = path(
            "web",
            "db",
            10399,
            Expect::Open,
            Some(Observed::Refused),
            Verdict::Violation,
            "refused: web dials 10399; db's svc listens on 10402, and nothing listens on 10399",
            None,
        );
        p.server_port = Some(10402);
        r.paths = vec![p];
        r.recount();
        let s = suggest(&r, &SuggestOptions::new(FirewallFormat::Nft)).unwrap();
        let mut out = Vec::new();
        s.write(&mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(
            text.contains("NO RULE HERE: web dials 10399 but db listens on 10402: make the client and the server agree"),
            "{text}"
        );
        assert!(!text.contains("nft insert"), "{text}");
    }

    #[test]
    fn an_ip_table_cannot_take_ipv6_sources() {
        let mut o = SuggestOptions::new(FirewallFormat::Nft);
        o.table = Some("ip filter".into());
        o.host = Some("db6".into());
        let text = script(&o);
        assert!(
            text.contains("NO RULE HERE: table ip filter cannot match the IPv6 source 2001:db8::2"),
            "{text}"
        );
        assert!(
            text.contains(
                "NO RULE HERE: table ip filter cannot filter the IPv6 traffic to 2001:db8::4"
            ),
            "{text}"
        );
        assert!(!text.contains("nft insert"), "{text}");
    }

    #[test]
    fn bad_tables_chains_zones_and_misplaced_options_are_refused() {
        /// Format, table, chain, zone, and what the error must say.
        type Case<'a> = (
            FirewallFormat,
            Option<&'a str>,
            Option<&'a str>,
            Option<&'a str>,
            &'a str,
        );
        let cases: [Case; 7] = [
            (
                FirewallFormat::Nft,
                Some("filter"),
                None,
                None,
                "table \"filter\"",
            ),
            (
                FirewallFormat::Nft,
                Some("bridge filter"),
                None,
                None,
                "table \"bridge filter\"",
            ),
            (
                FirewallFormat::Nft,
                Some("inet f;x"),
                None,
                None,
                "table \"inet f;x\"",
            ),
            (
                FirewallFormat::Nft,
                None,
                Some("in put"),
                None,
                "chain \"in put\" is not a valid nft chain name",
            ),
            (
                FirewallFormat::Iptables,
                None,
                Some("-j"),
                None,
                "chain \"-j\"",
            ),
            (
                FirewallFormat::Iptables,
                Some("inet filter"),
                None,
                None,
                "--table does not apply to --format iptables",
            ),
            (
                FirewallFormat::Firewalld,
                None,
                None,
                Some("a'b"),
                "zone \"a'b\"",
            ),
        ];
        for (format, table, chain, zone, want) in cases {
            let o = SuggestOptions {
                format,
                host: None,
                table: table.map(Into::into),
                chain: chain.map(Into::into),
                zone: zone.map(Into::into),
                router: None,
            };
            let err = suggest(&report(), &o).unwrap_err().to_string();
            assert!(err.contains(want), "{err} lacks {want}");
        }
        assert!("pf".parse::<FirewallFormat>().is_err());
    }

    #[test]
    fn hostile_names_cannot_escape_their_comments() {
        let mut r = report();
        r.paths[1].from = "web\nrm -rf /tmp/x; echo '".into();
        r.hosts[0].name = r.paths[1].from.clone();
        let s = suggest(&r, &SuggestOptions::new(FirewallFormat::Nft)).unwrap();
        let mut out = Vec::new();
        s.write(&mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        for line in text.lines() {
            assert!(
                line.is_empty()
                    || line.starts_with('#')
                    || line.starts_with("nft insert rule inet filter input "),
                "{line}"
            );
            assert!(!line.starts_with("rm"), "{line}");
        }
        assert!(
            text.contains("comment '\"portcall: web_rm -rf /tmp/x; echo _ -> db:5432/tcp (svc)\"'"),
            "{text}"
        );
    }

    #[test]
    fn a_clean_report_needs_nothing() {
        let mut r = report();
        r.paths.truncate(1);
        let s = suggest(&r, &SuggestOptions::new(FirewallFormat::Nft)).unwrap();
        assert_eq!((s.rules(), s.manual()), (0, 0));
        let mut out = Vec::new();
        s.write(&mut out).unwrap();
        assert!(
            String::from_utf8(out)
                .unwrap()
                .ends_with("# nothing to change: every path meets its expectation\n")
        );
    }

    /// Regression: a drop in the network was "fixed" with an accept on the
    /// target host. Suggest follows `blame`: a network fault gets a
    /// paragraph for the network team (and, with --router, a forward rule
    /// on the router), an egress drop an output accept on the source, a
    /// target rule the accept in that rule's own table plus the rule it
    /// overrides, and an unknown place says so.
    #[test]
    fn an_accept_on_the_target_for_a_network_drop_changed_nothing() {
        use crate::report::blame::{Blame, BlameRule, Cause, Where};
        let mut r = report();
        r.paths.truncate(2);
        r.hosts.push(host("router", "198.18.0.254"));
        r.hosts[0].zone = Some("app".into());
        r.hosts[3].zone = Some("data".into());
        let rule = |host: &str,
                    chain: &str,
                    handle: Option<u64>,
                    text: Option<&str>,
                    policy: Option<&str>| BlameRule {
            host: host.into(),
            table: "inet portcall".into(),
            chain: chain.into(),
            handle,
            text: text.map(Into::into),
            policy: policy.map(Into::into),
        };
        let blame = |at, cause, hop: Option<&str>, rule| {
            Some(Blame {
                at,
                hop: hop.map(Into::into),
                hop_distance: hop.map(|_| 1),
                cause,
                rule,
            })
        };
        let mut network = r.paths[1].clone();
        network.blame = blame(Where::Network, Cause::Drop, Some("198.18.0.254"), None);
        let mut egress = r.paths[1].clone();
        egress.port = 5433;
        egress.blame = blame(
            Where::Source,
            Cause::Egress,
            None,
            Some(rule(
                "web",
                "output",
                Some(9),
                Some("ip daddr 198.18.0.4 tcp dport 5433 drop"),
                None,
            )),
        );
        let mut target = r.paths[1].clone();
        target.port = 5434;
        target.blame = blame(
            Where::Target,
            Cause::Drop,
            None,
            Some(rule(
                "db",
                "input",
                Some(4),
                Some("ip saddr 198.18.0.2 tcp dport 5434 drop"),
                None,
            )),
        );
        let mut policy = r.paths[1].clone();
        policy.port = 5435;
        policy.blame = blame(
            Where::Target,
            Cause::Drop,
            None,
            Some(rule("db", "input", None, None, Some("drop"))),
        );
        let mut unknown = r.paths[1].clone();
        unknown.port = 5436;
        unknown.blame = blame(Where::Unknown, Cause::Reset, None, None);
        r.paths = vec![network, egress, target, policy, unknown];
        r.recount();
        let run = |router: Option<&str>| {
            let mut o = SuggestOptions::new(FirewallFormat::Nft);
            o.router = router.map(Into::into);
            let s = suggest(&r, &o).unwrap();
            let mut out = Vec::new();
            s.write(&mut out).unwrap();
            String::from_utf8(out).unwrap()
        };
        expect![[r##"
            # portcall suggest --format nft: plan suggest, round finished 2025-01-01T00:00:01.000Z
            # Each rule is inserted at the head of chain input of table inet filter, so accepts precede the chain's drops and rejects, and drops precede its accepts; a port's default deny is its drop, then accepts for the port's must-be-open sources inserted ahead of it.
            # Review, then run each host's section on that host with sh.

            # host web (198.18.0.2)
            # web -> db:5433/tcp (svc)
            #   violation: must be open, observed timeout: dropped: no answer within 500 ms (2 attempts) while the canary of db was listening
            #   note: blamed on web: its own output filter stops the probe before it leaves (egress)
            #   note: overrides web: table inet portcall chain output rule handle 9 (ip daddr 198.18.0.4 tcp dport 5433 drop); or remove that rule on web: nft delete rule inet portcall output handle 9
            nft insert rule inet portcall output ip daddr 198.18.0.4 tcp dport 5433 counter accept comment '"portcall: web -> db:5433/tcp (svc)"'

            # host db (198.18.0.4)
            # web -> db:5432/tcp (svc)
            #   violation: must be open, observed timeout: dropped: no answer within 500 ms (2 attempts) while the canary of db was listening
            #   NO RULE HERE: blamed on the network: the device at 198.18.0.254 (hop 1 from web) stops it (drop); no rule on db or web can fix it. For the network team: allow TCP from web (198.18.0.2, zone app) to db (198.18.0.4, zone data) port 5432 at 198.18.0.254
            # web -> db:5434/tcp (svc)
            #   violation: must be open, observed timeout: dropped: no answer within 500 ms (2 attempts) while the canary of db was listening
            #   note: overrides db: table inet portcall chain input rule handle 4 (ip saddr 198.18.0.2 tcp dport 5434 drop); or remove that rule on db: nft delete rule inet portcall input handle 4
            nft insert rule inet portcall input ip saddr 198.18.0.2 tcp dport 5434 counter accept comment '"portcall: web -> db:5434/tcp (svc)"'
            # web -> db:5435/tcp (svc)
            #   violation: must be open, observed timeout: dropped: no answer within 500 ms (2 attempts) while the canary of db was listening
            #   note: overrides db: table inet portcall chain input policy drop
            nft insert rule inet portcall input ip saddr 198.18.0.2 tcp dport 5435 counter accept comment '"portcall: web -> db:5435/tcp (svc)"'
            # web -> db:5436/tcp (svc)
            #   violation: must be open, observed timeout: dropped: no answer within 500 ms (2 attempts) while the canary of db was listening
            #   note: where the path breaks is unknown (reset): the evidence cannot tell db's firewall from a device on the way, so this accept at db helps only if db's own firewall is what stops it
            nft insert rule inet filter input ip saddr 198.18.0.2 tcp dport 5436 counter accept comment '"portcall: web -> db:5436/tcp (svc)"'
        "##]].assert_eq(&run(None));
        let with_router = run(Some("router"));
        assert!(
            with_router.contains("# host router (198.18.0.254)\n# web -> db:5432/tcp (svc)\n"),
            "{with_router}"
        );
        assert!(
            with_router.contains("nft insert rule inet filter forward ip saddr 198.18.0.2 ip daddr 198.18.0.4 tcp dport 5432 counter accept comment"),
            "{with_router}"
        );
        let mut o = SuggestOptions::new(FirewallFormat::Nft);
        o.router = Some("nope".into());
        assert!(
            suggest(&r, &o)
                .unwrap_err()
                .to_string()
                .starts_with("router \"nope\" is not a host")
        );
    }

    /// A path a plan host's forward chain stops, named by that host's own
    /// trace: the accept goes in that rule's table and chain on that
    /// host, with or without --router (which cannot move it elsewhere),
    /// and never on the target.
    #[test]
    fn a_forward_rule_traced_on_a_plan_host_is_fixed_on_that_host() {
        use crate::report::blame::{Blame, BlameRule, Cause, Where};
        let mut r = report();
        r.paths.truncate(2);
        r.hosts.push(host("fw", "198.18.0.254"));
        r.hosts.push(host("edge", "198.18.0.253"));
        let mut network = r.paths[1].clone();
        network.blame = Some(Blame {
            at: Where::Network,
            hop: Some("198.18.0.254".into()),
            hop_distance: Some(1),
            cause: Cause::Drop,
            rule: Some(BlameRule {
                host: "fw".into(),
                table: "inet fw".into(),
                chain: "forward".into(),
                handle: None,
                text: None,
                policy: Some("drop".into()),
            }),
        });
        r.paths = vec![network];
        r.recount();
        let run = |router: Option<&str>, format| {
            let mut o = SuggestOptions::new(format);
            o.router = router.map(Into::into);
            let s = suggest(&r, &o).unwrap();
            let mut out = Vec::new();
            s.write(&mut out).unwrap();
            String::from_utf8(out).unwrap()
        };
        let plain = run(None, FirewallFormat::Nft);
        assert!(
            plain.contains("# host fw (198.18.0.254)\n# web -> db:5432/tcp (svc)\n"),
            "{plain}"
        );
        assert!(
            plain.contains("nft insert rule inet fw forward ip saddr 198.18.0.2 ip daddr 198.18.0.4 tcp dport 5432 counter accept comment"),
            "{plain}"
        );
        assert!(
            plain.contains("note: overrides fw: table inet fw chain forward policy drop"),
            "{plain}"
        );
        assert!(!plain.contains("# host db"), "{plain}");
        let elsewhere = run(Some("edge"), FirewallFormat::Nft);
        assert!(!elsewhere.contains("# host edge"), "{elsewhere}");
        assert!(
            elsewhere.contains("--router edge does not apply here: the rule is on fw"),
            "{elsewhere}"
        );
        assert!(
            elsewhere.contains("nft insert rule inet fw forward"),
            "{elsewhere}"
        );
        // iptables has no traced table to name: the FORWARD chain.
        let ipt = run(None, FirewallFormat::Iptables);
        assert!(ipt.contains("# host fw (198.18.0.254)"), "{ipt}");
        assert!(
            ipt.contains("iptables -w -I FORWARD -s 198.18.0.2 -d 198.18.0.4"),
            "{ipt}"
        );
    }

    #[test]
    fn shell_quoting() {
        assert_eq!(sh_quote("198.18.0.2"), "198.18.0.2");
        assert_eq!(sh_quote("2001:db8::2"), "2001:db8::2");
        assert_eq!(sh_quote("a b"), "'a b'");
        assert_eq!(sh_quote("it's"), "'it'\\''s'");
        assert_eq!(sh_quote(""), "''");
    }
}
