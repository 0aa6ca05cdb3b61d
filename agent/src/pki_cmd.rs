//! `portcall pki init|issue`: the control channel's CA and certificates.

use std::net::IpAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Subcommand;
use probe_core::pki::{self, CertUsage, IssueRequest};
use probe_core::plan::Plan;

#[derive(Subcommand, Debug)]
pub enum PkiCommand {
    /// Create a CA: DIR/ca.pem and DIR/ca-key.pem (mode 0600).
    Init {
        /// Directory for the CA (created with mode 0700 if missing).
        #[arg(long)]
        dir: PathBuf,
        /// Replace an existing CA (every certificate it signed stops
        /// being trusted).
        #[arg(long)]
        force: bool,
    },
    /// Issue DIR/NAME.pem and DIR/NAME-key.pem signed by the CA in DIR: one
    /// per agent host (named as in the plan), and `coordinator` for
    /// `portcall check`; or, with --plan, all of them at once.
    Issue {
        /// Directory holding the CA.
        #[arg(long)]
        dir: PathBuf,
        /// The certificate's name: a plan host name, or `coordinator`.
        #[arg(long, required_unless_present = "plan", conflicts_with = "plan")]
        name: Option<String>,
        /// Issue every host's certificate of this plan (valid for all its
        /// addresses) plus the coordinator's, in one go.
        #[arg(long, value_name = "PLAN", conflicts_with_all = ["ips", "dns", "client"])]
        plan: Option<PathBuf>,
        /// An IP address the certificate is valid for (the host's plan
        /// address); repeatable.
        #[arg(long = "ip", value_name = "ADDR")]
        ips: Vec<IpAddr>,
        /// A further DNS name the certificate is valid for; repeatable.
        #[arg(long = "dns", value_name = "NAME")]
        dns: Vec<String>,
        /// Issue a client certificate (implied for `coordinator`). Agents
        /// act only for the client certificate named `coordinator`, or the
        /// name given to `portcall agent --coordinator`.
        #[arg(long)]
        client: bool,
        /// Replace existing files.
        #[arg(long)]
        force: bool,
    },
}

pub fn pki(cmd: PkiCommand) -> anyhow::Result<ExitCode> {
    let written = match cmd {
        PkiCommand::Init { dir, force } => vec![pki::init(&dir, force)?],
        PkiCommand::Issue {
            dir,
            plan: Some(plan),
            force,
            ..
        } => {
            let plan = Plan::load(&plan)?;
            pki::issue_plan(&dir, &plan, force)?
        }
        PkiCommand::Issue {
            dir,
            name,
            ips,
            dns,
            client,
            force,
            ..
        } => {
            let name = name.expect("clap requires --name without --plan");
            let mut req = IssueRequest::new(name);
            req.ips = ips;
            req.dns = dns;
            if client {
                req.usage = CertUsage::Client;
                if req.name != pki::COORDINATOR {
                    eprintln!(
                        "note: agents act only for the certificate named {:?} unless started with `--coordinator {}`",
                        pki::COORDINATOR,
                        req.name
                    );
                }
            }
            vec![pki::issue(&dir, &req, force)?]
        }
    };
    for w in written {
        eprintln!(
            "wrote {} and {} (mode 0600)",
            w.cert.display(),
            w.key.display()
        );
    }
    Ok(ExitCode::SUCCESS)
}
