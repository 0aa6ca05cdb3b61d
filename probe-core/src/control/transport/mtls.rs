//! The control channel over TCP: mutual TLS 1.3 in normal use, plain TCP
//! only on loopback with `--insecure`; the agent's accepting side and the
//! coordinator's connecting side, with a deadline on connect and handshake.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use rustls::ServerConfig;
use rustls_pki_types::ServerName;
use tokio::net::TcpStream;
use tokio::time::timeout;

use super::{BoxFuture, ControlError, ControlStream, Dial, SocketIo, Transport};
use crate::pki::TlsIdentity;
use crate::plan::Address;
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

/// How the coordinator connects to agents: the mutual-TLS transport.
#[derive(Debug, Clone)]
pub enum ClientSecurity {
    /// Mutual TLS with the coordinator's identity.
    Mtls(TlsIdentity),
    /// Plain TCP, loopback agents only (`--insecure`).
    Insecure,
}

impl Transport for ClientSecurity {
    fn open(&self, dial: Dial) -> BoxFuture<Result<ControlStream, ControlError>> {
        let security = self.clone();
        Box::pin(async move {
            let addr = match dial.endpoint {
                Some(a) => a,
                None => resolve(&dial.address, dial.control_port, dial.connect_timeout)
                    .await
                    .map_err(|message| ControlError::Resolve {
                        host: dial.host.clone(),
                        message,
                    })?,
            };
            let ip = match &dial.address {
                Address::Ip(ip) => Some(*ip),
                Address::Dns(_) => None,
            };
            connect_overlapping(&security, &dial.host, ip, addr, dial.connect_timeout).await
        })
    }
}

/// Whole connections (TCP and TLS) [`connect_retrying`] may have in
/// flight at once.
const CONNECTIONS_AT_ONCE: usize = 3;

/// How long a connection may go unfinished before another starts beside
/// it.
const CONNECTION_STAGGER: Duration = Duration::from_millis(1000);

/// [`connect_retrying`], with a fresh one started beside it every
/// [`CONNECTION_STAGGER`] while none has finished (at most
/// [`CONNECTIONS_AT_ONCE`]): under heavy loss a TLS handshake whose
/// flights were lost waits out the kernel's backed-off retransmissions,
/// while a fresh connection starts with short timers; the first to
/// connect wins and the others are dropped. An error that retrying cannot
/// mend (no agent, certificate refused) ends it at once.
async fn connect_overlapping(
    security: &ClientSecurity,
    host: &str,
    ip: Option<IpAddr>,
    addr: SocketAddr,
    connect_timeout: Duration,
) -> Result<ControlStream, ControlError> {
    let mut set = tokio::task::JoinSet::new();
    let start = |set: &mut tokio::task::JoinSet<_>| {
        let (security, host) = (security.clone(), host.to_string());
        set.spawn(
            async move { connect_retrying(&security, &host, ip, addr, connect_timeout).await },
        );
    };
    start(&mut set);
    let mut started = 1;
    let mut last = None;
    loop {
        let more = started < CONNECTIONS_AT_ONCE;
        tokio::select! {
            done = set.join_next() => match done {
                Some(Ok(Ok(c))) => return Ok(c),
                Some(Ok(Err(e))) if !retryable(&e) => return Err(e),
                Some(Ok(Err(e))) => last = Some(e),
                Some(Err(_)) => {}
                None => {
                    return Err(last.unwrap_or_else(|| ControlError::ConnectTimeout {
                        host: host.to_string(),
                        addr,
                        after_ms: connect_timeout.as_millis(),
                    }));
                }
            },
            () = tokio::time::sleep(CONNECTION_STAGGER), if more => {
                start(&mut set);
                started += 1;
            }
        }
    }
}

