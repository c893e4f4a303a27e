//! A minimal HTTP/1.0 client: one connection per request, so a killed or
//! cut-off server shows up as an error on that request only.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// POSTs `body` to `/?{params}&query={sql}` (the query in the body when
/// there is no body) and returns the status and the response body.
pub fn post(port: u16, params: &str, sql: &str, body: &[u8], timeout: Duration) -> std::io::Result<(u16, String)> {
    post_with_headers(port, params, sql, body, timeout).map(|(status, _, body)| (status, body))
}

/// [`post`], also returning the response's header lines.
pub fn post_with_headers(
    port: u16,
    params: &str,
    sql: &str,
    body: &[u8],
    timeout: Duration,
) -> std::io::Result<(u16, String, String)> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    s.set_read_timeout(Some(timeout))?;
    s.set_write_timeout(Some(timeout))?;
    let (path, payload): (String, Vec<u8>) = if body.is_empty() {
        (format!("/?{params}"), sql.as_bytes().to_vec())
    } else {
        (format!("/?{params}&query={}", encode(sql)), body.to_vec())
    };
    write!(s, "POST {path} HTTP/1.0\r\nContent-Length: {}\r\n\r\n", payload.len())?;
    s.write_all(&payload)?;
    let mut out = Vec::new();
    s.read_to_end(&mut out)?;
    let text = String::from_utf8_lossy(&out).to_string();
    let status = text.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    Ok((status, head.to_string(), body.to_string()))
}

fn encode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => out.push(b as char),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}
