//! Query slots (issue 19, item 6): with `max_concurrent_queries = 1`, a
//! second statement fails at once with TOO_MANY_SIMULTANEOUS_QUERIES when it
//! may not wait (`queue_max_wait_ms = 0`), and runs after the first when it
//! may.

use std::time::{Duration, Instant};

use shardhouse::server::config::Config;
use shardhouse::server::{QueryContext, Server};

#[test]
fn a_node_runs_at_most_max_concurrent_queries_and_the_rest_wait_or_fail() {
    let dir = tempfile::tempdir().unwrap();
    let text = format!("[server]\ndata_dir = \"{}\"\nmax_concurrent_queries = 1\n", dir.path().display());
    let server = Server::open_with(&Config::parse(&text).unwrap()).unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let run = |wait_ms: u64, sql: &'static str| {
        let server = server.clone();
        async move {
            let mut q = QueryContext::new("default");
            q.settings.set("queue_max_wait_ms", &wait_ms.to_string()).unwrap();
            server.execute_in(sql, &[], &mut q).await
        }
    };
    rt.block_on(async {
        let slow = "SELECT count() FROM numbers(40000000) WHERE xxHash64(number) % 7 = 1";
        let t0 = Instant::now();
        let first = tokio::spawn(run(0, slow));
        tokio::time::sleep(Duration::from_millis(300)).await;
        let refused = run(0, "SELECT 1").await.expect_err("a second statement ran beside the first");
        assert_eq!((refused.code, refused.name), (202, "TOO_MANY_SIMULTANEOUS_QUERIES"), "{refused}");
        let waited = run(120_000, "SELECT 1").await;
        assert!(waited.is_ok(), "{waited:?}");
        let first = first.await.unwrap();
        assert!(first.is_ok(), "{first:?}");
        assert!(t0.elapsed() > Duration::from_millis(300), "the first statement was too quick to overlap");
    });
    server.shutdown();
}
