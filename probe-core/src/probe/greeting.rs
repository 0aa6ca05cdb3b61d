//! Services that speak first: where a live service greets every client
//! (MySQL and MariaDB send their version before anything else), a probe
//! reads the greeting as evidence that the real service answered, not just
//! some listener, and then closes the way a client that changed its mind
//! does (a FIN, then waiting for the server's), instead of the reset the
//! engine uses elsewhere, which the server logs as an aborted connection.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::exchange::{Exchange, ExchangeContext, ExchangeFuture, ExchangeOutcome, ProbeStream};

/// A protocol whose server speaks first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Greeting {
    /// The MySQL/MariaDB initial handshake packet.
    Mysql,
}

impl Greeting {
    /// The greeting a planned port name announces (`mysql`, the port of the
    /// catalog's `mysql` and `mariadb` roles), if any.
    pub fn for_service(service: &str) -> Option<Greeting> {
        match service {
            "mysql" | "mariadb" => Some(Greeting::Mysql),
            _ => None,
        }
    }

    /// The greeting a well-known port announces, for agentless probes that
    /// have only a number.
    pub fn for_port(port: u16) -> Option<Greeting> {
        match port {
            3306 => Some(Greeting::Mysql),
            _ => None,
        }
    }
}

/// The longest greeting read: a MySQL handshake packet is about 100 bytes.
const MAX_GREETING: usize = 1024;

/// Reads the greeting, then closes politely, all within `wait`: our FIN first,
/// then the server's, so the server sees a client that left before
/// authenticating rather than a broken connection. Returns the greeting in
/// words, `None` when nothing recognisable came.
pub async fn read_and_close(
    greeting: Greeting,
    stream: &mut dyn ProbeStream,
    wait: Duration,
) -> Option<String> {
    // One deadline for reading and closing together, so the whole exchange
    // stays within `wait` (the engine turns an exchange that overruns its
    // own deadline into `wrong-host`).
    let deadline = tokio::time::Instant::now() + wait;
    let mut buf = Vec::with_capacity(128);
    let read = tokio::time::timeout_at(deadline, async {
        let mut chunk = [0u8; 256];
        loop {
            if complete(greeting, &buf) || buf.len() >= MAX_GREETING {
                break;
            }
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => buf.extend_from_slice(&chunk[..n.min(MAX_GREETING - buf.len())]),
            }
        }
    })
    .await;
    let banner = match greeting {
        Greeting::Mysql => mysql_banner(&buf),
    };
    if read.is_ok() {
        // Our FIN, then the server's close (bounded): the server reads end
        // of file where it waits for the login packet.
        let _ = tokio::time::timeout_at(deadline, stream.shutdown()).await;
        let _ = tokio::time::timeout_at(deadline, async {
            let mut sink = [0u8; 256];
            let mut left = 4096usize;
            while left > 0 {
                match stream.read(&mut sink).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => left = left.saturating_sub(n),
                }
            }
        })
        .await;
    }
    banner
}

fn complete(greeting: Greeting, buf: &[u8]) -> bool {
    match greeting {
        Greeting::Mysql => {
            buf.len() >= 4 && {
                let len =
                    usize::from(buf[0]) | usize::from(buf[1]) << 8 | usize::from(buf[2]) << 16;
                buf.len() >= 4 + len
            }
        }
    }
}

