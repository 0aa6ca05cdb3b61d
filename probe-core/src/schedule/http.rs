//! The agent's HTTP endpoint: `GET /metrics` and `GET /healthz`, nothing
//! else. Hand-written on tokio because two fixed routes do not justify a web
//! framework in an agent that should idle in a few MiB; every connection is
//! bounded in count (in total and per address), request size and time, and
//! answered once, then closed.

use std::collections::VecDeque;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::timeout;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::metrics::MetricsStore;

/// Limits on what one client may cost the agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpLimits {
    /// Largest request head (request line and headers) read, in bytes.
    pub max_request: usize,
    /// Deadline to receive the request head after connecting: short, since
    /// a scraper sends its request at once and an idle connection only
    /// holds a slot.
    pub header_timeout: Duration,
    /// Deadline to send the reply.
    pub io_timeout: Duration,
    /// Connections held at once (waiting for their request or being
    /// answered). A new connection past it closes the oldest one still
    /// waiting for its request, so idle clients never starve a scrape.
    pub max_connections: usize,
    /// Connections from one address still waiting for their request; a new
    /// one past it closes that address's oldest waiting connection.
    pub max_per_address: usize,
}

impl Default for HttpLimits {
    fn default() -> HttpLimits {
        HttpLimits {
            max_request: 4096,
            header_timeout: Duration::from_secs(2),
            io_timeout: Duration::from_secs(5),
            max_connections: 256,
            max_per_address: 16,
        }
    }
}

