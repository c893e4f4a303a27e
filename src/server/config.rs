//! The server's configuration file (`shardhouse server -c shardhouse.toml`).
//! Every key is optional; the defaults are the embedded single-node setup.
//!
//! ```toml
//! [server]
//! data_dir = "shardhouse-data"
//! http_listen = "127.0.0.1:8123"
//! max_body_bytes = 1073741824   # largest request body, after decompression
//! merge_threads = 2             # background merge pool
//! os_threads_nice_value_merge_mutate = 10  # merge threads' nice value (-20..19)
//! memory_limit_bytes = 0        # default max_memory_usage of a query (0: none)
//! max_concurrent_queries = 0    # statements run at once (0: no limit)
//!
//! [settings]                    # default query settings, as in a SET
//! max_threads = 2
//!
//! [users.default]               # users and passwords (default: `default`, no password)
//! password = ""
//!
//! [cluster]                     # see `cluster.rs`; absent: a one-node cluster
//! node_id = 1
//!
//! [remote_servers.c]            # logical clusters of shards (system.clusters)
//! shards = [ { weight = 1, replicas = [1, 2] }, { weight = 2, replicas = [3, 4] } ]
//!
//! [macros]                      # {shard} and {replica} default to this node's place
//! shard = "01"
//! ```

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;

use serde::Deserialize;

use query::error::QueryError;
use query::settings::Settings;

fn bad(message: String) -> QueryError {
    QueryError { code: 36, name: "BAD_ARGUMENTS", message }
}

/// `[server]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerSection {
    pub data_dir: PathBuf,
    pub http_listen: SocketAddr,
    pub max_body_bytes: usize,
    pub merge_threads: usize,
    /// Nice value of merge threads: inserts and queries come first.
    pub os_threads_nice_value_merge_mutate: i32,
    pub memory_limit_bytes: u64,
    /// Statements this node runs at once (0: no limit); see `admission.rs`.
    pub max_concurrent_queries: usize,
}

impl Default for ServerSection {
    fn default() -> Self {
        ServerSection {
            data_dir: PathBuf::from("shardhouse-data"),
            http_listen: SocketAddr::from(([127, 0, 0, 1], 8123)),
            max_body_bytes: super::http::DEFAULT_MAX_BODY,
            merge_threads: std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2).clamp(1, 8),
            os_threads_nice_value_merge_mutate: storage::background::DEFAULT_MERGE_NICE,
            memory_limit_bytes: 0,
            max_concurrent_queries: 0,
        }
    }
}

/// `[users.<name>]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct User {
    pub password: String,
}

/// The whole file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub server: ServerSection,
    pub settings: BTreeMap<String, toml::Value>,
    pub users: BTreeMap<String, User>,
    pub cluster: coordinator::config::ClusterSection,
    /// Logical clusters of weighted shards, by name.
    pub remote_servers: coordinator::topology::RemoteServers,
    /// Substitutions for `{name}` in ReplicatedMergeTree paths.
    pub macros: BTreeMap<String, String>,
}

impl Config {
    /// Parses a configuration file's text.
    pub fn parse(text: &str) -> Result<Config, QueryError> {
        let c: Config = toml::from_str(text).map_err(|e| bad(format!("Invalid configuration: {e}")))?;
        if c.server.merge_threads == 0 {
            return Err(bad("Invalid configuration: server.merge_threads must be at least 1".into()));
        }
        if !(-20..=19).contains(&c.server.os_threads_nice_value_merge_mutate) {
            return Err(bad(
                "Invalid configuration: server.os_threads_nice_value_merge_mutate must be between -20 and 19".into(),
            ));
        }
        c.default_settings()?;
        c.cluster.validate().map_err(|e| bad(format!("Invalid configuration: {e}")))?;
        coordinator::topology::validate(&c.remote_servers, &c.cluster)
            .map_err(|e| bad(format!("Invalid configuration: {e}")))?;
        Ok(c)
    }

    /// This node's macros (configured, with `shard` and `replica` filled in).
    pub fn node_macros(&self) -> BTreeMap<String, String> {
        coordinator::topology::macros(&self.macros, &self.remote_servers, self.cluster.node_id)
    }

