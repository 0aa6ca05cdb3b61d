//! Where `check --ssh` reaches each host: a host's own `ssh = "user@name:port"`,
//! else its address with `[defaults] ssh_user`. Validated here, with every
//! problem located, so that a typo fails `plan lint` instead of an SSH
//! handshake. The hosts' targets are filled in by `ssh_targets`.

use std::fmt;

/// Why a string is not an SSH destination ([`SshTarget::parse`]) or login
/// name; the message says what is wrong, for `plan lint` and `--ssh`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SshTargetError {
    /// Empty, or with surrounding spaces.
    #[error("expected [user@]host[:port] without spaces")]
    Shape,
    /// Nothing before the `@`.
    #[error("the user part before `@` is empty")]
    EmptyUser,
    /// A login name ssh would not pass on unchanged.
    #[error("`{0}` is not a login name")]
    BadUser(String),
    /// `[` without its `]`.
    #[error("an IPv6 address opened with `[` needs its `]`")]
    UnclosedBracket,
    /// Something other than `:port` after `]`.
    #[error("unexpected `{0}` after `]`")]
    AfterBracket(String),
    /// Nothing where the host goes.
    #[error("the host part is empty")]
    EmptyHost,
    /// A host ssh could mistake for an option or a shell word.
    #[error("`{0}` is not a host name or address")]
    BadHost(String),
    /// A port outside 1..=65535 or not a number.
    #[error("port `{0}` is not a number in 1..=65535")]
    BadPort(String),
}

/// An SSH destination: `[user@]host[:port]` (an IPv6 host in brackets when
/// a port follows).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SshTarget {
    /// The login name; `None` leaves it to the user's ssh configuration.
    pub user: Option<String>,
    /// The host name or address, without brackets.
    pub host: String,
    /// The port; `None` leaves it to the user's ssh configuration.
    pub port: Option<u16>,
}

impl SshTarget {
    /// The `ssh` client's arguments that name this destination
    /// (`-p PORT` when set, then `[user@]host`).
    pub fn args(&self) -> Vec<String> {
        let mut args = Vec::new();
        if let Some(p) = self.port {
            args.push("-p".to_owned());
            args.push(p.to_string());
        }
        args.push(match &self.user {
            Some(u) => format!("{u}@{}", self.host),
            None => self.host.clone(),
        });
        args
    }

    /// Parses `[user@]host[:port]`, `[user@][v6]:port` or a bare IPv6
    /// literal; the error says what is wrong.
    pub fn parse(s: &str) -> Result<SshTarget, SshTargetError> {
        if s.trim() != s || s.is_empty() {
            return Err(SshTargetError::Shape);
        }
        let (user, rest) = match s.rsplit_once('@') {
            Some((u, r)) => (Some(u), r),
            None => (None, s),
        };
        if let Some(u) = user {
            valid_user(u)?;
        }
        let (host, port) = if let Some(inner) = rest.strip_prefix('[') {
            let (h, after) = inner
                .split_once(']')
                .ok_or(SshTargetError::UnclosedBracket)?;
            match after {
                "" => (h, None),
                _ => match after.strip_prefix(':') {
                    Some(p) => (h, Some(p)),
                    None => return Err(SshTargetError::AfterBracket(after.to_owned())),
                },
            }
        } else if rest.matches(':').count() > 1 {
            // A bare IPv6 literal: no port possible without brackets.
            (rest, None)
        } else {
            match rest.split_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (rest, None),
            }
        };
        if host.is_empty() {
            return Err(SshTargetError::EmptyHost);
        }
        if host.starts_with('-')
            || host
                .chars()
                .any(|c| c.is_whitespace() || c.is_control() || "'\"\\/$`;|&<>".contains(c))
        {
            return Err(SshTargetError::BadHost(host.to_owned()));
        }
        let port = match port {
            None => None,
            Some(p) => match p.parse::<u16>() {
                Ok(n) if n > 0 => Some(n),
                _ => return Err(SshTargetError::BadPort(p.to_owned())),
            },
        };
        Ok(SshTarget {
            user: user.map(str::to_owned),
            host: host.to_owned(),
            port,
        })
    }
}

impl fmt::Display for SshTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(u) = &self.user {
            write!(f, "{u}@")?;
        }
        match self.port {
            Some(p) if self.host.contains(':') => write!(f, "[{}]:{p}", self.host),
            Some(p) => write!(f, "{}:{p}", self.host),
            None => f.write_str(&self.host),
        }
    }
}