/// The Prometheus text exposition's content type.
const METRICS_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Serves `listener` until `cancel` fires, then stops accepting, abandons
/// connections in flight and returns.
///
/// Every connection is accepted at once (a flood waiting in the kernel's
/// backlog would queue a scrape behind it); what bounds the cost is
/// [`Held`]: past a cap, the oldest connection still waiting for its
/// request is closed, so the newest client — a scraper sends its request
/// right after connecting — is always served.
pub(crate) async fn serve(
    listener: TcpListener,
    store: Arc<MetricsStore>,
    limits: HttpLimits,
    cancel: CancellationToken,
) {
    let held = Arc::new(Mutex::new(Held::default()));
    let tracker = TaskTracker::new();
    loop {
        let (stream, peer) = tokio::select! {
            () = cancel.cancelled() => break,
            r = listener.accept() => match r {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of descriptors, or a connection reset before we
                    // took it: keep serving, after a pause that lets
                    // descriptors come back.
                    tracing::warn!("metrics endpoint: accept: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let Some((id, evicted)) = lock(&held).admit(peer.ip(), limits) else {
            // Every held connection is being answered: this one waits for
            // none of them.
            continue;
        };
        let store = store.clone();
        let cancel = cancel.clone();
        let held = held.clone();
        tracker.spawn(async move {
            tokio::select! {
                () = cancel.cancelled() => {}
                () = evicted.cancelled() => {}
                () = handle(stream, &store, limits, || lock(&held).answering(id)) => {}
            }
            lock(&held).remove(id);
        });
    }
    tracker.close();
    tracker.wait().await;
}

fn lock(held: &Mutex<Held>) -> std::sync::MutexGuard<'_, Held> {
    held.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The connections being held, oldest first.
#[derive(Default)]
struct Held {
    next: u64,
    conns: VecDeque<Conn>,
}

struct Conn {
    id: u64,
    ip: IpAddr,
    /// Still waiting for its request head (may be closed to make room).
    waiting: bool,
    close: CancellationToken,
}

impl Held {
    /// Makes room for a connection from `ip` and registers it: closes that
    /// address's oldest waiting connection past the per-address cap, then
    /// the oldest waiting one past the total cap. `None` when every held
    /// connection is being answered.
    fn admit(&mut self, ip: IpAddr, limits: HttpLimits) -> Option<(u64, CancellationToken)> {
        let same = self
            .conns
            .iter()
            .filter(|c| c.waiting && c.ip == ip)
            .count();
        if same >= limits.max_per_address.max(1) {
            self.evict_oldest(|c| c.ip == ip);
        }
        if self.conns.len() >= limits.max_connections.max(1) && !self.evict_oldest(|_| true) {
            return None;
        }
        self.next += 1;
        let close = CancellationToken::new();
        self.conns.push_back(Conn {
            id: self.next,
            ip,
            waiting: true,
            close: close.clone(),
        });
        Some((self.next, close))
    }

    fn evict_oldest(&mut self, pick: impl Fn(&Conn) -> bool) -> bool {
        let Some(i) = self.conns.iter().position(|c| c.waiting && pick(c)) else {
            return false;
        };
        if let Some(c) = self.conns.remove(i) {
            c.close.cancel();
        }
        true
    }

    /// The connection's request arrived: it is answered, never evicted.
    fn answering(&mut self, id: u64) {
        if let Some(c) = self.conns.iter_mut().find(|c| c.id == id) {
            c.waiting = false;
        }
    }

    fn remove(&mut self, id: u64) {
        if let Some(i) = self.conns.iter().position(|c| c.id == id) {
            self.conns.remove(i);
        }
    }
}

/// Answers one request, then closes the connection. `answering` is called
/// once the request head is in.
async fn handle(
    mut stream: TcpStream,
    store: &MetricsStore,
    limits: HttpLimits,
    answering: impl FnOnce(),
) {
    let reply = match timeout(
        limits.header_timeout,
        read_head(&mut stream, limits.max_request),
    )
    .await
    {
        Err(_) => return,
        Ok(Err(_)) => return,
        Ok(Ok(Head::TooLarge)) => Reply::text(
            431,
            "Request Header Fields Too Large",
            "request too large\n",
        ),
        Ok(Ok(Head::Complete(head))) => route(&head, store),
    };
    answering();
    let _ = timeout(limits.io_timeout, async {
        stream.write_all(&reply.head()).await?;
        stream.write_all(&reply.body).await?;
        stream.shutdown().await
    })
    .await;
}

enum Head {
    Complete(Vec<u8>),
    TooLarge,
}

/// Reads until the blank line that ends the request head.
async fn read_head(stream: &mut TcpStream, max: usize) -> std::io::Result<Head> {
    let mut buf = Vec::with_capacity(512);
    let mut chunk = [0u8; 512];
    loop {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(end) = find_end(&buf) {
            buf.truncate(end);
            return Ok(Head::Complete(buf));
        }
        if buf.len() >= max {
            return Ok(Head::TooLarge);
        }
    }
}

fn find_end(buf: &[u8]) -> Option<usize> {
    buf.windows(4)
        .position(|w| w == b"\r\n\r\n")
        .or_else(|| buf.windows(2).position(|w| w == b"\n\n"))
}

/// What a person pointing a browser at the metrics address sees.
const INDEX_PAGE: &str = "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>portcall agent</title></head>\n<body><h1>portcall agent</h1>\n<p>Scheduled reachability audit of this host's outgoing paths.</p>\n<ul><li><a href=\"/metrics\">/metrics</a>: Prometheus text exposition</li>\n<li><a href=\"/healthz\">/healthz</a>: liveness</li></ul>\n</body></html>\n";

fn route(head: &[u8], store: &MetricsStore) -> Reply {
    let line_end = head.iter().position(|&b| b == b'\n').unwrap_or(head.len());
    let line = String::from_utf8_lossy(&head[..line_end]);
    let mut parts = line.trim_end().split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Reply::text(400, "Bad Request", "bad request line\n");
    };
    if !version.starts_with("HTTP/1.") {
        return Reply::text(400, "Bad Request", "unsupported HTTP version\n");
    }
    let path = target.split('?').next().unwrap_or(target);
    match (method, path) {
        ("GET", "/metrics") => Reply {
            status: 200,
            reason: "OK",
            content_type: METRICS_CONTENT_TYPE,
            body: Body::Shared(store.rendered()),
            allow: false,
        },
        ("GET", "/healthz") => Reply::text(200, "OK", "ok\n"),
        ("GET", "/") => Reply {
            content_type: "text/html; charset=utf-8",
            ..Reply::text(200, "OK", INDEX_PAGE)
        },
        ("GET", _) => Reply::text(404, "Not Found", "not found: try /metrics or /healthz\n"),
        (_, _) => {
            let mut r = Reply::text(405, "Method Not Allowed", "only GET is served\n");
            r.allow = true;
            r
        }
    }
}

enum Body {
    Static(&'static str),
    Shared(Arc<[u8]>),
}

impl std::ops::Deref for Body {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            Body::Static(s) => s.as_bytes(),
            Body::Shared(b) => b,
        }
    }
}