/// `MySQL 10.11.6-MariaDB-0+deb12u1` from an initial handshake packet
/// (protocol 10 or 9), or the server's refusal (`MySQL error 1130: Host
/// ... is not allowed to connect`), which is just as much a MySQL server.
pub fn mysql_banner(buf: &[u8]) -> Option<String> {
    let payload = buf.get(4..)?;
    let len = usize::from(buf[0]) | usize::from(buf[1]) << 8 | usize::from(buf[2]) << 16;
    let payload = &payload[..len.min(payload.len())];
    let text = |b: &[u8]| -> String {
        String::from_utf8_lossy(b)
            .chars()
            .filter(|c| !c.is_control())
            .take(120)
            .collect()
    };
    match payload.first()? {
        9 | 10 => {
            let rest = &payload[1..];
            let end = rest.iter().position(|&b| b == 0)?;
            let version = text(&rest[..end]);
            (!version.is_empty()).then(|| format!("MySQL {version}"))
        }
        0xff if payload.len() >= 3 => {
            let code = u16::from_le_bytes([payload[1], payload[2]]);
            Some(format!("MySQL error {code}: {}", text(&payload[3..])))
        }
        _ => None,
    }
}

/// An [`Exchange`] that reads the greeting of targets whose service speaks
/// first and hands every other target to `inner` (the agents' nonce
/// exchange), keeping each greeting as the path's banner. It never turns a
/// probe into `wrong-host`: a service that says nothing is still open.
pub struct GreetingExchange {
    greetings: Mutex<Vec<Option<Greeting>>>,
    wait: Duration,
    inner: Option<Arc<dyn Exchange>>,
    banners: Mutex<Vec<Option<String>>>,
}

impl GreetingExchange {
    /// One optional greeting per target, in sweep order; `wait` bounds the
    /// read (keep it below the engine's exchange timeout).
    pub fn new(
        greetings: Vec<Option<Greeting>>,
        wait: Duration,
        inner: Option<Arc<dyn Exchange>>,
    ) -> GreetingExchange {
        let banners = Mutex::new(vec![None; greetings.len()]);
        GreetingExchange {
            greetings: Mutex::new(greetings),
            wait,
            inner,
            banners,
        }
    }

    /// New greetings for the next sweep (schedule mode reuses one prober
    /// for every round); forgets the banners of the last.
    pub fn set_greetings(&self, greetings: Vec<Option<Greeting>>) {
        let n = greetings.len();
        *self.greetings.lock().unwrap_or_else(|e| e.into_inner()) = greetings;
        *self.banners.lock().unwrap_or_else(|e| e.into_inner()) = vec![None; n];
    }

    /// The greeting target `i` answered with, if any.
    pub fn banner(&self, i: usize) -> Option<String> {
        let b = self.banners.lock().unwrap_or_else(|e| e.into_inner());
        b.get(i).cloned().flatten()
    }
}

impl Exchange for GreetingExchange {
    /// A service that greets speaks first; every other target is the
    /// inner exchange's.
    fn speaks_first(&self, index: usize) -> bool {
        let greets = self
            .greetings
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(index)
            .is_some_and(Option::is_some);
        !greets && self.inner.as_ref().is_some_and(|i| i.speaks_first(index))
    }

