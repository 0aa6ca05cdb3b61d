//! Role resolution: `use` inheritance with replacement by port name, shared
//! by the catalog and by plans.

use std::collections::BTreeMap;
use std::sync::Arc;

use toml::Spanned;

use super::diag::{Diagnostic, Location, Problem, Suggestion};
use super::raw::{RawDial, RawPort, RawRole};
use super::service::ServiceKind;
use crate::port::{Port, Protocol};

/// A role: a named set of ports, from the catalog or the plan.
#[derive(Debug, Clone, PartialEq)]
pub struct Role {
    /// The role's name.
    pub name: String,
    /// What it is, in a few words.
    pub description: String,
    /// Its ports, before any offset.
    pub ports: Vec<PortDef>,
    /// Catalog or plan.
    pub origin: RoleOrigin,
    /// The role it `use`s, if any.
    pub based_on: Option<String>,
    /// The ports it dials on other roles, as its clients are configured.
    pub dials: Vec<DialDef>,
}

/// A client port as a role defines it: the port a client of this role is
/// configured to dial on a role `to`, before the client host's offset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DialDef {
    /// The dial's name: the port name it reaches on the target role.
    pub name: String,
    /// The target role (or a role built on it with `use`).
    pub to: String,
    /// The configured client port.
    pub port: Port,
    /// Whether the *client host's* offset moves it.
    pub offset: bool,
    /// The product's name for the client setting (e.g. `ThriftClientPort`),
    /// used when naming a fix.
    pub client_setting: Option<String>,
    /// The product's name for the server setting (e.g. `ThriftServerPort`).
    pub server_setting: Option<String>,
}

/// A port as a role defines it, before offsets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortDef {
    /// The port's name, e.g. `https-servlet`.
    pub name: String,
    /// The default number.
    pub port: Port,
    /// TCP or TLS.
    pub protocol: Protocol,
    /// Whether the server's port offset shifts it.
    pub offset: bool,
    /// What the port must answer with; `None` when the plan does not say
    /// (see [`ServiceKind::inferred`]).
    pub service: Option<ServiceKind>,
}

/// Where a role came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RoleOrigin {
    /// Built into the binary.
    Catalog,
    /// Defined in the plan (possibly starting from a catalog role).
    Plan,
}

/// Resolves raw role tables into [`Role`]s. Plan roles shadow catalog roles;
/// a plan role that `use`s its own name starts from the catalog role.
pub(crate) struct Resolver<'a> {
    pub file: &'a Arc<str>,
    pub src: &'a str,
    pub raw: &'a BTreeMap<String, Spanned<RawRole>>,
    pub base: &'a BTreeMap<String, Role>,
    pub origin: RoleOrigin,
    pub done: BTreeMap<String, Option<Role>>,
    pub diags: Vec<Diagnostic>,
}

