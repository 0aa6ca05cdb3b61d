//! `agent --stdio`: one coordinator session on standard input and output
//! (what `check --ssh` starts on each host), with the same request handling,
//! limits and canaries as the control endpoint, and no port of its own.
//! When the input closes — the round is over, or the coordinator or its
//! ssh died — the round is torn down and the agent exits.

use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncWrite, BufReader};
use tokio_util::sync::CancellationToken;

use super::{AgentConfig, AgentLimits, Shared, error};
use crate::control::{MAX_PLAN_UPLOAD_BYTES, PlanUpload, ServerSecurity, read_frame, write_frame};
use crate::pki;
use crate::plan::Plan;

/// Where a stdio agent's plan comes from.
#[derive(Debug, Clone)]
pub enum StdioPlan {
    /// Already loaded (`--plan FILE`).
    Loaded(Arc<Plan>),
    /// The first frame of the input (`--plan -`): a [`PlanUpload`].
    Upload,
}

/// Why a stdio agent stopped before serving.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StdioError {
    /// The input ended or broke before the plan arrived.
    #[error("no plan on standard input")]
    NoPlan(#[source] crate::control::FrameError),
    /// The uploaded plan is not valid (every diagnostic, located).
    #[error(transparent)]
    Plan(#[from] crate::plan::PlanError),
    /// The host is not in the plan, or the canaries' certificate failed.
    #[error(transparent)]
    Agent(#[from] super::AgentError),
    /// The canaries' self-signed certificate could not be made.
    #[error(transparent)]
    Pki(#[from] crate::pki::PkiError),
}

/// Serves one coordinator on `input`/`output` as plan host `host` until
/// the input closes or `cancel` fires, then closes the round's canaries.
/// Problems before serving (no plan, a bad plan, an unknown host) are also
/// sent to the coordinator as an error reply, so it can report them.
pub async fn serve_stdio<R, W>(
    plan: StdioPlan,
    host: &str,
    limits: AgentLimits,
    input: R,
    output: W,
    cancel: CancellationToken,
) -> Result<(), StdioError>
where
    R: AsyncRead + Unpin + Send,
    W: AsyncWrite + Unpin + Send,
{
    // Silence between requests is normal here (other hosts are probing);
    // the round's TTL and the input closing are what end a session.
    let mut limits = limits;
    limits.idle_timeout = limits.idle_timeout.max(limits.max_ttl);
    let mut io = BufReader::with_capacity(8 * 1024, tokio::io::join(input, output));
    let started = async {
        let plan = match plan {
            StdioPlan::Loaded(p) => p,
            StdioPlan::Upload => {
                let up: PlanUpload = read_frame(&mut io, MAX_PLAN_UPLOAD_BYTES)
                    .await
                    .map_err(StdioError::NoPlan)?;
                Arc::new(Plan::parse(&up.plan, &up.source)?)
            }
        };
        let canary_tls = pki::self_signed_canary_config(host)?;
        let shared = Shared::new(AgentConfig {
            plan,
            host: host.to_owned(),
            // Unused: the coordinator is whoever holds our input, which
            // ssh authenticated.
            security: ServerSecurity::Insecure,
            canary_tls,
            listen: None,
            limits,
        })?;
        Ok::<_, StdioError>(shared)
    };
    let shared = match started.await {
        Ok(s) => s,
        Err(e) => {
            if !matches!(e, StdioError::NoPlan(_)) {
                let _ = write_frame(&mut io, &error(format!("agent {host}: {e}"))).await;
            }
            return Err(e);
        }
    };
    tracing::info!(%host, "agent serving on standard input and output");
    tokio::select! {
        () = cancel.cancelled() => {}
        () = shared.serve(&mut io, &"stdin") => {}
    }
    shared.end_round(None).await;
    Ok(())
}
