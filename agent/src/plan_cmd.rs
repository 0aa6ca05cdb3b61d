//! `portcall plan show|lint` and `portcall catalog`.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Subcommand, ValueEnum};
use probe_core::plan::Catalog;
use probe_core::plan::{self, PathScope, Severity};
use probe_core::render::count;
use probe_core::render::plan as render;

/// Output format of `plan show` and `catalog`.
#[derive(Debug, Clone, Copy, ValueEnum, Default)]
pub enum ShowFormat {
    /// Aligned columns.
    #[default]
    Table,
    /// `portcall.plan/v1` (or `portcall.catalog/v1`) JSON.
    Json,
}

#[derive(Subcommand, Debug)]
pub enum PlanCommand {
    /// Show each host's effective ports and every path the flows expand into.
    Show {
        /// The plan file (TOML).
        plan: PathBuf,
        #[arg(long, value_enum, default_value_t)]
        format: ShowFormat,
    },
    /// Check a plan: collisions, unknown roles and ports, selectors matching
    /// nothing, duplicates; warnings for unused roles and empty zones.
    Lint {
        /// The plan file (TOML).
        plan: PathBuf,
    },
}

#[derive(Args, Debug)]
pub struct CatalogArgs {
    #[arg(long, value_enum, default_value_t)]
    format: ShowFormat,
}

fn read(path: &PathBuf) -> anyhow::Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("read plan {}", path.display()))
}

pub fn plan(cmd: PlanCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        PlanCommand::Show { plan: path, format } => {
            let src = read(&path)?;
            // JSON streams the paths as the plan produces them; the table
            // groups them by flow, so it holds them all.
            let scope = match format {
                ShowFormat::Table => PathScope::All,
                ShowFormat::Json => PathScope::Lazy,
            };
            let a = plan::analyze_scoped(
                &src,
                &path.display().to_string(),
                Catalog::builtin(),
                &scope,
            );
            for d in &a.diagnostics.0 {
                eprintln!("{d}");
            }
            let Some(p) = a.plan else {
                return Ok(ExitCode::from(2));
            };
            if let ShowFormat::Json = format {
                let out = std::io::stdout().lock();
                let mut out = std::io::BufWriter::with_capacity(64 * 1024, out);
                return match render::plan_json(&p, &mut out).and_then(|()| out.flush()) {
                    Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.into()),
                    _ => Ok(ExitCode::SUCCESS),
                };
            }
            let mut out = Vec::new();
            render::plan_table(&p, &mut out)?;
            crate::write_stdout(&out)?;
            Ok(ExitCode::SUCCESS)
        }
        PlanCommand::Lint { plan: path } => {
            let src = read(&path)?;
            let a = plan::analyze_scoped(
                &src,
                &path.display().to_string(),
                Catalog::builtin(),
                &PathScope::Lazy,
            );
            let errors = a
                .diagnostics
                .0
                .iter()
                .filter(|d| d.severity == Severity::Error)
                .count();
            let warnings = a.diagnostics.0.len() - errors;
            let mut out = Vec::new();
            for d in &a.diagnostics.0 {
                writeln!(out, "{d}")?;
            }
            match &a.plan {
                Some(p) if errors == 0 => writeln!(
                    out,
                    "{}: ok: {}, {}, {}; {}",
                    path.display(),
                    count(p.hosts.len(), "host"),
                    count(p.flows.len(), "flow"),
                    count(p.path_count(), "path"),
                    count(warnings, "warning")
                )?,
                _ => writeln!(
                    out,
                    "{}: {} error{}, {} warning{}",
                    path.display(),
                    errors,
                    if errors == 1 { "" } else { "s" },
                    warnings,
                    if warnings == 1 { "" } else { "s" }
                )?,
            }
            crate::write_stdout(&out)?;
            // A plan that is valid but describes clients dialling ports
            // their servers do not listen on exits 1, like a violation; an
            // invalid plan exits 2.
            Ok(if a.plan.is_none() {
                ExitCode::from(2)
            } else if errors > 0 {
                ExitCode::from(1)
            } else {
                ExitCode::SUCCESS
            })
        }
    }
}

pub fn catalog(args: CatalogArgs) -> anyhow::Result<ExitCode> {
    let mut out = Vec::new();
    match args.format {
        ShowFormat::Table => render::catalog_table(Catalog::builtin(), &mut out)?,
        ShowFormat::Json => render::catalog_json(Catalog::builtin(), &mut out)?,
    }
    crate::write_stdout(&out)?;
    Ok(ExitCode::SUCCESS)
}
