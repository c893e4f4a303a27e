//! Statements sent to another node's ClickHouse HTTP interface, as a
//! Distributed table sends its shards' inserts and reads (ClickHouse sends
//! them over its native protocol; our nodes speak HTTP to clients and to
//! each other alike). HTTP/1.0 with the body read to the end: small, and
//! no chunked decoding to get wrong.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A failed remote statement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RemoteError {
    /// The node could not be reached (nothing was sent or it never answered).
    Unreachable(String),
    /// The node answered with an error: its ClickHouse code and text.
    Failed { code: u32, message: String },
}

impl std::fmt::Display for RemoteError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RemoteError::Unreachable(m) => write!(f, "{m}"),
            RemoteError::Failed { message, .. } => write!(f, "{message}"),
        }
    }
}

fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// POSTs `body` to `addr` (`host:port`) with URL parameters `params`
/// (`query`, settings) and returns the response body.
pub async fn post(addr: &str, params: &[(&str, &str)], body: &[u8], timeout: Duration) -> Result<Vec<u8>, RemoteError> {
    let query: Vec<String> =
        params.iter().map(|(k, v)| format!("{}={}", percent_encode(k), percent_encode(v))).collect();
    let head = format!(
        "POST /?{} HTTP/1.0\r\nHost: {addr}\r\nContent-Length: {}\r\nContent-Type: application/octet-stream\r\n\r\n",
        query.join("&"),
        body.len()
    );
    let exchange = async {
        let mut s = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(|e| RemoteError::Unreachable(format!("cannot connect to {addr}: {e}")))?;
        let _ = s.set_nodelay(true);
        let sent = async {
            s.write_all(head.as_bytes()).await?;
            s.write_all(body).await?;
            s.flush().await
        };
        sent.await.map_err(|e| RemoteError::Unreachable(format!("sending to {addr}: {e}")))?;
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).await.map_err(|e| RemoteError::Unreachable(format!("reading from {addr}: {e}")))?;
        Ok(buf)
    };
    let buf = tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| RemoteError::Unreachable(format!("{addr} did not answer within {timeout:?}")))??;
    let split = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| RemoteError::Unreachable(format!("{addr} sent no complete HTTP response")))?;
    let head = String::from_utf8_lossy(&buf[..split]).to_string();
    let body = buf[split + 4..].to_vec();
    let status: u16 = head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    if status == 200 {
        return Ok(body);
    }
    let code = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim().eq_ignore_ascii_case("X-ClickHouse-Exception-Code").then(|| v.trim().parse().ok())?
        })
        .unwrap_or(1000);
    Err(RemoteError::Failed { code, message: String::from_utf8_lossy(&body).trim().to_string() })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_text_is_percent_encoded() {
        assert_eq!(percent_encode("SELECT a, 'b' FROM t"), "SELECT%20a%2C%20%27b%27%20FROM%20t");
        assert_eq!(percent_encode("ü"), "%C3%BC");
    }

    #[tokio::test]
    async fn a_node_that_is_not_there_is_unreachable() {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let e = post(&format!("127.0.0.1:{port}"), &[("query", "SELECT 1")], b"", Duration::from_secs(2)).await;
        assert!(matches!(e, Err(RemoteError::Unreachable(_))), "{e:?}");
    }
}
