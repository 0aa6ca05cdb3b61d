//! `portcall wso2 scan`: reads each installation's files, works out its
//! offset, the names it answers to, the ports it will open and the
//! endpoints it will dial, then matches every dial to the installation
//! that claims its host (client/server mismatches, dials outside the
//! scan) and, when given, compares with a plan. Renders `portcall.wso2/v1`
//! JSON, a table, or a plan in TOML.

use std::io::{self, Write};
use std::path::{Path, PathBuf};

use super::error::ScanError;
use super::install::{self, Files};
use super::{matching, plan_out};
use crate::plan::Plan;
use crate::port::Protocol;
use crate::render::Table;

pub use super::model::{
    DialFinding, Difference, Install, Mismatch, Outside, PortFinding, SCHEMA, Scan,
};

/// Splits `HOST=PRODUCT_HOME`.
pub fn parse_arg(arg: &str) -> Result<(String, PathBuf), ScanError> {
    match arg.split_once('=') {
        Some((h, p))
            if !h.is_empty()
                && !p.is_empty()
                && !h.contains(['/', ' '])
                && !h.chars().any(char::is_control) =>
        {
            Ok((h.to_owned(), PathBuf::from(p)))
        }
        _ => Err(ScanError::BadArgument {
            arg: arg.to_owned(),
        }),
    }
}

/// Scans every installation and compares them (and the plan, if any).
pub fn scan(installs: &[(String, PathBuf)], plan: Option<&Plan>) -> Result<Scan, ScanError> {
    let mut out: Vec<Install> = Vec::new();
    let mut files: Vec<Files> = Vec::new();
    for (host, home) in installs {
        if out.iter().any(|i| &i.host == host) {
            return Err(ScanError::DuplicateHost { host: host.clone() });
        }
        let (i, f) = read_install(host, home)?;
        out.push(i);
        files.push(f);
    }
    matching::reach(&mut out, plan);
    if matching::refine_roles(&mut out) {
        for (i, f) in out.iter_mut().zip(&files) {
            i.ports = install::ports(i, f);
        }
    }
    full_distribution(&mut out, &files);
    let mut differences = Vec::new();
    let mismatches = matching::compare(&out, &mut differences);
    let outside = matching::outside(&out);
    if let Some(plan) = plan {
        plan_out::differences(&out, plan, &mut differences);
    }
    Ok(Scan {
        schema: SCHEMA,
        installs: out,
        mismatches,
        differences,
        outside,
    })
}

/// Adds to each node started without `-Dprofile` the ports of the full
/// distribution that its peers dial.
fn full_distribution(installs: &mut [Install], files: &[Files]) {
    for s in 0..installs.len() {
        let wanted: Vec<String> = installs
            .iter()
            .flat_map(|c| c.dials.iter())
            .filter(|d| d.reaches == installs[s].host)
            .filter(|d| !installs[s].ports.iter().any(|p| p.name == d.name))
            .map(|d| d.name.clone())
            .collect();
        for name in wanted {
            if installs[s].ports.iter().any(|p| p.name == name) {
                continue;
            }
            if let Some(p) = install::full_distribution_port(&installs[s], &files[s], &name) {
                installs[s].ports.push(p);
            }
        }
    }
}

fn read_install(host: &str, home: &Path) -> Result<(Install, Files), ScanError> {
    let f = install::read_files(home)?;
    let names: Vec<String> = install::names(&f)
        .into_iter()
        .map(|s| s.value)
        .filter(|n| !n.eq_ignore_ascii_case(host))
        .collect();
    let id = install::identify(&f, &names);
    let offset = install::offset(&f);
    let mut unresolved: Vec<String> = f
        .start
        .unresolved
        .iter()
        .chain(f.carbon.iter().flat_map(|c| c.unresolved.iter()))
        .chain(f.apim.iter().flat_map(|a| a.unresolved.iter()))
        .chain(f.axis2.iter().flat_map(|a| a.unresolved.iter()))
        .chain(f.deployment.iter().flat_map(|d| d.unresolved.iter()))
        .chain(f.sp.iter().flat_map(|s| s.unresolved.iter()))
        .cloned()
        .collect();
    let mut i = Install {
        host: host.to_owned(),
        names,
        home: home.display().to_string(),
        product: id.product,
        profile: id.profile,
        profile_source: id.profile_source,
        role: id.role.to_owned(),
        offset: offset.as_ref().map_or(0, |o| o.value),
        offset_source: offset.map_or_else(|| "default".to_owned(), |o| o.source.to_string()),
        ports: Vec::new(),
        dials: Vec::new(),
        unresolved: Vec::new(),
        cluster: f.axis2.as_ref().is_some_and(|a| a.cluster.is_some()),
    };
    if i.role == "wso2-apim-analytics" && i.offset == 0 {
        // Moved below its shipped offset 1: plain DAS ports at offset 0.
        i.role = "wso2-das".into();
    }
    i.ports = install::ports(&i, &f);
    i.dials = install::dials(&i, &f, &mut unresolved);
    i.unresolved = unresolved;
    Ok((i, f))
}

