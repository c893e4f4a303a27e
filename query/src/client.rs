//! `shardhouse client`: sends statements to a server's HTTP interface and
//! prints the results. Interactive on a terminal (PrettyCompact output,
//! elapsed time), script-friendly otherwise (one statement per `;`,
//! TabSeparated output, a non-zero exit on the first error).

use std::io::{BufRead, IsTerminal, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

/// Where and how to send statements.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    pub host: String,
    pub port: u16,
    pub database: String,
    /// Output format; `None` picks PrettyCompact on a terminal, else TabSeparated.
    pub format: Option<String>,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions { host: "127.0.0.1".into(), port: 8123, database: "default".into(), format: None }
    }
}

/// A server's answer.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub body: Vec<u8>,
    pub summary: Option<String>,
}

fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

fn dechunk(mut body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(eol) = body.windows(2).position(|w| w == b"\r\n") {
        let size =
            std::str::from_utf8(&body[..eol]).ok().and_then(|s| usize::from_str_radix(s.trim(), 16).ok()).unwrap_or(0);
        if size == 0 || body.len() < eol + 2 + size {
            break;
        }
        out.extend_from_slice(&body[eol + 2..eol + 2 + size]);
        body = &body[(eol + 4 + size).min(body.len())..];
    }
    out
}

/// Sends one statement (plus `data`, the rows of an INSERT) and waits for the answer.
pub fn send(opts: &ClientOptions, sql: &str, format: &str) -> std::io::Result<Answer> {
    let mut stream = TcpStream::connect((opts.host.as_str(), opts.port))?;
    stream.set_read_timeout(Some(Duration::from_secs(3600)))?;
    let path = format!("/?database={}&default_format={}", encode(&opts.database), encode(format));
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: {}:{}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        opts.host,
        opts.port,
        sql.len()
    );
    stream.write_all(head.as_bytes())?;
    stream.write_all(sql.as_bytes())?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    let split =
        raw.windows(4).position(|w| w == b"\r\n\r\n").ok_or_else(|| std::io::Error::other("bad HTTP response"))?;
    let head = String::from_utf8_lossy(&raw[..split]).to_string();
    let mut body = raw[split + 4..].to_vec();
    let status = head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let header = |name: &str| {
        head.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim().eq_ignore_ascii_case(name).then(|| v.trim().to_string())
        })
    };
    if header("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
        body = dechunk(&body);
    }
    Ok(Answer { status, body, summary: header("x-clickhouse-summary") })
}

/// Splits a script into statements at `;` outside quotes and comments.
pub fn split_statements(script: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut chars = script.chars().peekable();
    let mut quote: Option<char> = None;
    while let Some(c) = chars.next() {
        match quote {
            Some(q) => {
                cur.push(c);
                if c == '\\' {
                    if let Some(n) = chars.next() {
                        cur.push(n);
                    }
                } else if c == q {
                    quote = None;
                }
            }
            None => match c {
                '\'' | '"' | '`' => {
                    quote = Some(c);
                    cur.push(c);
                }
                '-' if chars.peek() == Some(&'-') => {
                    for n in chars.by_ref() {
                        if n == '\n' {
                            cur.push('\n');
                            break;
                        }
                    }
                }
                ';' => {
                    if !cur.trim().is_empty() {
                        out.push(cur.trim().to_string());
                    }
                    cur.clear();
                }
                _ => cur.push(c),
            },
        }
    }
    if !cur.trim().is_empty() {
        out.push(cur.trim().to_string());
    }
    out
}

fn run_one(opts: &ClientOptions, sql: &str, format: &str, interactive: bool) -> Result<(), String> {
    let start = Instant::now();
    let answer = send(opts, sql, format).map_err(|e| format!("Cannot reach {}:{}: {e}", opts.host, opts.port))?;
    let mut out = std::io::stdout().lock();
    if answer.status != 200 {
        let text = String::from_utf8_lossy(&answer.body);
        return Err(text.trim_end().to_string());
    }
    let _ = out.write_all(&answer.body);
    if interactive {
        let rows = answer
            .summary
            .as_deref()
            .and_then(|s| s.split("\"result_rows\":\"").nth(1))
            .and_then(|s| s.split('"').next())
            .unwrap_or("0")
            .to_string();
        let secs = start.elapsed().as_secs_f64();
        let _ = writeln!(out, "\n{rows} rows in set. Elapsed: {secs:.3} sec.\n");
    }
    Ok(())
}

/// Runs the client: `query` if given, else statements from stdin. Returns the
/// process exit code.
pub fn run(opts: &ClientOptions, query: Option<&str>) -> i32 {
    let interactive = query.is_none() && std::io::stdin().is_terminal();
    let format =
        opts.format.clone().unwrap_or_else(|| if interactive { "PrettyCompact".into() } else { "TabSeparated".into() });
    if let Some(q) = query {
        return match run_one(opts, q, &format, false) {
            Ok(()) => 0,
            Err(e) => {
                eprintln!("{e}");
                1
            }
        };
    }
    if !interactive {
        let mut script = String::new();
        if let Err(e) = std::io::stdin().read_to_string(&mut script) {
            eprintln!("cannot read stdin: {e}");
            return 1;
        }
        for st in split_statements(&script) {
            if let Err(e) = run_one(opts, &st, &format, false) {
                eprintln!("{e}");
                return 1;
            }
        }
        return 0;
    }
    println!(
        "shardhouse client {} — connected to {}:{}; end statements with ';', exit with Ctrl-D.",
        env!("CARGO_PKG_VERSION"),
        opts.host,
        opts.port
    );
    let stdin = std::io::stdin();
    let mut buf = String::new();
    loop {
        print!("{}", if buf.is_empty() { "shardhouse :) " } else { ":-] " });
        let _ = std::io::stdout().flush();
        let mut line = String::new();
        match stdin.lock().read_line(&mut line) {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
        let trimmed = line.trim();
        if buf.is_empty() && matches!(trimmed, "exit" | "quit" | "exit;" | "quit;") {
            break;
        }
        buf.push_str(&line);
        if trimmed.ends_with(';') {
            for st in split_statements(&buf) {
                if let Err(e) = run_one(opts, &st, &format, true) {
                    eprintln!("{e}\n");
                }
            }
            buf.clear();
        }
    }
    0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_scripts_at_semicolons_outside_quotes() {
        let s = split_statements("SELECT 1; -- a comment; here\nINSERT INTO t VALUES ('a;b', \"c;\");\n\nSELECT `x;y`");
        assert_eq!(s, vec!["SELECT 1", "INSERT INTO t VALUES ('a;b', \"c;\")", "SELECT `x;y`"]);
        assert_eq!(dechunk(b"3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"), b"abcde");
    }
}
