//! Values as WSO2 writes them: placeholders (`${carbon.local.ip}` and
//! `${mgt.transport.https.port}` in 2.x XML, `$env{NODE_IP}`,
//! `$sys{portOffset}` and `$ref{super_admin.username}` in 3.x/4.x
//! `deployment.toml`) and the endpoint URLs that hold them, in every shape
//! WSO2's published configurations use: `https://km:9443/services/`,
//! receiver groups `{tcp://a:7612},{tcp://b:7612}` and `tcp://a|tcp://b`,
//! and JMS connection factories whose
//! `brokerlist='tcp://tm:5672?retries='5'%26…;tcp://tm2:5672?…'` lists the
//! brokers.

use std::collections::BTreeMap;

/// What placeholders resolve to, from the scanned files only.
#[derive(Debug, Default, Clone)]
pub(crate) struct Vars {
    /// `${name}` and `$sys{name}`: Carbon's own properties (ports from the
    /// offset) and every `-Dname=value` of the start scripts.
    pub props: BTreeMap<String, String>,
    /// `$env{NAME}`: variables the start scripts set.
    pub env: BTreeMap<String, String>,
    /// `$ref{table.key}`: other `deployment.toml` string values.
    pub refs: BTreeMap<String, String>,
}

/// Marks an unresolved placeholder in expanded text, so it is never read
/// as a host or a port.
pub(crate) const UNRESOLVED: char = '\u{1}';

impl Vars {
    /// `s` with every placeholder the files set replaced, in one pass (a
    /// value is never expanded again), and the placeholders they do not
    /// set, as written.
    pub fn expand(&self, s: &str) -> (String, Vec<String>) {
        let mut out = String::with_capacity(s.len());
        let mut missing = Vec::new();
        let mut rest = s;
        while let Some(i) = rest.find('$') {
            out.push_str(&rest[..i]);
            let after = &rest[i + 1..];
            let (table, body) = if let Some(b) = after.strip_prefix('{') {
                (&self.props, b)
            } else if let Some(b) = after.strip_prefix("sys{") {
                (&self.props, b)
            } else if let Some(b) = after.strip_prefix("env{") {
                (&self.env, b)
            } else if let Some(b) = after.strip_prefix("ref{") {
                (&self.refs, b)
            } else {
                out.push('$');
                rest = after;
                continue;
            };
            let Some(end) = body.find('}') else {
                out.push_str(&rest[i..]);
                rest = "";
                break;
            };
            let key = &body[..end];
            match table.get(key) {
                Some(v) => out.push_str(v),
                None => {
                    let written = &rest[i..rest.len() - body.len() + end + 1];
                    if !missing.iter().any(|m| m == written) {
                        missing.push(written.to_owned());
                    }
                    out.push(UNRESOLVED);
                }
            }
            rest = &body[end + 1..];
        }
        out.push_str(rest);
        (out, missing)
    }
}

/// One endpoint of a URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Endpoint {
    /// `tcp`, `ssl`, `http` or `https`.
    pub scheme: String,
    pub host: String,
    pub port: u16,
}

/// Every `tcp://`, `ssl://`, `http://` and `https://` endpoint in `value`,
/// placeholders expanded; and the placeholders that left an endpoint
/// without a host or port (empty when every endpoint resolved). Schemes
/// that name no network endpoint (`amqp://user:pass@clientID/…`) are
/// skipped; the brokers inside their `brokerlist` are found.
pub(crate) fn endpoints(value: &str, vars: &Vars) -> (Vec<Endpoint>, Vec<String>) {
    let (text, missing) = vars.expand(value);
    let mut out = Vec::new();
    let mut unresolved = false;
    let mut from = 0;
    while let Some(i) = text[from..].find("://") {
        let at = from + i;
        let scheme_start = text[..at]
            .char_indices()
            .rev()
            .find(|(_, c)| !(c.is_ascii_alphanumeric() || matches!(c, '+' | '.' | '-')))
            .map_or(0, |(j, c)| j + c.len_utf8());
        let scheme = text[scheme_start..at].to_ascii_lowercase();
        let start = at + 3;
        let end = text[start..]
            .find(|c: char| "/?'\",;|{}<>()".contains(c) || c.is_whitespace())
            .map_or(text.len(), |j| start + j);
        // An IPv6 literal's brackets belong to the authority.
        let end = if text[start..].starts_with('[') {
            text[start..].find(']').map_or(end, |j| {
                let close = start + j + 1;
                text[close..]
                    .find(|c: char| !(c.is_ascii_digit() || c == ':'))
                    .map_or(text.len(), |k| close + k)
            })
        } else {
            end
        };
        from = end.max(start);
        let default_port = match scheme.as_str() {
            "http" => Some(80),
            "https" => Some(443),
            "tcp" | "ssl" => None,
            _ => continue,
        };
        let authority = &text[start..end];
        let authority = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
        match host_port(authority, default_port) {
            Some((host, port)) if !host.contains(UNRESOLVED) && !port.contains(UNRESOLVED) => {
                if let Ok(port) = port.parse::<u16>() {
                    if port != 0 && !host.is_empty() {
                        out.push(Endpoint { scheme, host, port });
                    }
                }
            }
            Some(_) => unresolved = true,
            None => unresolved |= authority.contains(UNRESOLVED),
        }
    }
    (out, if unresolved { missing } else { Vec::new() })
}

