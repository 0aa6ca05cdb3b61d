//! Bounded reads and the polite close every protocol probe shares.

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::Instant;

use crate::probe::exchange::ProbeStream;

/// How a read of a server's answer ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum End {
    /// The answer is complete by its own framing.
    Complete,
    /// The server closed (or reset) the connection first.
    Closed,
    /// Nothing more within the deadline.
    Silent,
    /// The size cap was reached.
    Full,
}

/// Reads until `complete` says the answer is whole, the server closes, the
/// deadline passes or `max` bytes came.
pub(super) async fn read_answer(
    stream: &mut dyn ProbeStream,
    deadline: Instant,
    max: usize,
    complete: impl Fn(&[u8]) -> bool,
) -> (Vec<u8>, End) {
    let mut buf = Vec::with_capacity(256);
    let mut chunk = [0u8; 2048];
    loop {
        if complete(&buf) {
            return (buf, End::Complete);
        }
        if buf.len() >= max {
            return (buf, End::Full);
        }
        match tokio::time::timeout_at(deadline, stream.read(&mut chunk)).await {
            Err(_) => return (buf, End::Silent),
            Ok(Ok(0) | Err(_)) => return (buf, End::Closed),
            Ok(Ok(n)) => buf.extend_from_slice(&chunk[..n.min(max - buf.len())]),
        }
    }
}

/// Sends the request; false when the server had already closed.
pub(super) async fn send(stream: &mut dyn ProbeStream, deadline: Instant, bytes: &[u8]) -> bool {
    matches!(
        tokio::time::timeout_at(deadline, async {
            stream.write_all(bytes).await?;
            stream.flush().await
        })
        .await,
        Ok(Ok(()))
    )
}

/// Leaves the way a client that is done does: our FIN, then the server's
/// (bounded in time and bytes), so the server sees an orderly end of file
/// rather than the reset the engine's linger would send.
pub(super) async fn leave(stream: &mut dyn ProbeStream, deadline: Instant) {
    let _ = tokio::time::timeout_at(deadline, stream.shutdown()).await;
    let _ = tokio::time::timeout_at(deadline, async {
        let mut sink = [0u8; 1024];
        let mut left = 16 * 1024usize;
        while left > 0 {
            match stream.read(&mut sink).await {
                Ok(0) | Err(_) => break,
                Ok(n) => left = left.saturating_sub(n),
            }
        }
    })
    .await;
}

/// The first bytes of an answer, printable, for a detail.
pub(super) fn printable(bytes: &[u8], max: usize) -> String {
    bytes
        .iter()
        .take(max)
        .map(|&b| {
            if b.is_ascii_graphic() || b == b' ' {
                char::from(b).to_string()
            } else {
                format!("\\x{b:02x}")
            }
        })
        .collect()
}

/// The answer's text, control characters dropped, at most `max` chars.
pub(super) fn text(bytes: &[u8], max: usize) -> String {
    String::from_utf8_lossy(bytes)
        .chars()
        .filter(|c| !c.is_control())
        .take(max)
        .collect()
}
