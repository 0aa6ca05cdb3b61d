//! The built-in catalog of product roles and their default ports, shipped as
//! data (`catalog.toml`) inside the binary so users can read and extend it.

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};

use super::diag::Diagnostics;
use super::raw::RawRole;
use super::roles::{Resolver, Role, RoleOrigin};

/// The catalog's source, embedded at build time.
pub const CATALOG_TOML: &str = include_str!("catalog.toml");

/// The built-in roles, by name.
#[derive(Debug, Clone)]
pub struct Catalog {
    roles: BTreeMap<String, Role>,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCatalog {
    roles: BTreeMap<String, toml::Spanned<RawRole>>,
}

impl Catalog {
    /// The catalog built into this binary. Parsed once; a unit test keeps
    /// the embedded file valid, so this cannot fail at run time.
    pub fn builtin() -> &'static Catalog {
        static CATALOG: OnceLock<Catalog> = OnceLock::new();
        CATALOG.get_or_init(|| {
            Catalog::parse(CATALOG_TOML).expect("the embedded catalog is checked by a unit test")
        })
    }

    /// Parses a catalog file; the error lists every problem found.
    pub fn parse(src: &str) -> Result<Catalog, Diagnostics> {
        let file: Arc<str> = Arc::from("<catalog>");
        let raw: RawCatalog = toml::from_str(src)
            .map_err(|e| Diagnostics(vec![super::syntax::syntax_diagnostic(&file, src, &e)]))?;
        let empty = BTreeMap::new();
        let mut r = Resolver {
            file: &file,
            src,
            raw: &raw.roles,
            base: &empty,
            origin: RoleOrigin::Catalog,
            done: BTreeMap::new(),
            diags: Vec::new(),
        };
        r.resolve_all();
        if !r.diags.is_empty() {
            return Err(Diagnostics(r.diags));
        }
        let roles = r
            .done
            .into_iter()
            .filter_map(|(k, v)| v.map(|v| (k, v)))
            .collect();
        Ok(Catalog { roles })
    }

    /// A role by name.
    pub fn get(&self, name: &str) -> Option<&Role> {
        self.roles.get(name)
    }

    /// All roles, sorted by name.
    pub fn roles(&self) -> impl Iterator<Item = &Role> {
        self.roles.values()
    }

    /// The roles as a map, for plan resolution.
    pub(crate) fn map(&self) -> &BTreeMap<String, Role> {
        &self.roles
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Protocol;

    #[test]
    fn embedded_catalog_parses() {
        Catalog::parse(CATALOG_TOML).unwrap();
    }

    fn ports(role: &str) -> Vec<(String, u16, Protocol, bool)> {
        Catalog::builtin()
            .get(role)
            .unwrap_or_else(|| panic!("catalog lacks {role}"))
            .ports
            .iter()
            .map(|p| (p.name.clone(), p.port.get(), p.protocol, p.offset))
            .collect()
    }

    #[test]
    fn catalog_ports_say_what_answers_them() {
        use crate::plan::ServiceKind::{Amqp, Http, Https, Mysql, Thrift, Tls};
        let c = Catalog::builtin();
        let service = |role: &str, port: &str| {
            c.get(role)
                .unwrap()
                .ports
                .iter()
                .find(|p| p.name == port)
                .unwrap()
                .service
        };
        assert_eq!(service("wso2-carbon", "https-servlet"), Some(Https));
        assert_eq!(service("wso2-carbon", "http-servlet"), Some(Http));
        assert_eq!(service("wso2-apim-keymanager", "thrift-km"), Some(Thrift));
        assert_eq!(service("wso2-apim-trafficmanager", "broker"), Some(Amqp));
        assert_eq!(service("wso2-apim-trafficmanager", "binary-ssl"), Some(Tls));
        // WSO2's own binary event protocol: nothing to prove it by.
        assert_eq!(service("wso2-apim-trafficmanager", "binary"), None);
        assert_eq!(service("wso2-apim-analytics", "thrift"), Some(Thrift));
        assert_eq!(service("wso2-apim-gateway", "nio-https"), Some(Https));
        assert_eq!(service("mariadb", "mysql"), Some(Mysql));
    }

    #[test]
    fn catalog_has_the_product_table() {
        use Protocol::{Tcp, Tls};
        let carbon = vec![
            ("https-servlet".to_owned(), 9443, Tls, true),
            ("http-servlet".to_owned(), 9763, Tcp, true),
        ];
        assert_eq!(ports("wso2-carbon"), carbon);
        assert_eq!(ports("wso2-apim-publisher"), carbon);
        assert_eq!(ports("wso2-apim-store"), carbon);
        let mut km = carbon.clone();
        // Thrift inside TLS (carbon-apimgt's TSSLTransportFactory server).
        km.push(("thrift-km".into(), 10397, Tls, true));
        assert_eq!(ports("wso2-apim-keymanager"), km);
        let mut gw = carbon.clone();
        gw.push(("nio-http".into(), 8280, Tcp, true));
        gw.push(("nio-https".into(), 8243, Tls, true));
        assert_eq!(ports("wso2-apim-gateway"), gw);
        assert_eq!(ports("wso2-esb"), gw);
        let mut tm = carbon.clone();
        tm.push(("binary".into(), 9611, Tcp, true));
        tm.push(("binary-ssl".into(), 9711, Tls, true));
        tm.push(("broker".into(), 5672, Tcp, true));
        assert_eq!(ports("wso2-apim-trafficmanager"), tm);
        let mut das = carbon.clone();
        das.push(("thrift".into(), 7611, Tcp, true));
        das.push(("thrift-ssl".into(), 7711, Tls, true));
        assert_eq!(ports("wso2-das"), das);
        let mut cep = das.clone();
        cep.push(("binary".into(), 9611, Tcp, true));
        cep.push(("binary-ssl".into(), 9711, Tls, true));
        assert_eq!(ports("wso2-cep"), cep);
        assert_eq!(
            ports("wso2-cluster-wka"),
            vec![("cluster".into(), 4000, Tcp, true)]
        );
        for db in ["mariadb", "mysql"] {
            assert_eq!(ports(db), vec![("mysql".into(), 3306, Tcp, false)]);
        }
        assert_eq!(
            ports("postgresql"),
            vec![("postgresql".into(), 5432, Tcp, false)]
        );
    }

    #[test]
    fn catalog_has_the_wso2_dials() {
        let dials = |role: &str| -> Vec<(String, String, u16, bool)> {
            Catalog::builtin()
                .get(role)
                .unwrap()
                .dials
                .iter()
                .map(|d| (d.name.clone(), d.to.clone(), d.port.get(), d.offset))
                .collect()
        };
        let gw = dials("wso2-apim-gateway");
        assert!(gw.contains(&(
            "thrift-km".into(),
            "wso2-apim-keymanager".into(),
            10397,
            true
        )));
        assert!(gw.contains(&(
            "https-servlet".into(),
            "wso2-apim-keymanager".into(),
            9443,
            false
        )));
        assert!(gw.contains(&(
            "binary".into(),
            "wso2-apim-trafficmanager".into(),
            9611,
            false
        )));
        assert!(gw.contains(&("thrift".into(), "wso2-das".into(), 7612, false)));
        assert!(dials("wso2-esb").contains(&("thrift".into(), "wso2-das".into(), 7612, false)));
        // `use` inherits dials.
        assert!(dials("wso2-carbon").is_empty());
    }
}