    fn exchange<'a>(
        &'a self,
        context: ExchangeContext<'a>,
        stream: &'a mut dyn ProbeStream,
    ) -> ExchangeFuture<'a> {
        Box::pin(async move {
            let greeting = self
                .greetings
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get(context.index)
                .copied()
                .flatten();
            match greeting {
                Some(g) => {
                    let banner = read_and_close(g, stream, self.wait).await;
                    let mut b = self.banners.lock().unwrap_or_else(|e| e.into_inner());
                    if let Some(slot) = b.get_mut(context.index) {
                        slot.clone_from(&banner);
                    }
                    ExchangeOutcome::Confirmed {
                        detail: banner.map_or_else(String::new, |b| format!("greeted: {b}")),
                    }
                }
                None => match &self.inner {
                    Some(inner) => inner.exchange(context, stream).await,
                    None => ExchangeOutcome::Confirmed {
                        detail: String::new(),
                    },
                },
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn packet(payload: &[u8]) -> Vec<u8> {
        let n = payload.len();
        let mut p = vec![n as u8, (n >> 8) as u8, (n >> 16) as u8, 0];
        p.extend_from_slice(payload);
        p
    }

    /// A greeting service must not wait for our delayed ACK, so only the
    /// targets the inner (nonce) exchange talks to speak first.
    #[test]
    fn only_targets_without_a_greeting_speak_first() {
        let slot = || Some(("00ff".to_string(), "db".to_string()));
        let nonces =
            crate::agent::canary::NonceExchange::new("ab".into(), vec![slot(), slot(), None]);
        let g = GreetingExchange::new(
            vec![Some(Greeting::Mysql), None, None],
            Duration::from_millis(100),
            Some(Arc::new(nonces)),
        );
        assert!(!g.speaks_first(0), "a MySQL greeting is read first");
        assert!(g.speaks_first(1), "a nonce line is sent first");
        assert!(!g.speaks_first(2), "probed live: nothing is sent");
        assert!(!g.speaks_first(3), "no such target");
        let alone = GreetingExchange::new(vec![None], Duration::from_millis(100), None);
        assert!(!alone.speaks_first(0));
    }

    #[test]
    fn mysql_greetings_and_refusals_are_read_and_garbage_is_not() {
        let mut hello = vec![10u8];
        hello.extend_from_slice(b"10.11.6-MariaDB-0+deb12u1\0");
        hello.extend_from_slice(&[1, 0, 0, 0, b'a', b'b']);
        assert_eq!(
            mysql_banner(&packet(&hello)).as_deref(),
            Some("MySQL 10.11.6-MariaDB-0+deb12u1")
        );
        let mut refusal = vec![0xff, 0x6a, 0x04];
        refusal.extend_from_slice(b"Host '198.18.0.9' is not allowed to connect");
        assert_eq!(
            mysql_banner(&packet(&refusal)).as_deref(),
            Some("MySQL error 1130: Host '198.18.0.9' is not allowed to connect")
        );
        assert_eq!(mysql_banner(b"SSH-2.0-OpenSSH_9.6\r\n"), None);
        assert_eq!(mysql_banner(&packet(&[10])), None);
        assert_eq!(mysql_banner(&[]), None);
        assert_eq!(mysql_banner(&packet(b"\x0a\0")), None);
    }

    /// A fake MySQL server greets, then tells how the client left: `Ok(())`
    /// for an orderly close (end of file), `Err` for a reset.
    #[tokio::test]
    async fn the_greeting_is_recorded_and_the_client_leaves_with_a_fin() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut hello = vec![10u8];
            hello.extend_from_slice(b"8.0.36\0");
            hello.extend_from_slice(&[0u8; 40]);
            s.write_all(&packet(&hello)).await.unwrap();
            let mut buf = [0u8; 64];
            let got = s.read(&mut buf).await;
            drop(s);
            got.map(|n| n == 0)
        });
        let mut client = tokio::net::TcpStream::connect(addr).await.unwrap();
        // As the engine sets it: a drop would reset the connection.
        socket2::SockRef::from(&client)
            .set_linger(Some(Duration::ZERO))
            .unwrap();
        let banner = read_and_close(Greeting::Mysql, &mut client, Duration::from_secs(2)).await;
        assert_eq!(banner.as_deref(), Some("MySQL 8.0.36"));
        drop(client);
        let seen = server.await.unwrap();
        assert!(
            matches!(seen, Ok(true)),
            "the server saw {seen:?}, not an orderly end of file"
        );
    }

    #[tokio::test]
    async fn a_silent_service_is_still_confirmed_within_the_wait() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let _held = tokio::spawn(async move {
            let (s, _) = listener.accept().await.unwrap();
            tokio::time::sleep(Duration::from_secs(5)).await;
            drop(s);
        });
        let mut client = tokio::net::TcpStream::connect(addr).await.unwrap();
        let started = std::time::Instant::now();
        let banner = read_and_close(Greeting::Mysql, &mut client, Duration::from_millis(200)).await;
        assert_eq!(banner, None);
        assert!(started.elapsed() < Duration::from_secs(2));
    }
}
