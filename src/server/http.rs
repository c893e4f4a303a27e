//! The ClickHouse HTTP interface (https://clickhouse.com/docs/interfaces/http):
//! the query in the `query` parameter and/or the body, results in the
//! requested format, errors as `Code: N. DB::Exception: … (NAME)` with
//! `X-ClickHouse-Exception-Code`.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use super::catalog::Server;
use super::execute::split_insert_format;
use query::error::QueryError;
use query::format::{self, Format};
use query::session::QueryContext;
use query::settings::Settings;

/// Largest request body accepted by default.
pub const DEFAULT_MAX_BODY: usize = 1 << 30;

fn status_of(code: u32) -> StatusCode {
    match code {
        60 | 81 => StatusCode::NOT_FOUND,
        6 | 16 | 27 | 36 | 42 | 43 | 46 | 47 | 50 | 53 | 56 | 57 | 62 | 73 | 82 | 115 | 117 | 131 | 354 | 420 => {
            StatusCode::BAD_REQUEST
        }
        252 => StatusCode::TOO_MANY_REQUESTS,
        516 => StatusCode::UNAUTHORIZED,
        164 => StatusCode::FORBIDDEN,
        26 | 33 | 396 | 456 => StatusCode::BAD_REQUEST,
        159 => StatusCode::GATEWAY_TIMEOUT,
        307 => StatusCode::PAYLOAD_TOO_LARGE,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

fn error_response(e: &QueryError) -> Response {
    let mut r = (status_of(e.code), format!("{e}\n")).into_response();
    if let Ok(v) = HeaderValue::from_str(&e.code.to_string()) {
        r.headers_mut().insert("X-ClickHouse-Exception-Code", v);
    }
    r
}

/// Decodes a request body by its `Content-Encoding` (gzip, deflate, zstd, lz4).
fn decode_body(headers: &HeaderMap, body: Bytes, max: usize) -> Result<Bytes, QueryError> {
    use std::io::Read;
    let Some(enc) = headers.get("content-encoding").and_then(|v| v.to_str().ok()) else { return Ok(body) };
    let enc = enc.trim().to_ascii_lowercase();
    let bad = |e: std::io::Error| QueryError {
        code: 354,
        name: "CANNOT_DECOMPRESS",
        message: format!("Cannot decode the request body as {enc}: {e}"),
    };
    let mut out = Vec::new();
    let reader: Box<dyn Read> = match enc.as_str() {
        "" | "identity" => return Ok(body),
        "gzip" | "x-gzip" => Box::new(flate2::read::GzDecoder::new(&body[..])),
        "deflate" => Box::new(flate2::read::ZlibDecoder::new(&body[..])),
        "zstd" => Box::new(zstd::stream::read::Decoder::new(&body[..]).map_err(bad)?),
        "lz4" => Box::new(lz4_flex::frame::FrameDecoder::new(&body[..])),
        other => {
            return Err(QueryError {
                code: 36,
                name: "BAD_ARGUMENTS",
                message: format!("Unknown Content-Encoding {other}: gzip, deflate, zstd and lz4 are supported"),
            });
        }
    };
    // A bomb that expands past the body limit is refused, not buffered.
    reader.take(max as u64 + 1).read_to_end(&mut out).map_err(bad)?;
    if out.len() > max {
        return Err(QueryError {
            code: 307,
            name: "TOO_LARGE_REQUEST",
            message: format!("The decompressed request body is larger than {max} bytes"),
        });
    }
    Ok(Bytes::from(out))
}

/// Results up to this size are encoded on the runtime's worker.
const ENCODE_INLINE_BYTES: usize = 1 << 20;

async fn handle(
    State((server, max_body)): State<(Arc<Server>, usize)>,
    Query(params): Query<HashMap<String, String>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    // Decompressing a body (up to the body limit) is CPU work: off the
    // runtime's workers. A plain body is only checked against the limit.
    let body = if headers.contains_key(axum::http::header::CONTENT_ENCODING) {
        let h = headers.clone();
        tokio::task::spawn_blocking(move || decode_body(&h, body, max_body))
            .await
            .unwrap_or_else(|e| Err(QueryError::bad_arguments(format!("decoding the body failed: {e}"))))
    } else {
        decode_body(&headers, body, max_body)
    };
    let body = match body {
        Ok(b) => b,
        Err(e) => return error_response(&e),
    };
    // With a `query` parameter the body continues it (INSERT rows, any bytes);
    // without one, the body is the query.
    let (sql, data) = match params.get("query") {
        Some(q) => (q.clone(), body),
        None => match split_body(&body) {
            Ok(v) => v,
            Err(e) => return error_response(&e),
        },
    };
    let mut q = match context(&server, &params, &headers) {
        Ok(q) => q,
        Err(e) => return error_response(&e),
    };
    let query_id = q.query_id.clone();
    let started = std::time::Instant::now();
    let data_len = data.len();
    match server.execute_in(&sql, &data, &mut q).await {
        Ok(out) => {
            let fmt = out.format.or_else(|| params.get("default_format").and_then(|f| Format::from_name(f).ok()));
            let fmt = fmt.unwrap_or(Format::TabSeparated);
            let result_rows: usize = out.batches.iter().map(|b| b.num_rows()).sum();
            let result_bytes: usize = out.batches.iter().map(|b| b.get_array_memory_size()).sum();
            let body = match &out.schema {
                // A big result is encoded on a blocking thread; a small one
                // costs less than the hand-off.
                Some(schema) if result_bytes > ENCODE_INLINE_BYTES => {
                    let (batches, schema) = (out.batches.clone(), schema.clone());
                    tokio::task::spawn_blocking(move || format::write(fmt, &batches, &schema))
                        .await
                        .unwrap_or_else(|e| Err(QueryError::bad_arguments(format!("encoding the result failed: {e}"))))
                }
                Some(schema) => format::write(fmt, &out.batches, schema),
                None => Ok(Vec::new()),
            };
            let body = match body {
                Ok(b) => b,
                Err(e) => return error_response(&e),
            };
            use std::sync::atomic::Ordering::Relaxed;
            let (read_rows, read_bytes) = (q.stats.read_rows.load(Relaxed), q.stats.read_bytes.load(Relaxed));
            let written_bytes = if out.written_rows > 0 { data_len } else { 0 };
            let elapsed_ns = started.elapsed().as_nanos();
            let mut headers = HeaderMap::new();
            let summary = format!(
                "{{\"read_rows\":\"{read_rows}\",\"read_bytes\":\"{read_bytes}\",\"written_rows\":\"{}\",\"written_bytes\":\"{written_bytes}\",\"total_rows_to_read\":\"{read_rows}\",\"result_rows\":\"{result_rows}\",\"result_bytes\":\"{result_bytes}\",\"elapsed_ns\":\"{elapsed_ns}\"}}",
                out.written_rows
            );
            for (k, v) in [
                ("X-ClickHouse-Summary", summary),
                ("X-ClickHouse-Query-Id", query_id),
                ("X-ClickHouse-Format", fmt.name().to_string()),
                ("X-ClickHouse-Timezone", "UTC".to_string()),
                ("Content-Type", fmt.content_type().to_string()),
                // Not ClickHouse's: which shards skip_unavailable_shards left out.
                ("X-Shardhouse-Skipped-Shards", q.stats.skipped_shards_text()),
            ] {
                if k == "X-Shardhouse-Skipped-Shards" && v.is_empty() {
                    continue;
                }
                if let Ok(v) = HeaderValue::from_str(&v) {
                    headers.insert(k, v);
                }
            }
            (StatusCode::OK, headers, body).into_response()
        }
        Err(e) => error_response(&e),
    }
}

/// Without a `query` parameter the body is the query, except that an
/// `INSERT … FORMAT f` is followed by its rows, which may be any bytes.
fn split_body(body: &Bytes) -> Result<(String, Bytes), QueryError> {
    let text = match std::str::from_utf8(body) {
        Ok(t) => t,
        Err(e) => std::str::from_utf8(&body[..e.valid_up_to()]).unwrap_or_default(),
    };
    if let Some((head, rest)) = split_insert_format(text) {
        let off = text.len() - rest.len();
        return Ok((head.to_string(), body.slice(off..)));
    }
    if text.len() != body.len() {
        return Err(QueryError {
            code: 27,
            name: "CANNOT_PARSE_INPUT_ASSERTION_FAILED",
            message: format!("the query is not valid UTF-8 at byte {}", text.len()),
        });
    }
    Ok((text.to_string(), Bytes::new()))
}

/// Decodes standard base64 (for HTTP Basic credentials).
fn base64(s: &str) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    let (mut acc, mut bits) = (0u32, 0);
    for c in s.trim().bytes().filter(|c| *c != b'=') {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' | b'-' => 62,
            b'/' | b'_' => 63,
            _ => return None,
        } as u32;
        acc = (acc << 6) | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    Some(out)
}

/// User and password from (in ClickHouse's order of precedence) the
/// X-ClickHouse-User/Key headers, HTTP Basic, or `user`/`password` parameters.
fn credentials(params: &HashMap<String, String>, headers: &HeaderMap) -> Result<(String, String), QueryError> {
    let h = |k: &str| headers.get(k).and_then(|v| v.to_str().ok()).map(str::to_string);
    if let Some(user) = h("x-clickhouse-user") {
        return Ok((user, h("x-clickhouse-key").unwrap_or_default()));
    }
    if let Some(auth) = h("authorization") {
        let bad = || QueryError {
            code: 516,
            name: "AUTHENTICATION_FAILED",
            message: "Malformed Authorization header: expected Basic credentials".into(),
        };
        let b64 = auth.strip_prefix("Basic ").ok_or_else(bad)?;
        let text = base64(b64).and_then(|b| String::from_utf8(b).ok()).ok_or_else(bad)?;
        let (u, p) = text.split_once(':').unwrap_or((&text, ""));
        return Ok((u.to_string(), p.to_string()));
    }
    Ok((
        params.get("user").cloned().unwrap_or_else(|| "default".into()),
        params.get("password").cloned().unwrap_or_default(),
    ))
}

/// The query's context from the URL parameters and headers.
fn context(server: &Server, params: &HashMap<String, String>, headers: &HeaderMap) -> Result<QueryContext, QueryError> {
    let (user, password) = credentials(params, headers)?;
    server.authenticate(&user, &password)?;
    let mut q = QueryContext::new(params.get("database").map(String::as_str).unwrap_or("default"));
    q.user = user;
    if let Some(id) = params.get("query_id").filter(|id| !id.is_empty()) {
        q.query_id = id.clone();
    }
    q.settings = Settings::from_params(params.iter())?;
    q.params = params.iter().filter_map(|(k, v)| Some((k.strip_prefix("param_")?.to_string(), v.clone()))).collect();
    if let Some(id) = params.get("session_id").filter(|id| !id.is_empty()) {
        q.session = Some(server.sessions.get(&q.user, id, params.get("session_timeout").map(String::as_str))?);
    }
    Ok(q)
}

/// The HTTP router of a server.
pub fn router(server: Arc<Server>, max_body: usize) -> Router {
    Router::new()
        .route("/ping", get(|| async { "Ok.\n" }))
        .route("/", get(handle).post(handle))
        .layer(DefaultBodyLimit::max(max_body))
        .with_state((server, max_body))
}

/// Serves HTTP on `addr` until `shutdown` resolves. Returns the bound address
/// through `bound` (useful with port 0).
pub async fn serve(
    server: Arc<Server>,
    addr: SocketAddr,
    max_body: usize,
    bound: impl FnOnce(SocketAddr),
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    use axum::serve::ListenerExt;
    let listener = tokio::net::TcpListener::bind(addr).await?;
    bound(listener.local_addr()?);
    // As ClickHouse: a response written in pieces (streamed results) must
    // not wait for the client's delayed ACK of the previous piece.
    let listener = listener.tap_io(|tcp| {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "TCP_NODELAY");
        }
    });
    axum::serve(listener, router(server, max_body)).with_graceful_shutdown(shutdown).await
}
