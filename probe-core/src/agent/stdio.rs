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
use crate::plan::{PathScope, Plan};

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
/// `rule_trace` is [`AgentConfig::rule_trace`].
/// Problems before serving (no plan, a bad plan, an unknown host) are also
/// sent to the coordinator as an error reply, so it can report them.
pub async fn serve_stdio<R, W>(
    plan: StdioPlan,
    host: &str,
    limits: AgentLimits,
    rule_trace: bool,
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
                // Only this host's paths are kept; the digest still
                // covers the whole plan.
                Arc::new(Plan::parse_scoped(
                    &up.plan,
                    &up.source,
                    &PathScope::Host(host.to_owned()),
                )?)
            }
        };
        let canary_tls = pki::self_signed_canary_config(host)?;
        let shared = Shared::new(AgentConfig {
            plan,
            host: host.to_owned(),
            // Unused: the coordinator is whoever holds our input, which
            // ssh authenticated.
            security: ServerSecurity::Insecure,
            coordinator: pki::COORDINATOR.to_owned(),
            canary_tls,
            listen: None,
            limits,
            rule_trace,
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
        () = shared.serve(&mut io, &"stdin", None) => {}
    }
    shared.end_round(None).await;
    // The process exits right after: the trace's monitor and table must be
    // gone before, not left to a task the runtime drops (ending the round
    // asked for it, within the canaries' timeout; this waits for nft), and
    // so must every table this agent made (shut_down).
    shared.stop_trace().await;
    shared.shut_down(tokio_util::task::TaskTracker::new()).await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::{
        ListenerState, MAX_REPLY_BYTES, PrepareRequest, Request, Response, plan_digest,
    };

    #[tokio::test]
    async fn one_session_then_the_canaries_close_when_the_input_does() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let text = format!(
            "name = \"stdio\"\n[roles.svc]\nports = [{{ name = \"svc\", port = {port} }}]\n[[hosts]]\nname = \"a\"\naddress = \"127.0.0.2\"\n[[hosts]]\nname = \"b\"\naddress = \"127.0.0.1\"\nroles = [\"svc\"]\n[[flows]]\nfrom = \"host:a\"\nto = \"host:b\"\nports = [\"svc\"]\n"
        );
        let digest = plan_digest(&Plan::parse(&text, "p.toml").unwrap());
        let (ours, theirs) = tokio::io::duplex(64 * 1024);
        let (input, output) = tokio::io::split(theirs);
        let agent = tokio::spawn(async move {
            serve_stdio(
                StdioPlan::Upload,
                "b",
                AgentLimits::default(),
                false,
                input,
                output,
                CancellationToken::new(),
            )
            .await
        });
        let mut io = BufReader::new(ours);
        let upload = PlanUpload {
            source: "p.toml".into(),
            plan: text.clone(),
        };
        write_frame(&mut io, &upload).await.unwrap();
        write_frame(
            &mut io,
            &Request::Prepare(PrepareRequest {
                round: "ab12".into(),
                host: "b".into(),
                plan_digest: digest,
                ttl_ms: 60_000,
                version: crate::control::PROTOCOL_VERSION,
                nonce_key: None,
                samples: 1,
            }),
        )
        .await
        .unwrap();
        let reply: Response = read_frame(&mut io, MAX_REPLY_BYTES).await.unwrap();
        let Response::Prepared(p) = reply else {
            panic!("{reply:?}");
        };
        assert_eq!(p.listeners.len(), 1);
        assert_eq!(p.listeners[0].state, ListenerState::Canary);
        assert!(
            tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
        );

        // The coordinator goes away: the agent ends the round and returns.
        drop(io);
        let done = tokio::time::timeout(std::time::Duration::from_secs(10), agent).await;
        assert!(matches!(done, Ok(Ok(Ok(())))), "{done:?}");
        let after = tokio::net::TcpStream::connect(("127.0.0.1", port)).await;
        assert!(after.is_err(), "the canary outlived its session");
    }
}