/// `host:port`, `[v6]:port`, or a host alone with the scheme's default.
fn host_port(authority: &str, default_port: Option<u16>) -> Option<(String, String)> {
    if let Some(v6) = authority.strip_prefix('[') {
        let (host, after) = v6.split_once(']')?;
        return match after.strip_prefix(':') {
            Some(p) => Some((host.to_owned(), p.to_owned())),
            None => Some((host.to_owned(), default_port?.to_string())),
        };
    }
    match authority.rsplit_once(':') {
        Some((host, _)) if host.contains(':') => None,
        Some((host, port)) => Some((host.to_owned(), port.to_owned())),
        None => Some((authority.to_owned(), default_port?.to_string())),
    }
}

/// A host name that means the node itself.
pub(crate) fn is_local(host: &str) -> bool {
    let h = host.to_ascii_lowercase();
    h == "localhost"
        || h.starts_with("localhost.")
        || h.starts_with("127.")
        || h == "::1"
        || h == "0.0.0.0"
        || h == "::"
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hp(value: &str, vars: &Vars) -> Vec<(String, u16)> {
        endpoints(value, vars)
            .0
            .into_iter()
            .map(|e| (e.host, e.port))
            .collect()
    }

    #[test]
    fn urls_in_every_shape_wso2_writes_them() {
        let none = Vars::default();
        let one = |h: &str, p| vec![(h.to_owned(), p)];
        assert_eq!(hp("https://km:9443/services/", &none), one("km", 9443));
        assert_eq!(
            hp("{tcp://a:7612},{tcp://b:7613}", &none),
            vec![("a".to_owned(), 7612), ("b".to_owned(), 7613)]
        );
        assert_eq!(
            hp("tcp://a:7612|tcp://b:7612", &none),
            vec![("a".to_owned(), 7612), ("b".to_owned(), 7612)]
        );
        assert_eq!(
            hp(
                "amqp://admin:admin@clientID/carbon?failover='roundrobin'%26cyclecount='2'%26brokerlist='tcp://tm-1:5672?retries='5'%26connectdelay='50';tcp://tm-2:5673?retries='5''",
                &none
            ),
            vec![("tm-1".to_owned(), 5672), ("tm-2".to_owned(), 5673)]
        );
        assert_eq!(hp("ssl://[2001:2::5]:9711", &none), one("2001:2::5", 9711));
        assert_eq!(hp("https://km/services/", &none), one("km", 443));
        assert!(hp("tcp://tm", &none).is_empty());
    }

    #[test]
    fn placeholders_resolve_from_the_files_or_are_named() {
        let mut vars = Vars::default();
        vars.props
            .insert("mgt.transport.https.port".into(), "9445".into());
        vars.env.insert("KM_HOST".into(), "km.example.com".into());
        let (e, missing) = endpoints(
            "https://${carbon.local.ip}:${mgt.transport.https.port}${carbon.context}services/",
            &vars,
        );
        assert!(e.is_empty());
        assert_eq!(missing, vec!["${carbon.local.ip}", "${carbon.context}"]);
        let (e, missing) = endpoints("https://$env{KM_HOST}:$sys{x}/", &vars);
        assert!(e.is_empty());
        assert_eq!(missing, vec!["$sys{x}"]);
        let (e, missing) = endpoints(
            "https://$env{KM_HOST}:${mgt.transport.https.port}/services/",
            &vars,
        );
        assert_eq!(
            (e[0].host.as_str(), e[0].port, missing.len()),
            ("km.example.com", 9445, 0)
        );
        assert_eq!(vars.expand("a$b${").0, "a$b${");
    }
}
