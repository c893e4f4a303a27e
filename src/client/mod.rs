//! `shardhouse client`: sends statements to a server's HTTP interface and
//! prints the results. Interactive on a terminal (line editing and history,
//! multi-line statements, PrettyCompact output, elapsed time and rows/s, a
//! progress line for long queries and uploads), script-friendly otherwise
//! (one statement per `;`, TabSeparated output, a non-zero exit on the first
//! error). `INSERT … FROM INFILE 'file'` uploads a local file.

pub mod benchmark;
mod infile;
mod progress;

use std::io::{IsTerminal, Read, Write};
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

/// Sends one statement and waits for the answer.
pub fn send(opts: &ClientOptions, sql: &str, format: &str) -> std::io::Result<Answer> {
    send_body(opts, None, format, &mut sql.as_bytes(), sql.len() as u64, None, None)
}

/// Sends a request whose body (`len` bytes from `body`) follows `query` (the
/// URL's query parameter, if any), reporting upload progress.
pub(crate) fn send_body(
    opts: &ClientOptions,
    query: Option<&str>,
    format: &str,
    body: &mut dyn Read,
    len: u64,
    content_encoding: Option<&str>,
    progress: Option<&progress::Progress>,
) -> std::io::Result<Answer> {
    let mut stream = TcpStream::connect((opts.host.as_str(), opts.port))?;
    stream.set_read_timeout(Some(Duration::from_secs(3600)))?;
    let mut path = format!("/?database={}&default_format={}", encode(&opts.database), encode(format));
    if let Some(q) = query {
        path.push_str("&query=");
        path.push_str(&encode(q));
    }
    let encoding = content_encoding.map(|e| format!("Content-Encoding: {e}\r\n")).unwrap_or_default();
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: {}:{}\r\nContent-Length: {len}\r\n{encoding}Connection: close\r\n\r\n",
        opts.host, opts.port,
    );
    stream.write_all(head.as_bytes())?;
    let mut buf = vec![0u8; 1 << 20];
    let mut sent = 0u64;
    loop {
        let n = body.read(&mut buf)?;
        if n == 0 {
            break;
        }
        stream.write_all(&buf[..n])?;
        sent += n as u64;
        if let Some(p) = progress {
            p.uploaded(sent, len);
        }
    }
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

fn summary_field(summary: Option<&str>, key: &str) -> u64 {
    summary
        .and_then(|s| s.split(&format!("\"{key}\":\"")).nth(1))
        .and_then(|s| s.split('"').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn run_one(opts: &ClientOptions, sql: &str, format: &str, interactive: bool) -> Result<(), String> {
    let start = Instant::now();
    let unreachable = |e: std::io::Error| format!("Cannot reach {}:{}: {e}", opts.host, opts.port);
    let progress = progress::Progress::start(interactive || std::io::stderr().is_terminal());
    let answer = match infile::parse(sql)? {
        Some(upload) => upload.send(opts, format, Some(&progress)).map_err(unreachable)?,
        None => send(opts, sql, format).map_err(unreachable)?,
    };
    progress.finish();
    let mut out = std::io::stdout().lock();
    if answer.status != 200 {
        let text = String::from_utf8_lossy(&answer.body);
        return Err(text.trim_end().to_string());
    }
    let _ = out.write_all(&answer.body);
    if interactive {
        let s = answer.summary.as_deref();
        let (result, read, written) =
            (summary_field(s, "result_rows"), summary_field(s, "read_rows"), summary_field(s, "written_rows"));
        let secs = start.elapsed().as_secs_f64().max(1e-9);
        let mut line = format!("\n{result} rows in set. Elapsed: {secs:.3} sec.");
        if read > 0 {
            line.push_str(&format!(" Processed {read} rows ({:.0} rows/s).", read as f64 / secs));
        }
        if written > 0 {
            line =
                format!("\nOk. {written} rows written. Elapsed: {secs:.3} sec ({:.0} rows/s).", written as f64 / secs);
        }
        let _ = writeln!(out, "{line}\n");
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
    let mut editor = match rustyline::DefaultEditor::new() {
        Ok(e) => e,
        Err(e) => {
            eprintln!("cannot start the line editor: {e}");
            return 1;
        }
    };
    let history = std::env::var_os("HOME").map(|h| std::path::PathBuf::from(h).join(".shardhouse-client-history"));
    if let Some(h) = &history {
        let _ = editor.load_history(h);
    }
    let mut buf = String::new();
    loop {
        let line = match editor.readline(if buf.is_empty() { "shardhouse :) " } else { ":-] " }) {
            Ok(l) => l,
            Err(rustyline::error::ReadlineError::Interrupted) => {
                buf.clear();
                continue;
            }
            Err(_) => break,
        };
        let trimmed = line.trim();
        if buf.is_empty() && matches!(trimmed, "exit" | "quit" | "exit;" | "quit;" | "q") {
            break;
        }
        buf.push_str(&line);
        buf.push('\n');
        if trimmed.ends_with(';') {
            let _ = editor.add_history_entry(buf.trim());
            if let Some(h) = &history {
                let _ = editor.save_history(h);
            }
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
