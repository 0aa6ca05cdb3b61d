//! The control channel's transports behind one trait: mutual TLS 1.3 to an
//! agent's control port ([`mtls`]; plain TCP on loopback with `--insecure`),
//! or an agent started over the system `ssh` client speaking on its
//! standard input and output ([`ssh`]). The round asks a [`Transport`] for a
//! [`ControlStream`] per host and never knows which one it got.

pub mod mtls;
pub mod ssh;

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, BufReader, ReadBuf};
use tokio::time::timeout;

use super::frame::{FrameError, read_frame, write_frame};
use super::messages::{Request, Response};
use crate::pki::PkiError;
use crate::plan::Address;
use crate::probe::ProbeStream;

/// A boxed future that owns what it needs.
pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// Which agent to reach, as the plan and round configuration say.
#[derive(Debug, Clone)]
pub struct Dial {
    /// The plan host.
    pub host: String,
    /// Its plan address.
    pub address: Address,
    /// The plan's `control_port`.
    pub control_port: u16,
    /// A control endpoint that differs from `address:control_port` (the
    /// demo and tests bind ephemeral ports).
    pub endpoint: Option<SocketAddr>,
    /// Deadline of connecting (each step of it).
    pub connect_timeout: Duration,
}

/// A way to open a control stream to a plan host's agent.
pub trait Transport: Send + Sync {
    /// Opens the control stream to `dial.host`'s agent (starting the agent
    /// first, when the transport does that).
    fn open(&self, dial: Dial) -> BoxFuture<Result<ControlStream, ControlError>>;

    /// Whether an agent stays up when its connection is gone, so that a
    /// cancelled round opens a new one to tear it down (true for agents on
    /// a control port; an ssh session's agent ends with its session).
    fn agents_outlive_connections(&self) -> bool {
        true
    }
}

/// The byte stream under a [`ControlStream`], with the transport's own
/// account of why it broke and its own way to close.
pub trait ControlIo: AsyncRead + AsyncWrite + Send + Unpin {
    /// Why the stream broke, in the transport's words (the last line ssh
    /// printed), when it has any.
    fn failure(&mut self) -> Pin<Box<dyn Future<Output = Option<String>> + Send + '_>> {
        Box::pin(async { None })
    }

    /// Closes the stream, waiting up to `deadline` for the other end to
    /// finish.
    fn finish(self: Box<Self>, deadline: Duration) -> BoxFuture<()>;
}

/// A TCP or TLS stream as a control stream.
pub(crate) struct SocketIo(pub(crate) Box<dyn ProbeStream>);

impl AsyncRead for SocketIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for SocketIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

impl ControlIo for SocketIo {
    fn finish(mut self: Box<Self>, deadline: Duration) -> BoxFuture<()> {
        Box::pin(async move {
            use tokio::io::AsyncWriteExt;
            let _ = timeout(deadline, self.0.shutdown()).await;
        })
    }
}