struct Reply {
    status: u16,
    reason: &'static str,
    content_type: &'static str,
    body: Body,
    allow: bool,
}

impl Reply {
    fn text(status: u16, reason: &'static str, body: &'static str) -> Reply {
        Reply {
            status,
            reason,
            content_type: "text/plain; charset=utf-8",
            body: Body::Static(body),
            allow: false,
        }
    }

    fn head(&self) -> Vec<u8> {
        let allow = if self.allow { "Allow: GET\r\n" } else { "" };
        format!(
            "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\n{allow}Connection: close\r\n\r\n",
            self.status,
            self.reason,
            self.content_type,
            self.body.len()
        )
        .into_bytes()
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    async fn start(
        limits: HttpLimits,
    ) -> (SocketAddr, CancellationToken, tokio::task::JoinHandle<()>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let cancel = CancellationToken::new();
        let store = Arc::new(MetricsStore::new());
        let task = tokio::spawn(serve(listener, store, limits, cancel.clone()));
        (addr, cancel, task)
    }

    async fn exchange(addr: SocketAddr, request: &[u8]) -> String {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(request).await.unwrap();
        let mut out = Vec::new();
        timeout(Duration::from_secs(5), s.read_to_end(&mut out))
            .await
            .expect("the server answers and closes")
            .unwrap();
        String::from_utf8(out).unwrap()
    }

    #[tokio::test]
    async fn routes_metrics_healthz_and_everything_else() {
        let (addr, cancel, task) = start(HttpLimits::default()).await;

        let r = exchange(addr, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").await;
        assert!(r.starts_with("HTTP/1.1 200 OK\r\n"), "{r}");
        assert!(
            r.contains("Content-Type: text/plain; version=0.0.4; charset=utf-8\r\n"),
            "{r}"
        );
        assert!(r.contains("\r\n\r\n# HELP portcall_path_open "), "{r}");
        let (head, body) = r.split_once("\r\n\r\n").unwrap();
        assert!(
            head.contains(&format!("Content-Length: {}\r\n", body.len())),
            "{r}"
        );

        let r = exchange(addr, b"GET /metrics?x=1 HTTP/1.0\n\n").await;
        assert!(r.starts_with("HTTP/1.1 200 OK\r\n"), "{r}");

        let r = exchange(addr, b"GET /healthz HTTP/1.1\r\n\r\n").await;
        assert!(
            r.starts_with("HTTP/1.1 200 OK\r\n") && r.ends_with("\r\n\r\nok\n"),
            "{r}"
        );

        let r = exchange(addr, b"GET / HTTP/1.1\r\n\r\n").await;
        assert!(r.starts_with("HTTP/1.1 200 OK\r\n"), "{r}");
        assert!(
            r.contains("Content-Type: text/html; charset=utf-8\r\n"),
            "{r}"
        );
        assert!(r.contains(r#"<a href="/metrics">"#), "{r}");

        let r = exchange(addr, b"GET /nothing HTTP/1.1\r\n\r\n").await;
        assert!(r.starts_with("HTTP/1.1 404 Not Found\r\n"), "{r}");

        let r = exchange(addr, b"POST /metrics HTTP/1.1\r\nContent-Length: 0\r\n\r\n").await;
        assert!(
            r.starts_with("HTTP/1.1 405 Method Not Allowed\r\n") && r.contains("Allow: GET\r\n"),
            "{r}"
        );

        let r = exchange(addr, b"garbage\r\n\r\n").await;
        assert!(r.starts_with("HTTP/1.1 400 Bad Request\r\n"), "{r}");

        cancel.cancel();
        timeout(Duration::from_secs(1), task)
            .await
            .unwrap()
            .unwrap();
    }

    #[tokio::test]
    async fn oversized_requests_are_refused_and_the_server_keeps_serving() {
        let limits = HttpLimits {
            max_request: 256,
            ..HttpLimits::default()
        };
        let (addr, cancel, task) = start(limits).await;
        let mut big = b"GET /metrics HTTP/1.1\r\n".to_vec();
        big.extend(std::iter::repeat_n(b'a', 1000));
        let r = exchange(addr, &big).await;
        assert!(r.starts_with("HTTP/1.1 431 "), "{r}");
        let r = exchange(addr, b"GET /healthz HTTP/1.1\r\n\r\n").await;
        assert!(r.starts_with("HTTP/1.1 200 OK\r\n"), "{r}");
        cancel.cancel();
        task.await.unwrap();
    }

    #[tokio::test]
    async fn a_silent_client_is_dropped_after_the_header_deadline() {
        let limits = HttpLimits {
            header_timeout: Duration::from_millis(200),
            ..HttpLimits::default()
        };
        let (addr, cancel, task) = start(limits).await;
        let mut idle = TcpStream::connect(addr).await.unwrap();
        let started = tokio::time::Instant::now();
        let mut buf = [0u8; 16];
        let n = timeout(Duration::from_secs(2), idle.read(&mut buf))
            .await
            .expect("closed by the header deadline")
            .unwrap_or(0);
        assert_eq!(n, 0, "the idle client was closed without a reply");
        assert!(started.elapsed() >= Duration::from_millis(150));
        cancel.cancel();
        task.await.unwrap();
    }

    /// Regression: 16 idle connections pushed a scrape from 2 ms to 4 s,
    /// and 100 to 15 s or more (each held one of 16 slots for 5 s).
    #[tokio::test]
    async fn idle_connections_do_not_starve_a_scrape() {
        let (addr, cancel, task) = start(HttpLimits::default()).await;
        let mut idle = Vec::new();
        for _ in 0..200 {
            idle.push(TcpStream::connect(addr).await.unwrap());
        }
        // Let the server take them all before the scrape arrives.
        tokio::time::sleep(Duration::from_millis(100)).await;
        for _ in 0..3 {
            let started = std::time::Instant::now();
            let r = timeout(
                Duration::from_secs(3),
                exchange(addr, b"GET /metrics HTTP/1.1\r\n\r\n"),
            )
            .await
            .expect("a scrape is answered despite 200 idle connections");
            assert!(r.starts_with("HTTP/1.1 200 OK\r\n"), "{r}");
            let took = started.elapsed();
            assert!(took < Duration::from_secs(1), "scrape took {took:?}");
        }
        // Past the per-address cap the oldest idle connections were closed.
        let mut buf = [0u8; 1];
        let n = timeout(Duration::from_secs(1), idle[0].read(&mut buf))
            .await
            .expect("the oldest idle connection was closed")
            .unwrap_or(0);
        assert_eq!(n, 0);
        cancel.cancel();
        task.await.unwrap();
    }

    #[test]
    fn a_connection_being_answered_is_never_evicted() {
        let limits = HttpLimits {
            max_connections: 2,
            max_per_address: 2,
            ..HttpLimits::default()
        };
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        let other: IpAddr = "127.0.0.2".parse().unwrap();
        let mut held = Held::default();
        let (a, a_close) = held.admit(ip, limits).unwrap();
        held.answering(a);
        let (_, b_close) = held.admit(other, limits).unwrap();
        // Full: the waiting one goes, the answered one stays.
        let (_, c_close) = held.admit(other, limits).unwrap();
        assert!(b_close.is_cancelled() && !a_close.is_cancelled());
        // Per address: the same address's oldest waiting one goes first.
        held.remove(a);
        let (_, d_close) = held.admit(ip, limits).unwrap();
        assert!(!c_close.is_cancelled() && !d_close.is_cancelled());
        let _ = held.admit(other, limits).unwrap();
        assert!(c_close.is_cancelled());
    }
}
