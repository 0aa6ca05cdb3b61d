//! The extension point where a caller talks over a freshly connected probe
//! stream (after TLS on `tls` targets) before it is closed: the agents'
//! canary nonce exchange plugs in here, so that the engine keeps owning
//! sockets, deadlines and classification.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;

use tokio::io::{AsyncRead, AsyncWrite};

use super::target::Target;

/// A connected probe stream: plain TCP, or TLS over TCP.
pub trait ProbeStream: AsyncRead + AsyncWrite + Unpin + Send {}

impl<T: AsyncRead + AsyncWrite + Unpin + Send> ProbeStream for T {}

/// What the exchange is told about the connection it runs on.
#[derive(Debug, Clone, Copy)]
pub struct ExchangeContext<'a> {
    /// Position of the target in the list given to
    /// [`super::Prober::sweep`], so the caller can find its own per-target
    /// data (e.g. the nonce it planned for this path).
    pub index: usize,
    /// The target probed.
    pub target: &'a Target,
    /// The address connected to.
    pub peer: SocketAddr,
    /// The local address the connection left from.
    pub local: SocketAddr,
}

/// The verdict of an exchange.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExchangeOutcome {
    /// The other end answered as expected (or the exchange does not apply to
    /// this target): the probe stays `open`. A non-empty detail is reported.
    Confirmed {
        /// Appended to the probe's detail when non-empty.
        detail: String,
    },
    /// Connected, but not to the party expected: the probe becomes
    /// `wrong-host`.
    WrongHost {
        /// What was (or was not) seen, e.g. "answered by gw-2".
        detail: String,
    },
    /// Connected to the planned host, but the port answered as another
    /// service than the plan's (or not at all where its protocol must
    /// answer): the probe becomes `wrong-service`.
    WrongService {
        /// What answered instead, e.g. "http 200 (nginx) answered instead".
        detail: String,
    },
    /// The connection closed before the other end sent a single byte (a
    /// canary shedding load closes unanswered): nobody answered, so this
    /// is never `wrong-host`. The engine retries; when every attempt ends
    /// so, the result is marked [`super::ProbeResult::shed`].
    Unanswered {
        /// What happened.
        detail: String,
    },
}

/// Boxed future returned by [`Exchange::exchange`].
pub type ExchangeFuture<'a> = Pin<Box<dyn Future<Output = ExchangeOutcome> + Send + 'a>>;

/// Something to do on every connected probe stream before it is closed.
///
/// The engine bounds the whole exchange by
/// [`super::ProbeConfig::exchange_timeout`]; when it runs out the probe is
/// `wrong-host` ("no answer"). Implementations should also bound the bytes
/// they read.
pub trait Exchange: Send + Sync {
    /// Whether the exchange of target `index` starts by sending (the
    /// canaries' nonce line) rather than by reading (a service's
    /// greeting). When it does, the engine lets the handshake's last ACK
    /// ride on those first bytes instead of sending it alone; a greeting
    /// must not wait for a delayed ACK, so the default is `false`.
    fn speaks_first(&self, _index: usize) -> bool {
        false
    }

    /// Runs the exchange on `stream`.
    fn exchange<'a>(
        &'a self,
        context: ExchangeContext<'a>,
        stream: &'a mut dyn ProbeStream,
    ) -> ExchangeFuture<'a>;
}