/// Why talking to an agent failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ControlError {
    /// TCP connect failed.
    #[error("connect to agent {host} at {addr}")]
    Connect {
        /// The agent's host.
        host: String,
        /// Its control endpoint.
        addr: SocketAddr,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// TCP connect did not finish in time.
    #[error("connect to agent {host} at {addr}: no answer within {after_ms} ms")]
    ConnectTimeout {
        /// The agent's host.
        host: String,
        /// Its control endpoint.
        addr: SocketAddr,
        /// The deadline.
        after_ms: u128,
    },
    /// The TLS handshake failed (wrong CA, certificate for another host).
    #[error("TLS handshake with agent {host} at {addr}")]
    Handshake {
        /// The agent's host.
        host: String,
        /// Its control endpoint.
        addr: SocketAddr,
        /// The TLS error.
        #[source]
        source: std::io::Error,
    },
    /// The agent refused our certificate for its usage (an agent's
    /// certificate presented as the coordinator's).
    #[error("TLS handshake with agent {host} at {addr}: {why}")]
    CertificateRefused {
        /// The agent's host.
        host: String,
        /// Its control endpoint.
        addr: SocketAddr,
        /// Which certificate, and which one is needed.
        why: String,
    },
    /// The TLS handshake did not finish in time.
    #[error("TLS handshake with agent {host} at {addr}: no answer within {after_ms} ms")]
    HandshakeTimeout {
        /// The agent's host.
        host: String,
        /// Its control endpoint.
        addr: SocketAddr,
        /// The deadline.
        after_ms: u128,
    },
    /// The host's address could not be resolved.
    #[error("agent {host}: {message}")]
    Resolve {
        /// The agent's host.
        host: String,
        /// What the resolver said.
        message: String,
    },
    /// The transport itself failed (ssh could not log in, verify the host
    /// key or start the agent); `message` is its own last word.
    #[error("agent {host} via {peer}: {message}")]
    Transport {
        /// The agent's host.
        host: String,
        /// How it was reached, e.g. `ssh root@gw1:22`.
        peer: String,
        /// What went wrong (for ssh, the last line it printed).
        message: String,
    },
    /// A request got no reply in time.
    #[error("agent {host} at {addr}: no reply to {op} within {after_ms} ms")]
    RequestTimeout {
        /// The agent's host.
        host: String,
        /// Its control endpoint, or how it was reached.
        addr: String,
        /// The request.
        op: &'static str,
        /// The deadline.
        after_ms: u128,
    },
    /// A frame could not be exchanged.
    #[error("agent {host} at {addr}: {op}")]
    Frame {
        /// The agent's host.
        host: String,
        /// Its control endpoint, or how it was reached.
        addr: String,
        /// The request.
        op: &'static str,
        /// What went wrong.
        #[source]
        source: FrameError,
    },
    /// The agent answered with an error.
    #[error("agent {host} at {addr} refused {op}: {message}")]
    Refused {
        /// The agent's host.
        host: String,
        /// Its control endpoint, or how it was reached.
        addr: String,
        /// The request.
        op: &'static str,
        /// The agent's message.
        message: String,
    },
    /// The agent answered with the wrong kind of reply.
    #[error("agent {host} at {addr}: unexpected reply to {op}")]
    Unexpected {
        /// The agent's host.
        host: String,
        /// Its control endpoint, or how it was reached.
        addr: String,
        /// The request.
        op: &'static str,
    },
    /// The coordinator's TLS configuration could not be built.
    #[error(transparent)]
    Tls(#[from] PkiError),
}

/// An open control connection to one agent.
pub struct ControlStream {
    host: String,
    addr: String,
    io: BufReader<Box<dyn ControlIo>>,
}

impl std::fmt::Debug for ControlStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ControlStream")
            .field("host", &self.host)
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl ControlStream {
    /// A control stream to `host`'s agent over `io`; `addr` says where or
    /// how it was reached, for messages.
    pub fn new(host: &str, addr: String, io: Box<dyn ControlIo>) -> ControlStream {
        ControlStream {
            host: host.to_string(),
            addr,
            io: BufReader::new(io),
        }
    }

    /// The agent's host name.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// Sends a request and waits up to `deadline` for its reply. An
    /// `error` reply becomes [`ControlError::Refused`]; a stream the
    /// transport saw break becomes [`ControlError::Transport`].
    pub async fn request(
        &mut self,
        request: &Request,
        deadline: Duration,
    ) -> Result<Response, ControlError> {
        let op = op_name(request);
        let exchange = async {
            write_frame(&mut self.io, request).await?;
            read_frame::<Response, _>(&mut self.io, super::MAX_REPLY_BYTES).await
        };
        match timeout(deadline, exchange).await {
            Err(_) => Err(ControlError::RequestTimeout {
                host: self.host.clone(),
                addr: self.addr.clone(),
                op,
                after_ms: deadline.as_millis(),
            }),
            Ok(Err(source)) => {
                if matches!(
                    source,
                    FrameError::Closed | FrameError::Truncated | FrameError::Io(_)
                ) {
                    if let Some(message) = self.io.get_mut().failure().await {
                        return Err(ControlError::Transport {
                            host: self.host.clone(),
                            peer: self.addr.clone(),
                            message,
                        });
                    }
                }
                Err(ControlError::Frame {
                    host: self.host.clone(),
                    addr: self.addr.clone(),
                    op,
                    source,
                })
            }
            Ok(Ok(Response::Error(e))) => Err(ControlError::Refused {
                host: self.host.clone(),
                addr: self.addr.clone(),
                op,
                message: e.message,
            }),
            Ok(Ok(r)) => Ok(r),
        }
    }

    /// Closes the stream the transport's way (for ssh: end the agent's
    /// input and wait up to `deadline` for it and ssh to exit).
    pub async fn close(self, deadline: Duration) {
        self.io.into_inner().finish(deadline).await;
    }

    /// The error for a reply of the wrong kind to `request`.
    pub fn unexpected(&self, request: &Request) -> ControlError {
        ControlError::Unexpected {
            host: self.host.clone(),
            addr: self.addr.clone(),
            op: op_name(request),
        }
    }

    /// Writes raw bytes (tests of the agent's input handling).
    #[doc(hidden)]
    pub async fn send_raw(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        use tokio::io::AsyncWriteExt;
        self.io.get_mut().write_all(bytes).await?;
        self.io.get_mut().flush().await
    }

    /// Reads one raw reply frame (tests of the agent's input handling).
    #[doc(hidden)]
    pub async fn read_reply(&mut self) -> Result<Response, FrameError> {
        read_frame(&mut self.io, super::MAX_REPLY_BYTES).await
    }
}

/// The request's `op` name, for messages.
pub fn op_name(request: &Request) -> &'static str {
    match request {
        Request::Hello => "hello",
        Request::Prepare(_) => "prepare",
        Request::Probe(_) => "probe",
        Request::Evidence(_) => "evidence",
        Request::Teardown(_) => "teardown",
        Request::Renew(_) => "renew",
        Request::TraceSources(_) => "trace-sources",
        Request::State => "state",
    }
}
