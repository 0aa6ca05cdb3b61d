//! [`RoleInstance`]: one role on one host, with its offset. Its own file
//! because both the host model and the diagnostics about a host's port
//! collisions name it, and neither may import the other.

use serde::Serialize;

/// One role on one host, with its own offset.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RoleInstance {
    /// The role's name.
    pub role: String,
    /// The offset added to its offset-able ports.
    pub port_offset: u16,
}
