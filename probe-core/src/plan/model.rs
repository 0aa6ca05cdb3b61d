//! The validated [`Plan`] and what it holds of its paths ([`PathScope`]):
//! every path, one host's, or none (walked on demand from the expansion).

use std::collections::BTreeMap;
use std::sync::Arc;

use super::defaults::Defaults;
use super::digest::Digest;
use super::flows::Expansion;
use super::host::Host;
use super::path::{Flow, Path, PathView};
use super::roles::Role;

/// A validated, expanded plan.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The plan's `name`.
    pub name: String,
    /// The file it was read from, as the user named it.
    pub source: Arc<str>,
    /// Settings every round uses unless told otherwise.
    pub defaults: Defaults,
    /// Zones and their descriptions (declared or implied by hosts).
    pub zones: BTreeMap<String, String>,
    /// The hosts, in file order.
    pub hosts: Vec<Host>,
    /// The roles the hosts use, resolved, by name.
    pub roles: BTreeMap<String, Role>,
    /// The flows, in file order.
    pub flows: Vec<Flow>,
    /// Every path the flows expand into, merged and deduplicated, in the
    /// order the flows first produce them; for a plan read with
    /// [`PathScope::Host`], only that host's paths (see
    /// [`Plan::path_index`]), and none with [`PathScope::Lazy`] (see
    /// [`Plan::for_each_path`]).
    pub paths: Vec<Path>,
    /// `[defaults] snmp_community`: the community a UDP probe of port 161
    /// may send in an SNMP get of sysDescr.0. `None`: no SNMP request.
    pub snmp_community: Option<String>,
    /// What `paths` holds of the whole expansion.
    pub(super) held: Held,
}

/// Which of a plan's paths [`analyze_scoped`] materializes into
/// [`Plan::paths`]. The plan's memory follows what is kept: a 200-host
/// full mesh over 20 ports is 796,000 paths, of which one host's are 8,000.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum PathScope {
    /// Every path (the coordinator, `plan show` as a table).
    #[default]
    All,
    /// Only the paths from or to this host (an agent): its outgoing paths
    /// and those its canaries answer. Their positions in the whole plan
    /// stay known ([`Plan::path_index`]), as does the whole plan's digest.
    Host(String),
    /// None: [`Plan::for_each_path`] produces them one at a time
    /// (`plan show --format json`, `plan lint`).
    Lazy,
}

/// What [`Plan::paths`] holds.
#[derive(Debug, Clone, Default)]
pub(super) enum Held {
    /// Every path, in order.
    #[default]
    All,
    /// One host's paths.
    Host {
        /// Each held path's position in the whole plan.
        indices: Vec<usize>,
        /// The whole plan's path count.
        total: usize,
        /// The whole plan's digest.
        digest: String,
    },
    /// None; the expansion walks them on demand.
    Lazy(Arc<Expansion>),
}

impl Plan {
    /// A host by name.
    pub fn host(&self, name: &str) -> Option<&Host> {
        self.hosts.iter().find(|h| h.name == name)
    }

    /// A flow by its 1-based index.
    pub fn flow(&self, index: usize) -> Option<&Flow> {
        index.checked_sub(1).and_then(|i| self.flows.get(i))
    }

    /// The number of paths of the whole plan (also when [`Plan::paths`]
    /// holds only some or none).
    pub fn path_count(&self) -> usize {
        match &self.held {
            Held::All => self.paths.len(),
            Held::Host { total, .. } => *total,
            Held::Lazy(x) => x.total(),
        }
    }

    /// The position in the whole plan of `paths[k]` (`k` itself unless the
    /// plan holds one host's paths): what the control protocol names.
    pub fn path_index(&self, k: usize) -> usize {
        match &self.held {
            Held::Host { indices, .. } => indices.get(k).copied().unwrap_or(usize::MAX),
            _ => k,
        }
    }

    /// This plan keeping only the paths `scope` says: an agent reads a
    /// plan with [`PathScope::Lazy`], finds which host it plays, and keeps
    /// that host's paths. A plan can only give up paths this way, never
    /// get back ones it no longer holds (asking for more keeps it as is).
    pub fn scoped(mut self, scope: &PathScope) -> Plan {
        match (std::mem::take(&mut self.held), scope) {
            (Held::Lazy(x), _) => materialize(&mut self, x, scope),
            (Held::All, PathScope::Host(host)) => {
                let digest = self.digest();
                let total = self.paths.len();
                let mut indices = Vec::new();
                let mut k = 0;
                self.paths.retain(|p| {
                    let keep = p.from == *host || p.to == *host;
                    if keep {
                        indices.push(k);
                    }
                    k += 1;
                    keep
                });
                self.paths.shrink_to_fit();
                self.held = Held::Host {
                    indices,
                    total,
                    digest,
                };
            }
            (held, _) => self.held = held,
        }
        self
    }

    /// Whether [`Plan::paths`] holds every path of the plan.
    pub fn holds_every_path(&self) -> bool {
        matches!(self.held, Held::All)
    }

    /// Calls `f` with every path of the plan in order, until it breaks; a
    /// plan read with [`PathScope::Lazy`] produces them one at a time,
    /// without holding them. For a plan holding one host's paths, only
    /// those.
    pub fn for_each_path<B>(
        &self,
        mut f: impl FnMut(PathView<'_>) -> std::ops::ControlFlow<B>,
    ) -> std::ops::ControlFlow<B> {
        match &self.held {
            Held::Lazy(x) => x.for_each(&self.hosts, f),
            _ => {
                for (k, p) in self.paths.iter().enumerate() {
                    f(p.view(self.path_index(k)))?;
                }
                std::ops::ControlFlow::Continue(())
            }
        }
    }

    /// A fingerprint of everything in the plan that a round depends on
    /// (hosts, addresses, ports, paths, defaults): see
    /// [`crate::control::plan_digest`].
    pub fn digest(&self) -> String {
        if let Held::Host { digest, .. } = &self.held {
            return digest.clone();
        }
        let mut d = Digest::start(&self.name, &self.defaults, &self.hosts);
        let _ = self.for_each_path(|p| {
            d.path(&p);
            std::ops::ControlFlow::<()>::Continue(())
        });
        d.finish()
    }
}

/// Fills [`Plan::paths`] with what `scope` keeps of the expansion.
pub(super) fn materialize(plan: &mut Plan, expansion: Arc<Expansion>, scope: &PathScope) {
    use std::ops::ControlFlow::Continue;
    match scope {
        PathScope::All => {
            let mut paths = Vec::with_capacity(expansion.total());
            let _ = expansion.for_each(&plan.hosts, |p| {
                paths.push(p.to_path());
                Continue::<()>(())
            });
            plan.paths = paths;
            plan.held = Held::All;
        }
        PathScope::Host(host) => {
            // The digest covers the whole plan, so both ends of a round
            // notice a different plan; it is taken while walking, and only
            // the host's paths are kept.
            let mut d = Digest::start(&plan.name, &plan.defaults, &plan.hosts);
            let (mut paths, mut indices) = (Vec::new(), Vec::new());
            let _ = expansion.for_each(&plan.hosts, |p| {
                d.path(&p);
                if p.from == host || p.to == host {
                    paths.push(p.to_path());
                    indices.push(p.index);
                }
                Continue::<()>(())
            });
            paths.shrink_to_fit();
            indices.shrink_to_fit();
            plan.paths = paths;
            plan.held = Held::Host {
                indices,
                total: expansion.total(),
                digest: d.finish(),
            };
        }
        PathScope::Lazy => plan.held = Held::Lazy(expansion),
    }
}
