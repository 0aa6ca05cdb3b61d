//! Framing of control messages: one compact JSON object per line, read with
//! a hard byte cap so that a peer can never make the other side buffer more
//! than it agreed to.

use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncWrite, AsyncWriteExt};

/// Why a frame could not be read or written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FrameError {
    /// The peer closed the stream between frames.
    #[error("connection closed")]
    Closed,
    /// The peer sent more than the cap without ending the line. The stream
    /// cannot be resynchronised after this.
    #[error("frame exceeds {limit} bytes")]
    TooLarge {
        /// The cap.
        limit: usize,
    },
    /// The stream ended in the middle of a frame.
    #[error("connection closed in the middle of a frame")]
    Truncated,
    /// The line is not the JSON message expected. The stream is still in
    /// sync: the next line is the next frame.
    #[error("malformed frame")]
    Malformed(#[source] serde_json::Error),
    /// Reading or writing failed.
    #[error("control connection")]
    Io(#[source] std::io::Error),
}

/// Reads one frame of at most `limit` bytes (newline excluded) and decodes
/// it.
pub async fn read_frame<T, R>(reader: &mut R, limit: usize) -> Result<T, FrameError>
where
    T: DeserializeOwned,
    R: AsyncBufRead + Unpin + ?Sized,
{
    let mut line = Vec::new();
    loop {
        let buf = reader.fill_buf().await.map_err(FrameError::Io)?;
        if buf.is_empty() {
            return Err(if line.is_empty() {
                FrameError::Closed
            } else {
                FrameError::Truncated
            });
        }
        let (take, done) = match buf.iter().position(|&b| b == b'\n') {
            Some(i) => (i + 1, true),
            None => (buf.len(), false),
        };
        let body = if done { take - 1 } else { take };
        if line.len() + body > limit {
            return Err(FrameError::TooLarge { limit });
        }
        line.extend_from_slice(&buf[..body]);
        reader.consume(take);
        if done {
            break;
        }
    }
    serde_json::from_slice(&line).map_err(FrameError::Malformed)
}

/// Encodes and writes one frame, then flushes.
pub async fn write_frame<T, W>(writer: &mut W, message: &T) -> Result<(), FrameError>
where
    T: Serialize,
    W: AsyncWrite + Unpin + ?Sized,
{
    // Compact JSON never contains a raw newline, so the line is the frame.
    let mut bytes = serde_json::to_vec(message).map_err(FrameError::Malformed)?;
    bytes.push(b'\n');
    writer.write_all(&bytes).await.map_err(FrameError::Io)?;
    writer.flush().await.map_err(FrameError::Io)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::BufReader;

    #[tokio::test]
    async fn frames_round_trip_and_caps_hold() {
        let mut out = Vec::new();
        write_frame(&mut out, &serde_json::json!({"op": "hello"}))
            .await
            .unwrap();
        write_frame(&mut out, &serde_json::json!({"x": "y".repeat(100)}))
            .await
            .unwrap();
        out.extend_from_slice(b"not json\n{\"partial\":");
        let mut r = BufReader::with_capacity(16, &out[..]);
        let v: serde_json::Value = read_frame(&mut r, 1000).await.unwrap();
        assert_eq!(v["op"], "hello");
        let e = read_frame::<serde_json::Value, _>(&mut r, 50)
            .await
            .unwrap_err();
        assert!(matches!(e, FrameError::TooLarge { limit: 50 }), "{e}");
        let mut r = BufReader::with_capacity(16, &out[..]);
        let _: serde_json::Value = read_frame(&mut r, 1000).await.unwrap();
        let _: serde_json::Value = read_frame(&mut r, 1000).await.unwrap();
        let e = read_frame::<serde_json::Value, _>(&mut r, 1000)
            .await
            .unwrap_err();
        assert!(matches!(e, FrameError::Malformed(_)), "{e}");
        let e = read_frame::<serde_json::Value, _>(&mut r, 1000)
            .await
            .unwrap_err();
        assert!(matches!(e, FrameError::Truncated), "{e}");
        let e = read_frame::<serde_json::Value, _>(&mut r, 1000)
            .await
            .unwrap_err();
        assert!(matches!(e, FrameError::Closed), "{e}");
    }
}
