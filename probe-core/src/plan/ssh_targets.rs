//! Where `check --ssh` reaches each host ([`Host::ssh`]): its own `ssh`,
//! else its address, with `[defaults] ssh_user` when it names no user; each
//! bad value located.

use super::cx::Cx;
use super::diag::Problem;
use super::host::{Address, Host};
use super::raw::RawPlan;
use super::ssh::{SshTarget, valid_user};

/// Fills in every host's [`Host::ssh`]: its own `ssh`, with the default
/// user when it names none, else its address with the default user.
pub(crate) fn resolve(cx: &mut Cx<'_>, raw: &RawPlan, hosts: &mut [Host]) {
    let mut default_user = None;
    if let Some(d) = &raw.defaults {
        if let Some(u) = &d.get_ref().ssh_user {
            match valid_user(u.get_ref()) {
                Ok(()) => default_user = Some(u.get_ref().clone()),
                Err(why) => cx.push(
                    u.span(),
                    Problem::BadSsh {
                        what: "defaults.ssh_user".into(),
                        value: u.get_ref().clone(),
                        why,
                    },
                ),
            }
        }
    }
    // By name, first of each (a duplicate is an error reported elsewhere):
    // a search per host made this quadratic in the host count.
    let mut by_name: std::collections::HashMap<String, usize> =
        std::collections::HashMap::with_capacity(hosts.len());
    for (i, x) in hosts.iter().enumerate() {
        by_name.entry(x.name.clone()).or_insert(i);
    }
    for rh in &raw.hosts {
        let h = rh.get_ref();
        let Some(&i) = by_name.get(h.name.get_ref()) else {
            continue;
        };
        let host = &mut hosts[i];
        let target = match &h.ssh {
            Some(s) => match SshTarget::parse(s.get_ref()) {
                Ok(t) => t,
                Err(why) => {
                    cx.push(
                        s.span(),
                        Problem::BadSsh {
                            what: format!("host `{}`: ssh", host.name),
                            value: s.get_ref().clone(),
                            why,
                        },
                    );
                    continue;
                }
            },
            None => SshTarget {
                user: None,
                host: match &host.address {
                    Address::Ip(ip) => ip.to_string(),
                    Address::Dns(n) => n.clone(),
                },
                port: None,
            },
        };
        host.ssh = Some(SshTarget {
            user: target.user.or_else(|| default_user.clone()),
            ..target
        });
    }
}
