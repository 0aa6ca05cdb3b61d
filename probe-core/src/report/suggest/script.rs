//! The script [`Suggestions::write`] writes: a header, then per host a
//! `# host NAME` line and, per path, `#` lines naming the path and what was
//! found, then the commands of its [`Action`] as [`Rule`]s in the
//! backend's syntax (or `#` lines saying why there are none).

use std::io::{self, Write};

use super::backend::Backend;
use super::model::{Action, HostSuggestions, Item, Suggestions};
use super::quote::comment_line;
use super::rule::{Place, Rule};
use crate::port::Protocol;

impl Suggestions {
    /// Writes the script: a header, then per host a `# host NAME` line and,
    /// per path, `#` lines naming the path and what was found, then the
    /// command (or `#` lines saying why there is none).
    pub fn write(&self, w: &mut impl Write) -> io::Result<()> {
        writeln!(
            w,
            "# portcall suggest --format {}: plan {}, round finished {}",
            self.format,
            comment_line(&self.plan),
            comment_line(&self.finished_at)
        )?;
        writeln!(w, "# {}.", self.backend.describe())?;
        writeln!(
            w,
            "# Review, then run each host's section on that host with sh."
        )?;
        if self.hosts.is_empty() {
            writeln!(w)?;
            match &self.only {
                Some(h) => writeln!(w, "# nothing to change on host {}", comment_line(h))?,
                None => writeln!(w, "# nothing to change: every path meets its expectation")?,
            }
            return Ok(());
        }
        for h in &self.hosts {
            write_host(&self.backend, h, w)?;
        }
        Ok(())
    }
}

/// One host's section.
fn write_host(backend: &Backend, h: &HostSuggestions, w: &mut impl Write) -> io::Result<()> {
    writeln!(w)?;
    match &h.address {
        Some(a) => writeln!(w, "# host {} ({})", comment_line(&h.host), comment_line(a))?,
        None => writeln!(w, "# host {}", comment_line(&h.host))?,
    }
    for i in &h.items {
        writeln!(w, "# {}", comment_line(&i.path))?;
        writeln!(w, "#   {}", comment_line(&i.finding))?;
        for n in &i.notes {
            writeln!(w, "#   note: {}", comment_line(n))?;
        }
        for c in commands(backend, i, w)? {
            writeln!(w, "{c}")?;
        }
    }
    let rules = h
        .items
        .iter()
        .any(|i| matches!(i.action, Action::Accept { .. } | Action::DefaultDeny { .. }));
    if rules && matches!(backend, Backend::Firewalld { .. }) {
        writeln!(w, "# load the permanent rules into the running firewall")?;
        writeln!(w, "firewall-cmd --reload")?;
    }
    Ok(())
}

/// The commands of one item; the `#` line of an item without any.
fn commands(backend: &Backend, i: &Item, w: &mut impl Write) -> io::Result<Vec<String>> {
    let rule_note = format!("portcall: {}", i.path);
    let l4 = if i.protocol == Protocol::Udp {
        "udp"
    } else {
        "tcp"
    };
    let accept = |place: Place<'_>, source, dest, port, note: &str| {
        backend.commands(&Rule {
            accept: true,
            place,
            source,
            dest,
            l4,
            port,
            note,
        })
    };
    Ok(match &i.action {
        Action::Accept {
            source,
            port,
            at: Some(at),
        } if matches!(backend, Backend::Nft { .. }) => {
            let place = Place::Hook {
                hook: "input",
                at: Some(at),
            };
            accept(place, Some(*source), None, *port, &rule_note)
        }
        Action::Accept { source, port, .. } => {
            accept(Place::Input, Some(*source), None, *port, &rule_note)
        }
        Action::AcceptOut { dest, port, at } => {
            let place = Place::Hook {
                hook: "output",
                at: at.as_ref(),
            };
            accept(place, None, Some(*dest), *port, &rule_note)
        }
        Action::Forward {
            source,
            dest,
            port,
            at,
        } => {
            let place = Place::Hook {
                hook: "forward",
                at: at.as_ref(),
            };
            accept(place, Some(*source), Some(*dest), *port, &rule_note)
        }
        Action::DefaultDeny { port, allow } => {
            // The drop first: each accept is then inserted ahead of it.
            let deny = format!("portcall: default deny of port {port}, {}", i.path);
            let mut c = backend.commands(&Rule {
                accept: false,
                place: Place::Input,
                source: None,
                dest: None,
                l4,
                port: *port,
                note: &deny,
            });
            for (a, from) in allow {
                let keep = format!("portcall: keep port {port} open for {from}");
                c.extend(accept(Place::Input, Some(*a), None, *port, &keep));
            }
            c
        }
        Action::Covered { by } => {
            writeln!(
                w,
                "#   covered by the default deny written for {}",
                comment_line(by)
            )?;
            Vec::new()
        }
        Action::Manual { reason } => {
            writeln!(w, "#   NO RULE HERE: {}", comment_line(reason))?;
            Vec::new()
        }
    })
}
