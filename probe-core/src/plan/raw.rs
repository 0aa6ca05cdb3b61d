//! The plan file as written: serde types that keep every value's span, so
//! that validation can point at the exact line and column.

use std::collections::BTreeMap;
use std::fmt;

use serde::Deserialize;
use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use toml::Spanned;

/// The whole plan file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawPlan {
    pub name: Spanned<String>,
    #[serde(default)]
    pub defaults: Option<Spanned<RawDefaults>>,
    #[serde(default)]
    pub zones: Option<Spanned<BTreeMap<String, Spanned<String>>>>,
    pub hosts: Vec<Spanned<RawHost>>,
    #[serde(default)]
    pub roles: BTreeMap<String, Spanned<RawRole>>,
    pub flows: Vec<Spanned<RawFlow>>,
}

/// `[defaults]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawDefaults {
    pub timeout_ms: Option<Spanned<i64>>,
    pub retries: Option<Spanned<i64>>,
    pub control_port: Option<Spanned<i64>>,
    /// The login name `check --ssh` uses where a host's `ssh` names none.
    pub ssh_user: Option<Spanned<String>>,
    pub max_paths: Option<Spanned<i64>>,
    /// `false` keeps every connect deadline at `timeout_ms`.
    pub adaptive: Option<Spanned<bool>>,
    /// The SNMP community UDP probes of port 161 may use.
    pub snmp_community: Option<Spanned<String>>,
    /// Quality samples per path (`check --samples` overrides).
    pub samples: Option<Spanned<i64>>,
}

/// One `[[hosts]]` entry.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawHost {
    pub name: Spanned<String>,
    pub address: Spanned<RawAddresses>,
    pub zone: Option<Spanned<String>>,
    #[serde(default)]
    pub roles: Vec<Spanned<RawRoleItem>>,
    pub port_offset: Option<Spanned<i64>>,
    #[serde(default)]
    pub port_overrides: BTreeMap<String, Spanned<i64>>,
    /// Pins the port a client role of this host dials, by dial name.
    #[serde(default)]
    pub dial_overrides: BTreeMap<String, Spanned<i64>>,
    /// Where `check --ssh` reaches the host: `[user@]name[:port]`.
    pub ssh: Option<Spanned<String>>,
}

/// An item of a host's `roles`: a name, or a name with its own offset.
#[derive(Debug)]
pub(crate) struct RawRoleItem {
    pub role: String,
    pub port_offset: Option<Spanned<i64>>,
}

impl<'de> Deserialize<'de> for RawRoleItem {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = RawRoleItem;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(r#"a role name or { role = "NAME", port_offset = N }"#)
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<RawRoleItem, E> {
                Ok(RawRoleItem {
                    role: v.to_owned(),
                    port_offset: None,
                })
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RawRoleItem, A::Error> {
                let mut role = None;
                let mut port_offset = None;
                while let Some(key) = map.next_key::<String>()? {
                    match key.as_str() {
                        "role" => role = Some(map.next_value::<String>()?),
                        "port_offset" => port_offset = Some(map.next_value::<Spanned<i64>>()?),
                        other => {
                            return Err(de::Error::unknown_field(other, &["role", "port_offset"]));
                        }
                    }
                }
                let role = role.ok_or_else(|| de::Error::missing_field("role"))?;
                Ok(RawRoleItem { role, port_offset })
            }
        }
        d.deserialize_any(V)
    }
}

/// One `[roles.NAME]` table (also the catalog's format).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRole {
    #[serde(rename = "use")]
    pub use_: Option<Spanned<String>>,
    pub description: Option<String>,
    #[serde(default)]
    pub ports: Vec<Spanned<RawPort>>,
    /// The ports this role dials on other roles, as the client is configured.
    #[serde(default)]
    pub dials: Vec<Spanned<RawDial>>,
}

/// A client port of a role: `{ name, to, port, offset = true }`, plus the
/// product's names for the client and server settings, used in fixes.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawDial {
    pub name: Spanned<String>,
    pub to: Spanned<String>,
    pub port: Spanned<i64>,
    #[serde(default = "yes")]
    pub offset: bool,
    pub client_setting: Option<String>,
    pub server_setting: Option<String>,
}

/// A port entry of a role.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawPort {
    pub name: Spanned<String>,
    pub port: Spanned<i64>,
    #[serde(default)]
    pub protocol: crate::port::Protocol,
    #[serde(default = "yes")]
    pub offset: bool,
    /// What the port must answer with (`http`, `thrift`, ...).
    pub service: Option<Spanned<super::ServiceKind>>,
}

