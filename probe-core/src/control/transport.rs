//! The control channel's transport: mutual TLS 1.3 in normal use, plain TCP
//! only on loopback with `--insecure`, and the coordinator's client side
//! with a deadline on connect, handshake and every request.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use rustls::ServerConfig;
use rustls_pki_types::ServerName;
use tokio::io::BufReader;
use tokio::net::TcpStream;
use tokio::time::timeout;

use super::frame::{FrameError, read_frame, write_frame};
use super::messages::{Request, Response};
use crate::pki::{PkiError, TlsIdentity};
use crate::probe::ProbeStream;

/// How an agent's control endpoint authenticates its clients.
#[derive(Clone)]
pub enum ServerSecurity {
    /// Mutual TLS: clients must present a certificate chaining to the CA.
    Mtls(Arc<ServerConfig>),
    /// Plain TCP, accepted only on a loopback address (`--insecure`).
    Insecure,
}

impl std::fmt::Debug for ServerSecurity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ServerSecurity::Mtls(_) => "Mtls",
            ServerSecurity::Insecure => "Insecure",
        })
    }
}

impl ServerSecurity {
    /// Completes the server side of a new connection.
    pub(crate) async fn accept(
        &self,
        tcp: TcpStream,
        deadline: Duration,
    ) -> Result<Box<dyn ProbeStream>, std::io::Error> {
        match self {
            ServerSecurity::Insecure => Ok(Box::new(tcp)),
            ServerSecurity::Mtls(config) => {
                let acceptor = tokio_rustls::TlsAcceptor::from(config.clone());
                match timeout(deadline, acceptor.accept(tcp)).await {
                    Ok(Ok(tls)) => Ok(Box::new(tls)),
                    Ok(Err(e)) => Err(e),
                    Err(_) => Err(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        "TLS handshake timed out",
                    )),
                }
            }
        }
    }
}

/// How the coordinator connects to agents.
#[derive(Debug, Clone)]
pub enum ClientSecurity {
    /// Mutual TLS with the coordinator's identity.
    Mtls(TlsIdentity),
    /// Plain TCP, loopback agents only (`--insecure`).
    Insecure,
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
    /// A request got no reply in time.
    #[error("agent {host} at {addr}: no reply to {op} within {after_ms} ms")]
    RequestTimeout {
        /// The agent's host.
        host: String,
        /// Its control endpoint.
        addr: SocketAddr,
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
        /// Its control endpoint.
        addr: SocketAddr,
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
        /// Its control endpoint.
        addr: SocketAddr,
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
        /// Its control endpoint.
        addr: SocketAddr,
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
    addr: SocketAddr,
    io: BufReader<Box<dyn ProbeStream>>,
}

impl std::fmt::Debug for ControlStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ControlStream")
            .field("host", &self.host)
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

/// Opens a control connection to the agent of `host` at `addr`, verifying
/// its certificate against the CA and its plan address `host_ip` or host
/// name. `deadline` bounds connect and handshake each.
pub async fn connect(
    security: &ClientSecurity,
    host: &str,
    host_ip: Option<IpAddr>,
    addr: SocketAddr,
    deadline: Duration,
) -> Result<ControlStream, ControlError> {
    let tcp = match timeout(deadline, TcpStream::connect(addr)).await {
        Err(_) => {
            return Err(ControlError::ConnectTimeout {
                host: host.to_string(),
                addr,
                after_ms: deadline.as_millis(),
            });
        }
        Ok(Err(source)) => {
            return Err(ControlError::Connect {
                host: host.to_string(),
                addr,
                source,
            });
        }
        Ok(Ok(s)) => s,
    };
    let _ = tcp.set_nodelay(true);
    let stream: Box<dyn ProbeStream> = match security {
        ClientSecurity::Insecure => Box::new(tcp),
        ClientSecurity::Mtls(identity) => {
            let config = identity.control_client_config(host, host_ip)?;
            let connector = tokio_rustls::TlsConnector::from(config);
            // The verifier checks the plan's address and host name itself;
            // this name only fills SNI.
            let name = host_ip
                .map(|ip| ServerName::IpAddress(ip.into()))
                .or_else(|| ServerName::try_from(host.to_string()).ok())
                .unwrap_or(ServerName::IpAddress(addr.ip().into()));
            match timeout(deadline, connector.connect(name, tcp)).await {
                Err(_) => {
                    return Err(ControlError::HandshakeTimeout {
                        host: host.to_string(),
                        addr,
                        after_ms: deadline.as_millis(),
                    });
                }
                Ok(Err(source)) => {
                    return Err(ControlError::Handshake {
                        host: host.to_string(),
                        addr,
                        source,
                    });
                }
                Ok(Ok(tls)) => Box::new(tls),
            }
        }
    };
    Ok(ControlStream {
        host: host.to_string(),
        addr,
        io: BufReader::new(stream),
    })
}

impl ControlStream {
    /// The agent's host name.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// Sends a request and waits up to `deadline` for its reply. An
    /// `error` reply becomes [`ControlError::Refused`].
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
                addr: self.addr,
                op,
                after_ms: deadline.as_millis(),
            }),
            Ok(Err(source)) => Err(ControlError::Frame {
                host: self.host.clone(),
                addr: self.addr,
                op,
                source,
            }),
            Ok(Ok(Response::Error(e))) => Err(ControlError::Refused {
                host: self.host.clone(),
                addr: self.addr,
                op,
                message: e.message,
            }),
            Ok(Ok(r)) => Ok(r),
        }
    }

    /// The error for a reply of the wrong kind to `request`.
    pub fn unexpected(&self, request: &Request) -> ControlError {
        ControlError::Unexpected {
            host: self.host.clone(),
            addr: self.addr,
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
    }
}
