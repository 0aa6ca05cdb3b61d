//! The TLS phase of an attempt: the handshake within its deadline, the
//! certificate's facts (recorded whether or not they verify), and the
//! caller's exchange over the encrypted stream.

use std::net::SocketAddr;
use std::time::Duration;

use rustls_pki_types::ServerName;
use tokio::net::TcpStream;
use tokio::time::{Instant, timeout};
use tokio_rustls::client::TlsStream;

use super::attempt::{Try, join_detail};
use super::report::AttemptKind;
use super::shared::Shared;
use crate::probe::classify::error_detail;
use crate::probe::outcome::Observed;
use crate::probe::tls::{handshake_failure_in_words, server_name_for};

impl Shared {
    /// The TLS phase of a connected attempt: the outcome, and how long the
    /// handshake took when it completed.
    pub(super) async fn tls_phase(
        &self,
        t: &Try<'_>,
        local: SocketAddr,
        stream: TcpStream,
    ) -> (AttemptKind, Option<Duration>) {
        let name = server_name_for(t.target, t.addr);
        let started = Instant::now();
        match self.tls_handshake(name.clone(), stream).await {
            Ok(mut tls) => {
                let took = started.elapsed();
                (
                    self.after_handshake(t, local, &mut tls, &name).await,
                    Some(took),
                )
            }
            Err(kind) => (kind, None),
        }
    }

    /// The handshake within `tls_timeout`; a failure is the attempt's
    /// outcome.
    async fn tls_handshake(
        &self,
        name: ServerName<'static>,
        stream: TcpStream,
    ) -> Result<TlsStream<TcpStream>, AttemptKind> {
        let config = &self.config;
        let handshake = self.tls.connector().connect(name, stream);
        match timeout(config.tls_timeout, handshake).await {
            Err(_elapsed) => {
                let detail = format!(
                    "no TLS answer within {} ms (the port does not seem to speak TLS)",
                    config.tls_timeout.as_millis()
                );
                Err(AttemptKind::Final {
                    observed: Observed::TlsError,
                    detail,
                    errno: None,
                    cert: None,
                    stalled: true,
                    path_mtu: false,
                    unanswered: false,
                })
            }
            Ok(Err(e)) => {
                let reason = match e.get_ref() {
                    Some(inner) => handshake_failure_in_words(inner),
                    None => error_detail(&e),
                };
                // Closed before a byte of the handshake came back, where a
                // canary should answer: shed under load, not a TLS failure.
                let closed = matches!(
                    e.kind(),
                    std::io::ErrorKind::UnexpectedEof
                        | std::io::ErrorKind::ConnectionReset
                        | std::io::ErrorKind::ConnectionAborted
                        | std::io::ErrorKind::BrokenPipe
                );
                if closed && self.exchange.is_some() {
                    return Err(AttemptKind::Shed {
                        observed: Observed::TlsError,
                        detail: format!(
                            "TLS handshake failed: {reason} (closed before answering; the canary may be shedding load)"
                        ),
                        cert: None,
                    });
                }
                Err(AttemptKind::Final {
                    observed: Observed::TlsError,
                    detail: format!("TLS handshake failed: {reason}"),
                    errno: None,
                    cert: None,
                    stalled: false,
                    path_mtu: false,
                    unanswered: false,
                })
            }
            Ok(Ok(tls)) => Ok(tls),
        }
    }

    /// What the certificate and the caller's exchange say once the
    /// handshake completed.
    async fn after_handshake(
        &self,
        t: &Try<'_>,
        local: SocketAddr,
        tls: &mut TlsStream<TcpStream>,
        name: &ServerName<'static>,
    ) -> AttemptKind {
        let config = &self.config;
        let chain = tls.get_ref().1.peer_certificates().unwrap_or(&[]);
        let facts = self.tls.facts(chain, name);
        if config.tls.require_verified && !facts.verified {
            let why = facts.verify_error.clone().unwrap_or_default();
            return AttemptKind::Final {
                observed: Observed::TlsError,
                detail: format!("certificate not verified: {why}"),
                errno: None,
                cert: Some(Box::new(facts)),
                stalled: false,
                path_mtu: false,
                unanswered: false,
            };
        }
        let (observed, mut detail, unanswered) = match self.run_exchange(t, local, tls).await {
            Ok(r) => r,
            Err(detail) => {
                return AttemptKind::Shed {
                    observed: Observed::WrongHost,
                    detail,
                    cert: Some(Box::new(facts)),
                };
            }
        };
        if observed == Observed::Open && !facts.verified {
            let why = facts.verify_error.as_deref().unwrap_or("");
            detail = join_detail(format!("certificate not verified: {why}"), detail);
        }
        AttemptKind::Final {
            observed,
            detail,
            errno: None,
            cert: Some(Box::new(facts)),
            stalled: false,
            path_mtu: false,
            unanswered,
        }
    }
}
