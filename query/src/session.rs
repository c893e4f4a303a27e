//! What a query runs with (database, settings, parameters, id, user) and
//! HTTP sessions (`session_id`), which keep `SET` settings and `USE` between
//! requests until they sit idle for their timeout.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::error::QueryError;
use crate::settings::Settings;

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
    pub stats: Arc<crate::metering::QueryStats>,
    /// The statement is an applied `ON CLUSTER` entry: run it here, do not
    /// distribute it again.
    pub from_ddl_log: bool,
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
            from_ddl_log: false,
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

/// Open sessions, by user and session id (a session id names a session of
/// the user who opened it: another user with the same id gets another).
#[derive(Default)]
pub struct Sessions {
    map: Mutex<HashMap<(String, String), Entry>>,
}

/// Most live sessions one user may hold (ClickHouse's `max_sessions_for_user`;
/// unbounded there by default, bounded here so a client opening a session per
/// request cannot grow the server's memory without end).
pub const MAX_SESSIONS_PER_USER: usize = 1000;

/// Longest a session may be kept idle (ClickHouse's `max_session_timeout`).
const MAX_TIMEOUT: Duration = Duration::from_secs(3600);

impl Sessions {
    /// `user`'s session `id`, created if new; expired sessions are dropped
    /// first. A user holding [`MAX_SESSIONS_PER_USER`] live sessions cannot
    /// open another (USER_SESSION_LIMIT_EXCEEDED).
    pub fn get(
        &self,
        user: &str,
        id: &str,
        timeout_secs: Option<&str>,
    ) -> Result<Arc<Mutex<SessionState>>, QueryError> {
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
        let key = (user.to_string(), id.to_string());
        if !map.contains_key(&key) && map.keys().filter(|(u, _)| u == user).count() >= MAX_SESSIONS_PER_USER {
            return Err(QueryError {
                code: 700,
                name: "USER_SESSION_LIMIT_EXCEEDED",
                message: format!("User {user} has {MAX_SESSIONS_PER_USER} live sessions: no more can be opened"),
            });
        }
        let e = map.entry(key).or_insert_with(|| Entry {
            state: Arc::new(Mutex::new(SessionState::default())),
            last_used: now,
            timeout,
        });
        e.last_used = now;
        e.timeout = timeout;
        Ok(e.state.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 18: sessions were keyed by id alone (another user's session
    /// with the same id was shared) and unbounded in number.
    #[test]
    fn regression_sessions_are_per_user_and_bounded() {
        let s = Sessions::default();
        let a = s.get("alice", "s1", None).unwrap();
        a.lock().unwrap().database = Some("db".into());
        assert!(s.get("bob", "s1", None).unwrap().lock().unwrap().database.is_none(), "bob sees alice's session");
        assert_eq!(s.get("alice", "s1", None).unwrap().lock().unwrap().database.as_deref(), Some("db"));
        for i in 1..MAX_SESSIONS_PER_USER {
            s.get("alice", &format!("x{i}"), None).unwrap();
        }
        let e = s.get("alice", "one-too-many", None).unwrap_err();
        assert_eq!((e.code, e.name), (700, "USER_SESSION_LIMIT_EXCEEDED"));
        s.get("alice", "s1", None).expect("an existing session stays usable");
        s.get("bob", "s2", None).expect("another user is not limited by alice's sessions");
        // Expired sessions free their place.
        for i in 0..MAX_SESSIONS_PER_USER {
            s.get("carol", &format!("c{i}"), Some("0")).unwrap();
        }
        s.get("carol", "after-expiry", None).expect("expired sessions do not count");
    }
}