    /// Reads and parses a configuration file.
    pub fn load(path: &std::path::Path) -> Result<Config, QueryError> {
        let text = std::fs::read_to_string(path).map_err(|e| bad(format!("Cannot read {}: {e}", path.display())))?;
        Config::parse(&text)
    }

    /// The default query settings: `[settings]`, and the memory limit.
    pub fn default_settings(&self) -> Result<Settings, QueryError> {
        let mut s = Settings::default();
        if self.server.memory_limit_bytes > 0 {
            s.set("max_memory_usage", &self.server.memory_limit_bytes.to_string())?;
        }
        for (k, v) in &self.settings {
            let text = match v {
                toml::Value::String(x) => x.clone(),
                other => other.to_string(),
            };
            s.set(k, &text)?;
        }
        Ok(s)
    }

    /// Users and passwords; `default` without a password when none are listed.
    pub fn user_passwords(&self) -> BTreeMap<String, String> {
        if self.users.is_empty() {
            return BTreeMap::from([("default".to_string(), String::new())]);
        }
        self.users.iter().map(|(k, u)| (k.clone(), u.password.clone())).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_defaults_and_rejects_typos() {
        let c = Config::parse("").unwrap();
        assert_eq!(c.server.http_listen.port(), 8123);
        assert_eq!(c.user_passwords()["default"], "");
        let c = Config::parse(
            "[server]\nhttp_listen = \"0.0.0.0:9000\"\nmerge_threads = 3\nmemory_limit_bytes = 1000000\n\
             [settings]\nmax_threads = 1\n[users.alice]\npassword = \"x\"\n",
        )
        .unwrap();
        assert_eq!(c.server.merge_threads, 3);
        let s = c.default_settings().unwrap();
        assert_eq!((s.u64("max_threads"), s.u64("max_memory_usage")), (1, 1000000));
        assert!(!c.user_passwords().contains_key("default"));
        assert!(Config::parse("[server]\nhttp_lisen = \"x\"").unwrap_err().message.contains("http_lisen"));
        assert!(Config::parse("[settings]\nreadonly = \"maybe\"").is_err());
        assert!(Config::parse("[server]\nmerge_threads = 0").is_err());
        assert!(Config::parse("[server]\nos_threads_nice_value_merge_mutate = 20").is_err());
        let c = Config::parse("[server]\nos_threads_nice_value_merge_mutate = 0").unwrap();
        assert_eq!(c.server.os_threads_nice_value_merge_mutate, 0);
    }

    #[test]
    fn remote_servers_list_weighted_shards_of_known_nodes() {
        let nodes = "[cluster]\nnode_id = 2\nnodes = [{ id = 1, raft = \"127.0.0.1:1\" }, { id = 2, raft = \"127.0.0.1:2\" }, { id = 3, raft = \"127.0.0.1:3\" }]\n";
        let c = Config::parse(&format!(
            "{nodes}[remote_servers.c]\nshards = [{{ replicas = [1, 2] }}, {{ weight = 2, replicas = [3] }}]\n"
        ))
        .unwrap();
        let cl = &c.remote_servers["c"];
        assert_eq!((cl.shards[0].weight, cl.shards[1].weight), (1, 2));
        assert_eq!(c.node_macros()["shard"], "1");
        assert_eq!(c.node_macros()["replica"], "2");
        let e = Config::parse(&format!("{nodes}[remote_servers.c]\nshards = [{{ replicas = [7] }}]\n")).unwrap_err();
        assert!(e.message.contains("node 7"), "{}", e.message);
        let e = Config::parse(&format!("{nodes}[remote_servers.c]\nshards = [{{ replica = [1] }}]\n")).unwrap_err();
        assert!(e.message.contains("replica"), "{}", e.message);
    }

    #[test]
    fn cluster_name_defaults_and_must_be_a_header_value() {
        assert_eq!(Config::parse("").unwrap().cluster.name, "shardhouse");
        assert_eq!(Config::parse("[cluster]\nname = \"prod-eu\"").unwrap().cluster.name, "prod-eu");
        let e = Config::parse("[cluster]\nname = \"two words\"").unwrap_err();
        assert!(e.message.contains("cluster.name 'two words'"), "{}", e.message);
    }
}
