//! What a query runs with (database, settings, parameters, id, user) and
//! HTTP sessions (`session_id`), which keep `SET` settings and `USE` between
//! requests until they sit idle for their timeout.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::settings::Settings;
use crate::error::QueryError;

/// The context of one query.
#[derive(Debug, Clone)]
pub struct QueryContext {
    pub database: String,
    pub settings: Settings,
    /// `param_<name>` values by name.
    pub params: HashMap<String, String>,
    pub query_id: String,
    pub user: String,
    /// The session the query runs in, if any.
    pub session: Option<Arc<Mutex<SessionState>>>,
    /// What the query used, for `system.query_log`.
    pub stats: Arc<super::metering::QueryStats>,
}

impl QueryContext {
    /// A query in `database` with default settings, as user `default`.
    pub fn new(database: &str) -> QueryContext {
        QueryContext {
            database: database.to_string(),
            settings: Settings::default(),
            params: HashMap::new(),
            query_id: new_query_id(),
            user: "default".to_string(),
            session: None,
            stats: Default::default(),
        }
    }
}

/// A fresh query id in ClickHouse's UUID form.
pub fn new_query_id() -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0));
    let a = h.finish();
    h.write_u64(a);
    let b = h.finish();
    let x = format!("{a:016x}{b:016x}");
    format!("{}-{}-{}-{}-{}", &x[0..8], &x[8..12], &x[12..16], &x[16..20], &x[20..32])
}

/// What a session keeps between its queries.
#[derive(Debug, Clone, Default)]
pub struct SessionState {
    pub database: Option<String>,
    pub settings: Settings,
}

struct Entry {
    state: Arc<Mutex<SessionState>>,
    last_used: Instant,
    timeout: Duration,
}

/// Open sessions by id.
#[derive(Default)]
pub struct Sessions {
    map: Mutex<HashMap<String, Entry>>,
}

/// Longest a session may be kept idle (ClickHouse's `max_session_timeout`).
const MAX_TIMEOUT: Duration = Duration::from_secs(3600);

impl Sessions {
    /// The session `id`, created if new; expired sessions are dropped first.
    pub fn get(&self, id: &str, timeout_secs: Option<&str>) -> Result<Arc<Mutex<SessionState>>, QueryError> {
        let timeout = match timeout_secs {
            Some(t) => {
                let s: u64 = t.parse().map_err(|_| QueryError {
                    code: 36,
                    name: "BAD_ARGUMENTS",
                    message: format!("Invalid session timeout: '{t}'"),
                })?;
                let d = Duration::from_secs(s);
                if d > MAX_TIMEOUT {
                    return Err(QueryError {
                        code: 36,
                        name: "BAD_ARGUMENTS",
                        message: format!("Session timeout {s} is larger than max_session_timeout (3600)"),
                    });
                }
                d
            }
            None => Duration::from_secs(60),
        };
        let now = Instant::now();
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        map.retain(|_, e| now.duration_since(e.last_used) < e.timeout);
        let e = map.entry(id.to_string()).or_insert_with(|| Entry {
            state: Arc::new(Mutex::new(SessionState::default())),
            last_used: now,
            timeout,
        });
        e.last_used = now;
        e.timeout = timeout;
        Ok(e.state.clone())
    }
}