/// Whether a failed control connect may succeed when tried again.
fn retryable(err: &ControlError) -> bool {
    match err {
        ControlError::Connect { source, .. } => {
            source.kind() != std::io::ErrorKind::ConnectionRefused
        }
        ControlError::ConnectTimeout { .. }
        | ControlError::HandshakeTimeout { .. }
        | ControlError::Handshake { .. } => true,
        _ => false,
    }
}

/// Connects to an agent, retrying within the connect phase (twice the
/// connect timeout) when the connection was cut or the handshake failed or
/// stalled: an agent shedding a flood of strangers evicts unauthenticated
/// connections, ours among them at worst, and a retry gets through. A
/// refused connection (no agent) is not retried.
async fn connect_retrying(
    security: &ClientSecurity,
    host: &str,
    ip: Option<IpAddr>,
    addr: SocketAddr,
    connect_timeout: Duration,
) -> Result<ControlStream, ControlError> {
    let give_up = tokio::time::Instant::now() + connect_timeout * 2;
    let mut backoff = Duration::from_millis(50);
    loop {
        let left = give_up.saturating_duration_since(tokio::time::Instant::now());
        let deadline = connect_timeout.min(left.max(Duration::from_millis(100)));
        let err = match connect(security, host, ip, addr, deadline).await {
            Ok(c) => return Ok(c),
            Err(e) => e,
        };
        if !retryable(&err) || tokio::time::Instant::now() + backoff >= give_up {
            return Err(err);
        }
        tracing::debug!(%host, error = %err, "connect failed; retrying");
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_millis(800));
    }
}

/// How long a control connect waits for its SYN's answer before it sends
/// another connect's SYN beside it.
const CONNECT_STAGGER: Duration = Duration::from_millis(300);

/// Connects attempts at most in flight together.
const CONNECT_AT_ONCE: usize = 8;

/// A TCP connect that survives loss: the kernel resends a lost SYN only
/// after 1 s, then 3 s, so one connect under 30% loss each way misses a
/// 3 s deadline about once in four; a fresh connect every
/// [`CONNECT_STAGGER`] (at most [`CONNECT_AT_ONCE`]) sends a new SYN
/// instead, and the first to connect wins (the others are dropped). On a
/// clean network the first answers at once and no second SYN is sent. A
/// refusal (no agent) ends it at once.
async fn staggered_connect(addr: SocketAddr) -> std::io::Result<TcpStream> {
    let mut set = tokio::task::JoinSet::new();
    set.spawn(TcpStream::connect(addr));
    let mut last_err = None;
    loop {
        let more = set.len() < CONNECT_AT_ONCE;
        tokio::select! {
            done = set.join_next() => match done {
                Some(Ok(Ok(stream))) => return Ok(stream),
                Some(Ok(Err(e))) if e.kind() == std::io::ErrorKind::ConnectionRefused => return Err(e),
                Some(Ok(Err(e))) => last_err = Some(e),
                Some(Err(join)) => last_err = Some(std::io::Error::other(join)),
                None => {
                    return Err(last_err.unwrap_or_else(|| {
                        std::io::Error::new(std::io::ErrorKind::TimedOut, "no connect left")
                    }));
                }
            },
            () = tokio::time::sleep(CONNECT_STAGGER), if more => {
                set.spawn(TcpStream::connect(addr));
            }
        }
    }
}

async fn resolve(address: &Address, port: u16, deadline: Duration) -> Result<SocketAddr, String> {
    crate::probe::resolve::resolve_address(
        address,
        port,
        deadline,
        &crate::probe::resolve::FamilyPreference::Any,
    )
    .await
    .map_err(|e| e.to_string())
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
    let tcp = match timeout(deadline, staggered_connect(addr)).await {
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
                    if let Some(why) = crate::pki::refused_by_agent(&source, identity) {
                        return Err(ControlError::CertificateRefused {
                            host: host.to_string(),
                            addr,
                            why,
                        });
                    }
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
    Ok(ControlStream::new(
        host,
        addr.to_string(),
        Box::new(SocketIo(stream)),
    ))
}
