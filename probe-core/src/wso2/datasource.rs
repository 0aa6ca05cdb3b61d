//! Database connections, the path most often firewalled: API-M 2.x
//! `repository/conf/datasources/master-datasources.xml`
//! (`<datasources-configuration><datasources><datasource><name>` and
//! `<definition type="RDBMS"><configuration><url>`, as in wso2/kubernetes-apim
//! 2.6.0's `am-km/datasources/master-datasources.xml`), and the JDBC URLs
//! themselves, whose sub-protocol names the database type. 3.x/4.x
//! `[database.*] url` is read by `deployment`.

use std::path::Path;

use super::error::ScanError;
use super::source::Setting;
use super::values::Vars;
use super::xml::parse_xml;

/// One datasource's JDBC URL.
#[derive(Debug, Clone)]
pub(crate) struct DbSetting {
    /// `<datasource><name>`, e.g. `WSO2AM_DB`, or `[database.apim_db]`.
    pub name: String,
    /// `<url>` and where.
    pub url: Setting<String>,
}

pub(crate) fn read_datasources(
    file: &Path,
    text: &str,
    _vars: &Vars,
) -> Result<Vec<DbSetting>, ScanError> {
    let root = parse_xml(file, text)?;
    let mut out = Vec::new();
    for ds in root
        .child("datasources")
        .into_iter()
        .flat_map(|d| d.children.iter().filter(|c| c.name == "datasource"))
    {
        let Some(url) = ds.path(&["definition", "configuration", "url"]) else {
            continue;
        };
        out.push(DbSetting {
            name: ds
                .child("name")
                .map_or_else(String::new, |n| n.text.clone()),
            url: url.setting(),
        });
    }
    Ok(out)
}

/// A JDBC URL's database type and the servers it connects to (none for
/// an embedded database).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Jdbc {
    /// `mysql`, `mariadb`, `postgresql`, `sqlserver`, `oracle`, `db2`, `h2`.
    pub kind: String,
    pub servers: Vec<(String, u16)>,
}

impl Jdbc {
    /// The catalog role a server of this type plays, and its port name.
    pub fn role(&self) -> Option<(&'static str, &'static str)> {
        match self.kind.as_str() {
            "mysql" => Some(("mysql", "mysql")),
            "mariadb" => Some(("mariadb", "mysql")),
            "postgresql" => Some(("postgresql", "postgresql")),
            _ => None,
        }
    }

    /// The port name of a dial to it: the catalog's, or `jdbc-KIND`.
    pub fn port_name(&self) -> String {
        self.role()
            .map_or_else(|| format!("jdbc-{}", self.kind), |(_, p)| p.to_owned())
    }
}

/// Parses `jdbc:mysql://h1:3306,h2/db?…`, `jdbc:mariadb://…`,
/// `jdbc:postgresql://…`, `jdbc:sqlserver://h:1433;databaseName=…`,
/// `jdbc:oracle:thin:@h:1521:SID`, `@//h:1521/svc` and
/// `@(DESCRIPTION=…(HOST=h)(PORT=1521)…)`, `jdbc:db2://h:50000/db`,
/// `jdbc:h2:tcp://h:9092/…` (a file `jdbc:h2:` is embedded). Each type's
/// default port where the URL gives none.
pub(crate) fn jdbc(url: &str) -> Option<Jdbc> {
    let rest = url.trim().strip_prefix("jdbc:")?;
    let (kind, after) = rest.split_once(':')?;
    let kind = kind.to_ascii_lowercase();
    let default = match kind.as_str() {
        "mysql" | "mariadb" => 3306,
        "postgresql" => 5432,
        "sqlserver" => 1433,
        "oracle" => 1521,
        "db2" => 50000,
        "h2" => 9092,
        _ => return None,
    };
    let servers = match kind.as_str() {
        "oracle" => oracle(after, default),
        "h2" => match after
            .strip_prefix("tcp://")
            .or_else(|| after.strip_prefix("ssl://"))
        {
            Some(a) => hosts(a.split('/').next().unwrap_or(""), default),
            None => Vec::new(),
        },
        _ => {
            // mysql:loadbalance://, mysql:replication:// and the like.
            let a = after.split_once("//").map_or("", |(_, a)| a);
            let authority = a.split(['/', '?', ';']).next().unwrap_or("");
            hosts(authority, default)
        }
    };
    Some(Jdbc { kind, servers })
}

