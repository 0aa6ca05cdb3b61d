//! Port collisions on one host: two role instances (or one role's ports)
//! on the same socket, reported once per pair with one assignment of
//! offsets that clears every collision of the host at once. Also the shapes
//! of a host's role instances and their ports that building hosts and
//! these checks share.

use std::collections::{BTreeMap, BTreeSet};

use super::cx::Cx;
use super::diag::{CollisionFix, Problem};
use super::instance::RoleInstance;
use super::roles::Role;
use crate::port::{Port, Protocol};

/// A role instance of a host under construction: the instance, the role
/// it resolves to, and where the host's `roles` list names it.
pub(super) type Instance<'r> = (RoleInstance, &'r Role, std::ops::Range<usize>);

/// The ports one role instance gives its host: `(name, port, protocol)`.
pub(super) type InstancePorts = Vec<(String, Port, Protocol)>;

/// A port as the kernel keys sockets: TCP (and TLS) and UDP ports of the
/// same number are different sockets and never collide.
fn socket_key(port: Port, protocol: Protocol) -> u32 {
    u32::from(port.get()) + if protocol.is_tcp() { 0 } else { 1 << 16 }
}

/// Reports each pair of role instances on a host that share a port, once,
/// with one assignment of offsets (see [`assign_offsets`]) that clears every
/// collision on the host at once.
pub(super) fn collisions(
    cx: &mut Cx<'_>,
    host: &str,
    host_offset: u16,
    instances: &[Instance<'_>],
    per_instance: &[InstancePorts],
    overrides: &BTreeMap<&str, Port>,
) {
    let mut assignment: Option<Vec<Option<u16>>> = None;
    for j in 0..per_instance.len() {
        for i in 0..=j {
            let clash = per_instance[j]
                .iter()
                .enumerate()
                .find_map(|(bi, (bn, bp, bt))| {
                    per_instance[i]
                        .iter()
                        .enumerate()
                        .find(|(ai, (_, ap, at))| {
                            socket_key(*ap, *at) == socket_key(*bp, *bt) && (i != j || *ai < bi)
                        })
                        .map(|(_, (an, _, _))| (an.clone(), bn.clone(), *bp))
                });
            let Some((first_port, second_port, port)) = clash else {
                continue;
            };
            let assigned = assignment
                .get_or_insert_with(|| assign_offsets(instances, per_instance, overrides));
            // The instance of the pair that moves: the later one, unless the
            // assignment keeps it and moves the earlier one instead.
            let moved = if assigned[j] != Some(instances[j].0.port_offset) || i == j {
                j
            } else {
                i
            };
            let (_, role, _) = &instances[j];
            let fix = match assigned[moved] {
                Some(offset) if assigned.iter().all(Option::is_some) => CollisionFix::Offset {
                    role: instances[moved].1.name.clone(),
                    offset,
                    roles: instances
                        .iter()
                        .zip(assigned.iter())
                        .map(|((inst, _, _), off)| RoleInstance {
                            role: inst.role.clone(),
                            port_offset: off.unwrap_or(inst.port_offset),
                        })
                        .collect(),
                    host_offset,
                },
                _ => CollisionFix::Override {
                    port_name: if moved == j {
                        second_port.clone()
                    } else {
                        first_port.clone()
                    },
                },
            };
            cx.push(
                instances[j].2.clone(),
                Problem::PortCollision {
                    host: host.to_owned(),
                    port: port.get(),
                    first_role: instances[i].1.name.clone(),
                    first_port,
                    second_role: role.name.clone(),
                    second_port,
                    fix,
                },
            );
        }
    }
}

/// One offset per role instance that clears every collision on the host at
/// once: instances are kept, in order, while they collide with none kept
/// before them; each other one then gets, in order, the smallest offset
/// under which its ports collide with none of the kept and already moved
/// instances (nor with each other) and stay below 65536. `None` for an
/// instance no offset can move clear (a fixed port is in the way).
pub(crate) fn assign_offsets(
    instances: &[Instance<'_>],
    per_instance: &[InstancePorts],
    overrides: &BTreeMap<&str, Port>,
) -> Vec<Option<u16>> {
    let mut taken: BTreeSet<u32> = BTreeSet::new();
    let mut kept = vec![false; instances.len()];
    for (k, ports) in per_instance.iter().enumerate() {
        let mine: BTreeSet<u32> = ports.iter().map(|(_, p, t)| socket_key(*p, *t)).collect();
        let clear = mine.len() == ports.len() && mine.is_disjoint(&taken);
        // An instance that lost a port to an error (offset past 65535) is
        // never kept: its port list is incomplete.
        if clear && ports.len() == instances[k].1.ports.len() {
            kept[k] = true;
            taken.extend(mine);
        }
    }
    let mut out: Vec<Option<u16>> = instances
        .iter()
        .zip(&kept)
        .map(|((inst, _, _), &k)| k.then_some(inst.port_offset))
        .collect();
    for (k, slot) in out.iter_mut().enumerate() {
        if kept[k] {
            continue;
        }
        let role = instances[k].1;
        let ports_at = |off: u16| -> Option<BTreeSet<u32>> {
            let mut mine = BTreeSet::new();
            for def in &role.ports {
                let p = if let Some(p) = overrides.get(def.name.as_str()) {
                    *p
                } else if def.offset {
                    def.port.checked_offset(off).ok()?
                } else {
                    def.port
                };
                let p = socket_key(p, def.protocol);
                if taken.contains(&p) || !mine.insert(p) {
                    return None;
                }
            }
            Some(mine)
        };
        if let Some((off, mine)) = (0..=u16::MAX).find_map(|off| ports_at(off).map(|m| (off, m))) {
            *slot = Some(off);
            taken.extend(mine);
        }
    }
    out
}
