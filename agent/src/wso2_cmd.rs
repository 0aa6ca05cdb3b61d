//! `portcall wso2 scan`: read WSO2 installations and report their ports,
//! dials, mismatches and differences from a plan.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Subcommand, ValueEnum};
use probe_core::plan::Plan;
use probe_core::wso2::{self, ScanFormat};

/// Output format of `wso2 scan`.
#[derive(Debug, Clone, Copy, ValueEnum, Default)]
pub enum Format {
    /// Aligned columns.
    #[default]
    Table,
    /// `portcall.wso2/v1` JSON.
    Json,
    /// A plan that reproduces the scan: hosts (and those outside the
    /// scan), roles, offsets, overrides, dial_overrides and flows.
    Toml,
}

#[derive(Subcommand, Debug)]
pub enum Wso2Command {
    /// Read installations (a copy of each one's repository/conf and bin/
    /// is enough): offsets, host names, ports, dials, mismatches. A dial
    /// reaches the installation whose own host names claim its host; one
    /// no installation claims is listed outside the scan. See docs/wso2.md.
    /// Exit 1 when anything disagrees, 0 when nothing does, 2 on bad input.
    Scan(ScanArgs),
}

#[derive(Args, Debug)]
pub struct ScanArgs {
    /// NAME=PRODUCT_HOME, one per installation (NAME is yours; the
    /// installation's own host names are read from its files).
    #[arg(required = true, value_name = "HOST=PRODUCT_HOME")]
    installs: Vec<String>,
    /// Compare with this plan: every port it assumes and every dial.
    #[arg(long)]
    plan: Option<PathBuf>,
    #[arg(long, value_enum, default_value_t)]
    format: Format,
}

pub fn wso2(cmd: Wso2Command) -> anyhow::Result<ExitCode> {
    let Wso2Command::Scan(args) = cmd;
    let installs = args
        .installs
        .iter()
        .map(|a| wso2::scan::parse_arg(a))
        .collect::<Result<Vec<_>, _>>()?;
    let plan = args
        .plan
        .as_deref()
        .map(Plan::load)
        .transpose()
        .map_err(wso2::ScanError::from)?;
    let scan = wso2::scan(&installs, plan.as_ref())?;
    let format = match args.format {
        Format::Table => ScanFormat::Table,
        Format::Json => ScanFormat::Json,
        Format::Toml => ScanFormat::Toml,
    };
    let mut out = Vec::new();
    wso2::render(&scan, format, &mut out)?;
    crate::write_stdout(&out)?;
    Ok(ExitCode::from(scan.exit_code()))
}