/// `h1:p1,h2` into servers; an instance name (`h\SQLEXPRESS`) is dropped.
fn hosts(list: &str, default: u16) -> Vec<(String, u16)> {
    list.split(',')
        .filter_map(|item| {
            let item = item.rsplit_once('@').map_or(item, |(_, h)| h).trim();
            let (host, port) = match item.strip_prefix('[') {
                Some(v6) => {
                    let (h, after) = v6.split_once(']')?;
                    (h, after.strip_prefix(':'))
                }
                None => match item.rsplit_once(':') {
                    Some((h, p)) if !h.contains(':') => (h, Some(p)),
                    Some(_) => return None,
                    None => (item, None),
                },
            };
            let host = host.split('\\').next().unwrap_or(host);
            let port = match port {
                Some(p) => p.parse::<u16>().ok().filter(|p| *p != 0)?,
                None => default,
            };
            (!host.is_empty()).then(|| (host.to_owned(), port))
        })
        .collect()
}

fn oracle(after: &str, default: u16) -> Vec<(String, u16)> {
    let Some((_, at)) = after.split_once('@') else {
        return Vec::new();
    };
    if at.trim_start().starts_with('(') {
        // A TNS descriptor: every (HOST=…)(PORT=…) pair.
        let upper = at.to_ascii_uppercase();
        let mut out = Vec::new();
        let mut from = 0;
        while let Some(i) = upper[from..].find("(HOST=") {
            let start = from + i + 6;
            let end = upper[start..].find(')').map_or(upper.len(), |j| start + j);
            let host = at[start..end].trim().to_owned();
            let port = upper[end..]
                .find("(PORT=")
                .and_then(|j| {
                    let p = end + j + 6;
                    upper[p..].split(')').next()?.trim().parse::<u16>().ok()
                })
                .unwrap_or(default);
            out.push((host, port));
            from = end;
        }
        return out;
    }
    let at = at.trim_start_matches("//");
    // host:port:SID or host:port/service
    let authority = at.split('/').next().unwrap_or("");
    let mut parts = authority.splitn(3, ':');
    let host = parts.next().unwrap_or("");
    let port = parts
        .next()
        .and_then(|p| p.parse::<u16>().ok())
        .unwrap_or(default);
    if host.is_empty() {
        Vec::new()
    } else {
        vec![(host.to_owned(), port)]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn servers(url: &str) -> (String, Vec<(String, u16)>) {
        let j = jdbc(url).unwrap();
        (j.kind, j.servers)
    }

    #[test]
    fn jdbc_urls_of_every_database_wso2_supports() {
        let s = |h: &str, p| (h.to_owned(), p);
        assert_eq!(
            servers("jdbc:mysql://db.example.com:3306/apimgtdb?useSSL=false"),
            ("mysql".into(), vec![s("db.example.com", 3306)])
        );
        assert_eq!(
            servers("jdbc:mysql:loadbalance://a,b:3307/x"),
            ("mysql".into(), vec![s("a", 3306), s("b", 3307)])
        );
        assert_eq!(
            servers("jdbc:mariadb://db:3306/am"),
            ("mariadb".into(), vec![s("db", 3306)])
        );
        assert_eq!(
            servers("jdbc:postgresql://pg/am"),
            ("postgresql".into(), vec![s("pg", 5432)])
        );
        assert_eq!(
            servers("jdbc:sqlserver://ms\\SQLEXPRESS:1434;databaseName=am"),
            ("sqlserver".into(), vec![s("ms", 1434)])
        );
        assert_eq!(
            servers("jdbc:oracle:thin:@ora:1521:ORCL"),
            ("oracle".into(), vec![s("ora", 1521)])
        );
        assert_eq!(
            servers("jdbc:oracle:thin:@//ora:1522/svc"),
            ("oracle".into(), vec![s("ora", 1522)])
        );
        assert_eq!(
            servers(
                "jdbc:oracle:thin:@(DESCRIPTION=(ADDRESS=(PROTOCOL=TCP)(HOST=o1)(PORT=1523))(CONNECT_DATA=(SID=X)))"
            ),
            ("oracle".into(), vec![s("o1", 1523)])
        );
        assert_eq!(
            servers("jdbc:h2:./repository/database/WSO2CARBON_DB;DB_CLOSE_ON_EXIT=FALSE"),
            ("h2".into(), vec![])
        );
        assert_eq!(servers("jdbc:db2://d:50001/am").1, vec![s("d", 50001)]);
        assert!(jdbc("mysql://x").is_none());
    }
}