/// Output formats of `wso2 scan`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ScanFormat {
    /// Aligned columns for a terminal.
    #[default]
    Table,
    /// `portcall.wso2/v1` JSON.
    Json,
    /// A plan: hosts, roles, offsets, overrides, flows.
    Toml,
}

/// Writes a scan in `format`.
pub fn render(scan: &Scan, format: ScanFormat, w: &mut impl Write) -> io::Result<()> {
    match format {
        ScanFormat::Json => {
            serde_json::to_writer_pretty(&mut *w, scan)?;
            writeln!(w)
        }
        ScanFormat::Table => table(scan, w),
        ScanFormat::Toml => plan_out::plan(scan, w),
    }
}

fn install_table(i: &Install, w: &mut impl Write) -> io::Result<()> {
    let names = if i.names.is_empty() {
        String::new()
    } else {
        format!(" [{}]", i.names.join(", "))
    };
    writeln!(
        w,
        "{}{names} ({}): {}, profile {} ({}), role {}, offset {} ({})",
        i.host,
        i.home,
        i.product,
        i.profile.as_deref().unwrap_or("unknown"),
        i.profile_source,
        i.role,
        i.offset,
        i.offset_source
    )?;
    let mut t = Table::with_header(["", "NAME", "PORT", "REACHES", "HOW", "SOURCE"]);
    for p in &i.ports {
        let port = match p.protocol {
            Protocol::Tls => format!("{}/tls", p.port),
            _ => p.port.to_string(),
        };
        t.row([
            "listens".into(),
            p.name.clone(),
            port,
            String::new(),
            p.how.clone(),
            p.source.clone(),
        ]);
    }
    for d in &i.dials {
        t.row([
            "dials".into(),
            d.name.clone(),
            format!("{}:{}", d.to_host, d.to_port),
            d.reaches.clone(),
            d.how.clone(),
            d.source.clone(),
        ]);
    }
    t.write_to(w)?;
    for u in &i.unresolved {
        writeln!(w, "  unresolved: {u}")?;
    }
    writeln!(w)
}

fn table(scan: &Scan, w: &mut impl Write) -> io::Result<()> {
    for i in &scan.installs {
        install_table(i, w)?;
    }
    for m in &scan.mismatches {
        let dialled = if m.dialled_host.eq_ignore_ascii_case(&m.server_host) {
            String::new()
        } else {
            format!(" (dialled as {})", m.dialled_host)
        };
        writeln!(
            w,
            "mismatch: {} dials {} on {} but {} listens on {}{dialled}: {}",
            m.client_host, m.name, m.client_port, m.server_host, m.server_port, m.fix
        )?;
    }
    for d in &scan.differences {
        writeln!(w, "difference ({}): {}", d.kind, d.detail)?;
    }
    for o in &scan.outside {
        let db = match &o.database {
            Some(d) if *d != o.name => format!(", {d}"),
            _ => String::new(),
        };
        writeln!(
            w,
            "outside the scan: {}:{} ({}{db}) dialled by {}",
            o.host,
            o.port,
            o.name,
            o.dialled_by.join(", ")
        )?;
    }
    let plural =
        |n: usize, one: &str, many: &str| format!("{n} {}", if n == 1 { one } else { many });
    writeln!(
        w,
        "{}, {}, {}, {} outside the scan",
        plural(scan.installs.len(), "installation", "installations"),
        plural(scan.mismatches.len(), "mismatch", "mismatches"),
        plural(scan.differences.len(), "difference", "differences"),
        plural(scan.outside.len(), "endpoint", "endpoints")
    )
}