impl Resolver<'_> {
    fn loc(&self, span: std::ops::Range<usize>) -> Location {
        Location::of_offset(self.file, self.src, span.start)
    }

    fn error(&mut self, span: std::ops::Range<usize>, problem: Problem) {
        let location = Some(self.loc(span));
        self.diags.push(Diagnostic {
            severity: problem.severity(),
            location,
            problem,
        });
    }

    /// Resolves every raw role; the results are in `done` (None where the
    /// role had errors).
    pub fn resolve_all(&mut self) {
        let names: Vec<String> = self.raw.keys().cloned().collect();
        for name in names {
            let mut stack = Vec::new();
            self.resolve(&name, &mut stack);
        }
    }

    fn resolve(&mut self, name: &str, stack: &mut Vec<String>) -> Option<Role> {
        if let Some(done) = self.done.get(name) {
            return done.clone();
        }
        let raw = self.raw.get(name)?;
        if let Some(pos) = stack.iter().position(|s| s == name) {
            let mut chain: Vec<String> = stack[pos..].to_vec();
            chain.push(name.to_owned());
            let span = raw.span();
            self.error(span, Problem::UseCycle { chain });
            return None;
        }
        stack.push(name.to_owned());
        let mut ok = true;
        let mut ports: Vec<PortDef> = Vec::new();
        let mut dials: Vec<DialDef> = Vec::new();
        if let Some(base) = &raw.get_ref().use_ {
            match self.base_role(name, base, stack) {
                Some(r) => {
                    ports = r.ports;
                    dials = r.dials;
                }
                None => ok = false,
            }
        }
        ok &= self.own_ports(name, raw.get_ref(), &mut ports);
        ok &= self.own_dials(name, raw.get_ref(), &mut dials);
        stack.pop();
        let role = ok.then(|| Role {
            name: name.to_owned(),
            description: raw.get_ref().description.clone().unwrap_or_default(),
            ports,
            origin: self.origin,
            based_on: raw.get_ref().use_.as_ref().map(|u| u.get_ref().clone()),
            dials,
        });
        self.done.insert(name.to_owned(), role.clone());
        role
    }

    /// The role `name` is built on (`use = base`): one of the roles being
    /// resolved (resolved first), else a base role; `None` when it has
    /// errors or is unknown (reported, with "did you mean").
    fn base_role(
        &mut self,
        name: &str,
        base: &Spanned<String>,
        stack: &mut Vec<String>,
    ) -> Option<Role> {
        let base_name = base.get_ref().as_str();
        if base_name != name && self.raw.contains_key(base_name) {
            return self.resolve(base_name, stack);
        }
        if let Some(r) = self.base.get(base_name) {
            return Some(r.clone());
        }
        let candidates: Vec<&str> = self
            .raw
            .keys()
            .chain(self.base.keys())
            .map(String::as_str)
            .collect();
        let suggestion = Suggestion::closest(base_name, candidates);
        self.error(
            base.span(),
            Problem::UnknownRole {
                role: base_name.to_owned(),
                suggestion,
            },
        );
        None
    }

    /// The role's own ports over the inherited ones (replacing by name);
    /// false when any is bad or named twice (reported).
    fn own_ports(&mut self, name: &str, raw: &RawRole, ports: &mut Vec<PortDef>) -> bool {
        let mut ok = true;
        let mut own: Vec<&str> = Vec::new();
        for p in &raw.ports {
            match self.port_def(name, p) {
                Some(def) => {
                    if own.contains(&def.name.as_str()) {
                        self.error(
                            p.get_ref().name.span(),
                            Problem::DuplicatePortName {
                                role: name.to_owned(),
                                name: def.name.clone(),
                            },
                        );
                        ok = false;
                        continue;
                    }
                    own.push(p.get_ref().name.get_ref());
                    match ports.iter_mut().find(|q| q.name == def.name) {
                        Some(slot) => *slot = def,
                        None => ports.push(def),
                    }
                }
                None => ok = false,
            }
        }
        ok
    }

    /// The role's own dials over the inherited ones (replacing by name and
    /// target role); false when any is bad or given twice (reported).
    fn own_dials(&mut self, name: &str, raw: &RawRole, dials: &mut Vec<DialDef>) -> bool {
        let mut ok = true;
        let mut own_dials: Vec<(String, String)> = Vec::new();
        for d in &raw.dials {
            match self.dial_def(name, d) {
                Some(def) => {
                    let key = (def.name.clone(), def.to.clone());
                    if own_dials.contains(&key) {
                        self.error(
                            d.get_ref().name.span(),
                            Problem::DuplicateDial {
                                role: name.to_owned(),
                                name: def.name.clone(),
                                to: def.to.clone(),
                            },
                        );
                        ok = false;
                        continue;
                    }
                    own_dials.push(key);
                    match dials
                        .iter_mut()
                        .find(|q| q.name == def.name && q.to == def.to)
                    {
                        Some(slot) => *slot = def,
                        None => dials.push(def),
                    }
                }
                None => ok = false,
            }
        }
        ok
    }

    fn port_def(&mut self, role: &str, p: &Spanned<RawPort>) -> Option<PortDef> {
        let p = p.get_ref();
        let name = p.name.get_ref();
        if !valid_port_name(name) {
            self.error(
                p.name.span(),
                Problem::BadPortName {
                    role: role.to_owned(),
                    name: name.clone(),
                },
            );
            return None;
        }
        if let Some(service) = &p.service {
            let kind = *service.get_ref();
            if !kind.runs_over(p.protocol) {
                self.error(
                    service.span(),
                    Problem::ServiceTransport {
                        role: role.to_owned(),
                        name: name.clone(),
                        service: kind,
                        protocol: p.protocol,
                    },
                );
                return None;
            }
        }
        match Port::from_i64(*p.port.get_ref()) {
            Ok(port) => Some(PortDef {
                name: name.clone(),
                port,
                protocol: p.protocol,
                offset: p.offset,
                service: p.service.as_ref().map(|s| *s.get_ref()),
            }),
            Err(error) => {
                self.error(
                    p.port.span(),
                    Problem::BadPort {
                        what: format!("port `{name}` of role `{role}`"),
                        error,
                    },
                );
                None
            }
        }
    }
}

impl Resolver<'_> {
    fn dial_def(&mut self, role: &str, d: &Spanned<RawDial>) -> Option<DialDef> {
        let d = d.get_ref();
        let name = d.name.get_ref();
        if !valid_port_name(name) {
            self.error(
                d.name.span(),
                Problem::BadPortName {
                    role: role.to_owned(),
                    name: name.clone(),
                },
            );
            return None;
        }
        let to = d.to.get_ref();
        if !self.raw.contains_key(to) && !self.base.contains_key(to) {
            let candidates: Vec<&str> = self
                .raw
                .keys()
                .chain(self.base.keys())
                .map(String::as_str)
                .collect();
            self.error(
                d.to.span(),
                Problem::UnknownRole {
                    role: to.clone(),
                    suggestion: Suggestion::closest(to, candidates),
                },
            );
            return None;
        }
        match Port::from_i64(*d.port.get_ref()) {
            Ok(port) => Some(DialDef {
                name: name.clone(),
                to: to.clone(),
                port,
                offset: d.offset,
                client_setting: d.client_setting.clone(),
                server_setting: d.server_setting.clone(),
            }),
            Err(error) => {
                self.error(
                    d.port.span(),
                    Problem::BadPort {
                        what: format!("dial `{name}` of role `{role}`"),
                        error,
                    },
                );
                None
            }
        }
    }
}

/// A port name is an identifier; all digits would be confused with a port
/// number in flows.
pub(crate) fn valid_port_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        && !name.chars().all(|c| c.is_ascii_digit())
}