fn yes() -> bool {
    true
}

/// Whether a flow expects its paths open or blocked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum RawExpect {
    #[default]
    Open,
    Blocked,
}

/// One `[[flows]]` entry.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawFlow {
    pub name: Option<String>,
    pub from: Spanned<Selectors>,
    pub to: Spanned<Selectors>,
    pub ports: Spanned<Vec<Spanned<RawPortRef>>>,
    #[serde(default)]
    pub expect: RawExpect,
    pub family: Option<Spanned<String>>,
    /// Most loss a path of the flow may show in either direction, in
    /// percent (`check --samples`).
    pub max_loss_pct: Option<Spanned<f64>>,
    /// Longest median round trip a path of the flow may show, in
    /// milliseconds (`check --samples`).
    pub max_rtt_ms: Option<Spanned<f64>>,
}

/// A host's `address`: one address, or a list whose first is the primary.
#[derive(Debug)]
pub(crate) struct RawAddresses {
    pub list: Vec<Spanned<String>>,
    /// Whether it was written as a list (`address = [...]`).
    pub is_list: bool,
}

impl<'de> Deserialize<'de> for RawAddresses {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = RawAddresses;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(r#"an address ("198.18.3.40") or a list of them, primary first"#)
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<RawAddresses, E> {
                // A lone string has no span of its own; the caller gives it
                // the enclosing value's (see `RawAddresses::spans_fixed`).
                Ok(RawAddresses {
                    list: vec![Spanned::new(0..0, v.to_owned())],
                    is_list: false,
                })
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<RawAddresses, A::Error> {
                let mut list = Vec::new();
                while let Some(s) = seq.next_element::<Spanned<String>>()? {
                    list.push(s);
                }
                Ok(RawAddresses {
                    list,
                    is_list: true,
                })
            }
        }
        d.deserialize_any(V)
    }
}

impl RawAddresses {
    /// Every address with its own span (a lone string gets the enclosing
    /// value's).
    pub(crate) fn spans_fixed(sp: &Spanned<RawAddresses>) -> Vec<Spanned<String>> {
        sp.get_ref()
            .list
            .iter()
            .map(|s| {
                if s.span() == (0..0) {
                    Spanned::new(sp.span(), s.get_ref().clone())
                } else {
                    s.clone()
                }
            })
            .collect()
    }
}

/// A flow's `from`/`to`: one selector or a list of them.
#[derive(Debug)]
pub(crate) struct Selectors(pub Vec<Spanned<String>>);

impl<'de> Deserialize<'de> for Selectors {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Selectors;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a selector (host:NAME, role:NAME, zone:NAME or all) or a list of them")
            }
            fn visit_str<E: de::Error>(self, _v: &str) -> Result<Selectors, E> {
                // The span of a lone string is the enclosing value's; the
                // caller fills it in (see `Selectors::fix_single_span`).
                Ok(Selectors(vec![Spanned::new(0..0, _v.to_owned())]))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Selectors, A::Error> {
                let mut v = Vec::new();
                while let Some(s) = seq.next_element::<Spanned<String>>()? {
                    v.push(s);
                }
                Ok(Selectors(v))
            }
        }
        d.deserialize_any(V)
    }
}

impl Selectors {
    /// A lone string has no span of its own; give it the enclosing one.
    pub(crate) fn spans_fixed(sp: &Spanned<Selectors>) -> Vec<Spanned<String>> {
        sp.get_ref()
            .0
            .iter()
            .map(|s| {
                if s.span() == (0..0) {
                    Spanned::new(sp.span(), s.get_ref().clone())
                } else {
                    s.clone()
                }
            })
            .collect()
    }
}

/// A flow's port: a name or a number.
#[derive(Debug, Clone)]
pub(crate) enum RawPortRef {
    Name(String),
    Number(i64),
}

impl<'de> Deserialize<'de> for RawPortRef {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = RawPortRef;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a port name (string) or a port number")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<RawPortRef, E> {
                Ok(RawPortRef::Name(v.to_owned()))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<RawPortRef, E> {
                Ok(RawPortRef::Number(v))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<RawPortRef, E> {
                Ok(RawPortRef::Number(i64::try_from(v).unwrap_or(i64::MAX)))
            }
        }
        d.deserialize_any(V)
    }
}