/// A login name ssh will pass on unchanged: no spaces, no `@`, no option.
pub(super) fn valid_user(u: &str) -> Result<(), SshTargetError> {
    if u.is_empty() {
        return Err(SshTargetError::EmptyUser);
    }
    if u.starts_with('-')
        || u.chars()
            .any(|c| c.is_whitespace() || c.is_control() || "@:'\"\\/$`;|&<>".contains(c))
    {
        return Err(SshTargetError::BadUser(u.to_owned()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::{Plan, PlanError};

    #[test]
    fn targets_parse_and_display_round_trip() {
        for (s, user, host, port) in [
            (
                "deploy@gw1.example.com:2222",
                Some("deploy"),
                "gw1.example.com",
                Some(2222),
            ),
            ("gw1", None, "gw1", None),
            ("root@198.18.0.10", Some("root"), "198.18.0.10", None),
            ("[2001:2::1]:22", None, "2001:2::1", Some(22)),
            ("ops@2001:2::1", Some("ops"), "2001:2::1", None),
        ] {
            let t = SshTarget::parse(s).unwrap();
            assert_eq!(t.user.as_deref(), user, "{s}");
            assert_eq!(t.host, host, "{s}");
            assert_eq!(t.port, port, "{s}");
            assert_eq!(SshTarget::parse(&t.to_string()).unwrap(), t, "{s}");
        }
        assert_eq!(
            SshTarget::parse("u@h:2200").unwrap().args(),
            ["-p", "2200", "u@h"]
        );
        for bad in [
            "",
            "u@",
            "@h",
            "h:0",
            "h:x",
            "-oProxyCommand=x",
            "a b",
            "[::1",
            "u@h;rm",
        ] {
            assert!(SshTarget::parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn bad_targets_say_what_is_wrong() {
        use SshTargetError as E;
        for (bad, want, text) in [
            (" h", E::Shape, "expected [user@]host[:port] without spaces"),
            ("@h", E::EmptyUser, "the user part before `@` is empty"),
            ("-u@h", E::BadUser("-u".into()), "`-u` is not a login name"),
            (
                "[::1",
                E::UnclosedBracket,
                "an IPv6 address opened with `[` needs its `]`",
            ),
            (
                "[::1]x",
                E::AfterBracket("x".into()),
                "unexpected `x` after `]`",
            ),
            ("u@", E::EmptyHost, "the host part is empty"),
            (
                "u@h;rm",
                E::BadHost("h;rm".into()),
                "`h;rm` is not a host name or address",
            ),
            (
                "h:0",
                E::BadPort("0".into()),
                "port `0` is not a number in 1..=65535",
            ),
        ] {
            let e = SshTarget::parse(bad).unwrap_err();
            assert_eq!(e, want, "{bad:?}");
            assert_eq!(e.to_string(), text, "{bad:?}");
        }
    }

    const PLAN: &str = r#"name = "t"
[defaults]
ssh_user = "ops"
[[hosts]]
name = "a"
address = "198.18.0.10"
[[hosts]]
name = "b"
address = "198.18.0.11"
ssh = "root@b.lab:2222"
[[hosts]]
name = "c"
address = "c.lab"
ssh = "c-jump"
[[flows]]
from = "host:a"
to = "host:b"
ports = [22]
"#;

    #[test]
    fn defaults_fill_the_user_and_the_address_stands_in_for_the_host() {
        let plan = Plan::parse(PLAN, "t.toml").unwrap();
        let ssh = |n: &str| plan.host(n).unwrap().ssh.as_ref().unwrap().to_string();
        assert_eq!(ssh("a"), "ops@198.18.0.10");
        assert_eq!(ssh("b"), "root@b.lab:2222");
        assert_eq!(ssh("c"), "ops@c-jump");
    }

    #[test]
    fn bad_ssh_values_are_located() {
        let src = PLAN
            .replace("root@b.lab:2222", "root@b.lab:99999")
            .replace("ssh_user = \"ops\"", "ssh_user = \"o ps\"");
        let Err(PlanError::Invalid(d)) = Plan::parse(&src, "t.toml") else {
            panic!("accepted");
        };
        let text = d.to_string();
        assert!(
            text.contains("t.toml:3:12") && text.contains("defaults.ssh_user"),
            "{text}"
        );
        assert!(
            text.contains("t.toml:10:7") && text.contains("port `99999`"),
            "{text}"
        );
    }
}
