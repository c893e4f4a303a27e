//! `ENGINE = Distributed(cluster, database, table[, sharding_key])`: a
//! table holding no data that spreads inserts over the shards of a logical
//! cluster and reads every shard.
//!
//! Inserts follow ClickHouse's rule: the sharding expression per row as a
//! UInt64, slot = value % sum(weights), each shard owning a contiguous run
//! of slots ([`crate::topology::SlotMap`]). Unlike ClickHouse's default
//! (an asynchronous spool that loses acknowledged rows when the node
//! crashes), an insert is acknowledged only once every shard it touched
//! committed its sub-block — each shard's table acknowledges per its own
//! quorum. The split is a function of the block alone (`rand()` is seeded
//! by the block's hash) and each sub-block carries a token derived from the
//! block's, so a retried insert is deduplicated on every shard.

use std::sync::Arc;
use std::time::Duration;

use arrow::array::{Array, ArrayRef, AsArray, RecordBatch, UInt32Array};
use arrow::compute::{cast, take};
use arrow::datatypes::{DataType, Int64Type, UInt64Type};
use async_trait::async_trait;
use storage::Part;
use storage::mutation::MutationCommand;

use super::{EngineKind, InsertOptions, MergeInfo, MutationInfo, MutationSync, OptimizeOptions, TableEngine};
use crate::error::{EngineError, Result};
use crate::remote::RemoteError;
use crate::topology::SlotMap;

/// One shard as a Distributed table reaches it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardTarget {
    /// 1-based, in the cluster's order (`_shard_num`).
    pub num: usize,
    pub weight: u64,
    /// Replicas' node ids and HTTP addresses, in `in_order` order.
    pub replicas: Vec<(u64, String)>,
}

/// How a shard's replica is chosen (`load_balancing`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LoadBalancing {
    /// A random replica first (ClickHouse's default).
    #[default]
    Random,
    /// Replicas in configuration order.
    InOrder,
    /// The replica whose host name differs least from this node's, then in order.
    NearestHostname,
    /// The first replica, then the others in random order.
    FirstOrRandom,
}

impl LoadBalancing {
    /// The setting's value, if it is one of ours.
    pub fn parse(v: &str) -> Option<LoadBalancing> {
        match v.to_ascii_lowercase().as_str() {
            "random" => Some(LoadBalancing::Random),
            "in_order" => Some(LoadBalancing::InOrder),
            "nearest_hostname" => Some(LoadBalancing::NearestHostname),
            "first_or_random" => Some(LoadBalancing::FirstOrRandom),
            _ => None,
        }
    }
}

/// Which replicas of a shard to try, in order: `load_balancing`, and
/// `prefer_localhost_replica` putting this node's own first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplicaOrder {
    pub policy: LoadBalancing,
    pub prefer_local: bool,
}

impl Default for ReplicaOrder {
    fn default() -> Self {
        ReplicaOrder { policy: LoadBalancing::Random, prefer_local: true }
    }
}

/// `replicas` in the order `order` tries them, for node `me` at `my_host`;
/// `seed` drives the random policies.
pub fn order_replicas(
    replicas: &[(u64, String)],
    order: ReplicaOrder,
    me: u64,
    my_host: &str,
    seed: u64,
) -> Vec<(u64, String)> {
    let mut r = replicas.to_vec();
    let mut x = seed | 1;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    match order.policy {
        LoadBalancing::InOrder => {}
        LoadBalancing::Random => {
            for i in (1..r.len()).rev() {
                r.swap(i, (next() % (i as u64 + 1)) as usize);
            }
        }
        LoadBalancing::FirstOrRandom => {
            for i in (2..r.len()).rev() {
                r.swap(i, 1 + (next() % i as u64) as usize);
            }
        }
        LoadBalancing::NearestHostname => {
            let host = |a: &str| a.rsplit_once(':').map_or(a, |(h, _)| h).to_string();
            let differ = |h: &str| {
                let (a, b) = (h.as_bytes(), my_host.as_bytes());
                a.iter().zip(b).filter(|(x, y)| x != y).count() + a.len().abs_diff(b.len())
            };
            r.sort_by_key(|(_, addr)| differ(&host(addr)));
        }
    }
    if order.prefer_local {
        r.sort_by_key(|(n, _)| *n != me);
    }
    r
}

/// A Distributed table on this node.
#[derive(Debug)]
pub struct DistributedTable {
    storage: Arc<storage::Table>,
    cluster: String,
    database: String,
    table: String,
    /// The sharding expression's text, if any.
    key: Option<String>,
    shards: Vec<ShardTarget>,
    slots: Option<SlotMap>,
    /// This node: its own replica of a shard is tried first
    /// (`prefer_localhost_replica`).
    me: u64,
    timeout: Duration,
}

impl DistributedTable {
    /// The table over `shards` of `cluster`, sending to `database.table`.
    pub fn new(
        storage: Arc<storage::Table>,
        cluster: &str,
        database: &str,
        table: &str,
        key: Option<String>,
        shards: Vec<ShardTarget>,
        me: u64,
    ) -> Result<DistributedTable> {
        if shards.is_empty() {
            return Err(EngineError::BadConfig(format!("cluster {cluster} has no shards")));
        }
        if let Some(k) = &key {
            // Fail at CREATE, not at the first insert.
            if !is_rand(k) {
                storage::expr::ExprCompiler::new(storage.schema().clone())?.compile(k)?;
            }
        }
        let slots = SlotMap::new(&shards.iter().map(|s| s.weight).collect::<Vec<_>>());
        Ok(DistributedTable {
            storage,
            cluster: cluster.to_string(),
            database: database.to_string(),
            table: table.to_string(),
            key,
            shards,
            slots,
            me,
            timeout: Duration::from_secs(300),
        })
    }

    /// The shards, in order.
    pub fn shards(&self) -> &[ShardTarget] {
        &self.shards
    }

    /// The one column the sharding key reads, if it reads exactly one
    /// (`rand()` reads none: no read can be pinned to a shard).
    pub fn key_column(&self) -> Option<String> {
        let key = self.key.as_ref().filter(|k| !is_rand(k))?;
        let compiler = storage::expr::ExprCompiler::new(self.storage.schema().clone()).ok()?;
        let (_, cols) = compiler.compile_with_columns(key).ok()?;
        (cols.len() == 1).then(|| cols[0].clone())
    }

    /// The shards (indices into [`Self::shards`]) rows whose key column
    /// holds one of `values` are sent to (`optimize_skip_unused_shards`).
    pub fn shards_for(&self, values: &ArrayRef) -> Result<std::collections::BTreeSet<usize>> {
        let (Some(col), Some(key), Some(slots)) = (self.key_column(), &self.key, &self.slots) else {
            return Ok((0..self.shards.len()).collect());
        };
        let field = self.storage.schema().field_with_name(&col).map_err(|e| EngineError::BadConfig(e.to_string()))?;
        let values = cast(values, field.data_type()).map_err(|e| EngineError::BadConfig(e.to_string()))?;
        let schema = Arc::new(arrow::datatypes::Schema::new(vec![field.clone().with_nullable(true)]));
        let batch =
            RecordBatch::try_new(schema.clone(), vec![values]).map_err(|e| EngineError::BadConfig(e.to_string()))?;
        let expr = storage::expr::ExprCompiler::new(schema)?.compile(key)?;
        let v =
            expr.evaluate(&batch).and_then(|c| c.into_array(batch.num_rows())).map_err(storage::StorageError::from)?;
        Ok(as_u64(&v)?.into_iter().map(|x| slots.shard_of(x)).collect())
    }

    /// The database and table every shard holds the rows in.
    pub fn remote_names(&self) -> (&str, &str) {
        (&self.database, &self.table)
    }

    /// `database.table` on every shard, quoted for SQL.
    pub fn remote_table(&self) -> String {
        format!("`{}`.`{}`", self.database.replace('`', "\\`"), self.table.replace('`', "\\`"))
    }

    /// Runs `sql` (with `body`) on one replica of `shard`, trying the next
    /// replica when one cannot be reached; a replica's own error is final.
    /// Inserts go to this node's own replica first, then in order.
    pub async fn on_shard(
        &self,
        shard: &ShardTarget,
        sql: &str,
        settings: &[(String, String)],
        body: &[u8],
    ) -> Result<Vec<u8>> {
        let order = ReplicaOrder { policy: LoadBalancing::InOrder, prefer_local: true };
        self.on_shard_in(shard, order, sql, settings, body).await
    }

    /// [`Self::on_shard`] trying the replicas in `order`.
    pub async fn on_shard_in(
        &self,
        shard: &ShardTarget,
        order: ReplicaOrder,
        sql: &str,
        settings: &[(String, String)],
        body: &[u8],
    ) -> Result<Vec<u8>> {
        let mut params: Vec<(&str, &str)> = vec![("query", sql)];
        params.extend(settings.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        let mut errors = Vec::new();
        let my_host = shard
            .replicas
            .iter()
            .chain(self.shards.iter().flat_map(|s| s.replicas.iter()))
            .find(|(n, _)| *n == self.me)
            .map(|(_, a)| a.rsplit_once(':').map_or(a.as_str(), |(h, _)| h).to_string())
            .unwrap_or_default();
        let seed =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(1, |d| d.as_nanos() as u64);
        for (node, addr) in order_replicas(&shard.replicas, order, self.me, &my_host, seed) {
            match crate::remote::post(&addr, &params, body, self.timeout).await {
                Ok(b) => return Ok(b),
                Err(RemoteError::Unreachable(m)) => errors.push(format!("replica {node} ({addr}): {m}")),
                Err(RemoteError::Failed { code, message }) => {
                    return Err(EngineError::Shard { shard: shard.num, code, message });
                }
            }
        }
        Err(EngineError::ShardUnreachable { shard: shard.num, cluster: self.cluster.clone(), tried: errors.join("; ") })
    }

    /// Each row's shard (an index into [`Self::shards`]).
    fn route(&self, batch: &RecordBatch, opts: &InsertOptions, block_hash: u64) -> Result<Vec<Vec<u32>>> {
        let slots = self
            .slots
            .as_ref()
            .ok_or_else(|| EngineError::BadConfig(format!("every shard of cluster {} has weight 0", self.cluster)))?;
        let n = batch.num_rows();
        let Some(key) = &self.key else {
            if self.shards.len() == 1 {
                return Ok(vec![(0..n as u32).collect()]);
            }
            if !opts.distributed_one_random_shard {
                return Err(EngineError::NoShardingKey { cluster: self.cluster.clone() });
            }
            // One shard for the whole block, chosen by its weight (and by
            // the block's hash, so a retry picks the same one).
            let mut out = vec![Vec::new(); self.shards.len()];
            out[slots.shard_of(block_hash)] = (0..n as u32).collect();
            return Ok(out);
        };
        let values: Vec<u64> = if is_rand(key) {
            // rand() is UInt32 in ClickHouse; here a generator seeded by
            // the block, so the split repeats on a retry.
            let mut x = block_hash | 1;
            (0..n)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    x >> 32
                })
                .collect()
        } else {
            let expr = storage::expr::ExprCompiler::new(batch.schema())?.compile(key)?;
            let v = expr.evaluate(batch).and_then(|c| c.into_array(n)).map_err(storage::StorageError::from)?;
            as_u64(&v)?
        };
        Ok(slots.split(values))
    }
}

fn is_rand(key: &str) -> bool {
    let k: String = key.chars().filter(|c| !c.is_whitespace()).collect();
    k.eq_ignore_ascii_case("rand()")
}

/// Sharding values as UInt64: integers wrap as ClickHouse's cast does.
fn as_u64(v: &ArrayRef) -> Result<Vec<u64>> {
    let t = v.data_type();
    let bad = || EngineError::BadConfig(format!("the sharding expression must be an integer, not {t}"));
    let out: Vec<u64> = if t.is_signed_integer() {
        let i = cast(v, &DataType::Int64).map_err(|_| bad())?;
        i.as_primitive::<Int64Type>().iter().map(|x| x.unwrap_or(0) as u64).collect()
    } else if t.is_unsigned_integer() || *t == DataType::Boolean {
        let u = cast(v, &DataType::UInt64).map_err(|_| bad())?;
        u.as_primitive::<UInt64Type>().iter().map(|x| x.unwrap_or(0)).collect()
    } else {
        return Err(bad());
    };
    Ok(out)
}

/// A block's hash for its dedup token and its pseudo-random split: over
/// its Arrow IPC bytes.
fn block_hash(batch: &RecordBatch) -> Result<u64> {
    let mut buf = Vec::new();
    {
        let mut w = arrow::ipc::writer::StreamWriter::try_new(&mut buf, &batch.schema())
            .map_err(|e| EngineError::BadConfig(e.to_string()))?;
        w.write(batch).map_err(|e| EngineError::BadConfig(e.to_string()))?;
        w.finish().map_err(|e| EngineError::BadConfig(e.to_string()))?;
    }
    Ok(xxhash_rust::xxh3::xxh3_64(&buf))
}

fn ipc(batch: &RecordBatch) -> Result<Vec<u8>> {
    let mut buf = Vec::new();
    let mut w = arrow::ipc::writer::StreamWriter::try_new(&mut buf, &batch.schema())
        .map_err(|e| EngineError::BadConfig(e.to_string()))?;
    w.write(batch).map_err(|e| EngineError::BadConfig(e.to_string()))?;
    w.finish().map_err(|e| EngineError::BadConfig(e.to_string()))?;
    drop(w);
    Ok(buf)
}

#[async_trait]
impl TableEngine for DistributedTable {
    fn kind(&self) -> EngineKind {
        EngineKind::Distributed
    }

    fn storage(&self) -> &Arc<storage::Table> {
        &self.storage
    }

    async fn insert(&self, batch: &RecordBatch, opts: &InsertOptions) -> Result<usize> {
        if batch.num_rows() == 0 {
            return Ok(0);
        }
        let hash = block_hash(batch)?;
        let split = self.route(batch, opts, hash)?;
        // The block's token (or hash) and index: each shard's sub-block is
        // deduplicated by its own derivation of it.
        let base = match &opts.token {
            Some(t) => format!("{t}_{}", opts.index),
            None => format!("{hash:016x}"),
        };
        let sends = split.iter().enumerate().filter(|(_, rows)| !rows.is_empty()).map(|(i, rows)| {
            let shard = &self.shards[i];
            let idx = UInt32Array::from(rows.clone());
            let token = format!("{base}_shard{}", shard.num);
            async move {
                let cols = batch
                    .columns()
                    .iter()
                    .map(|c| take(c, &idx, None))
                    .collect::<std::result::Result<Vec<_>, _>>()
                    .map_err(|e| EngineError::BadConfig(e.to_string()))?;
                let sub =
                    RecordBatch::try_new(batch.schema(), cols).map_err(|e| EngineError::BadConfig(e.to_string()))?;
                let body = ipc(&sub)?;
                let sql = format!("INSERT INTO {} FORMAT ArrowStream", self.remote_table());
                let mut settings = vec![
                    ("insert_deduplicate".to_string(), if opts.deduplicate { "1" } else { "0" }.to_string()),
                    ("insert_quorum".to_string(), opts.quorum.clone()),
                ];
                if opts.deduplicate {
                    settings.push(("insert_deduplication_token".to_string(), token));
                }
                self.on_shard(shard, &sql, &settings, &body).await?;
                Ok::<usize, EngineError>(sub.num_rows())
            }
        });
        // Every shard in parallel; acknowledged only if all committed.
        let results = futures::future::join_all(sends).await;
        let mut rows = 0;
        for r in results {
            rows += r?;
        }
        Ok(rows)
    }

    fn snapshot(&self) -> Vec<Arc<Part>> {
        Vec::new()
    }

    fn merge_step(&self) -> Result<bool> {
        Ok(false)
    }

    async fn optimize(&self, _opts: &OptimizeOptions) -> Result<()> {
        Err(EngineError::NotSupported("OPTIMIZE of a Distributed table (optimize its local tables ON CLUSTER)".into()))
    }

    async fn mutate(&self, _c: Vec<MutationCommand>, _text: &str, _sync: MutationSync) -> Result<()> {
        Err(EngineError::NotSupported("mutations of a Distributed table (alter its local tables ON CLUSTER)".into()))
    }

    async fn kill_mutation(&self, _id: &str) -> Result<bool> {
        Ok(false)
    }

    async fn drop_partition(&self, _p: &str) -> Result<()> {
        Err(EngineError::NotSupported("DROP PARTITION of a Distributed table".into()))
    }

    async fn truncate(&self) -> Result<()> {
        Err(EngineError::NotSupported("TRUNCATE of a Distributed table (truncate its local tables ON CLUSTER)".into()))
    }

    fn set_merges_stopped(&self, _stopped: bool) {}

    fn cleanup(&self) -> Result<()> {
        Ok(())
    }

    fn outdated(&self) -> Vec<Arc<Part>> {
        Vec::new()
    }

    fn merges(&self) -> Vec<MergeInfo> {
        Vec::new()
    }

    fn mutations(&self) -> Vec<MutationInfo> {
        Vec::new()
    }

    fn distributed(&self) -> Option<&DistributedTable> {
        Some(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replicas_are_tried_as_load_balancing_and_prefer_localhost_replica_say() {
        let reps: Vec<(u64, String)> =
            vec![(1, "10.0.0.1:8123".into()), (2, "10.0.9.9:8123".into()), (3, "10.0.0.2:8123".into())];
        let ids = |order, me, host: &str, seed| -> Vec<u64> {
            order_replicas(&reps, order, me, host, seed).iter().map(|r| r.0).collect()
        };
        let o = |policy, prefer_local| ReplicaOrder { policy, prefer_local };
        assert_eq!(ids(o(LoadBalancing::InOrder, false), 3, "", 1), [1, 2, 3]);
        assert_eq!(ids(o(LoadBalancing::InOrder, true), 3, "", 1), [3, 1, 2]);
        assert_eq!(ids(o(LoadBalancing::NearestHostname, false), 9, "10.0.0.3", 1), [1, 3, 2]);
        let firsts: std::collections::BTreeSet<u64> =
            (1..50).map(|s| ids(o(LoadBalancing::Random, false), 9, "", s)[0]).collect();
        assert_eq!(firsts.len(), 3, "random spreads the first choice");
        assert!((1..50).all(|s| ids(o(LoadBalancing::FirstOrRandom, false), 9, "", s)[0] == 1));
        let mut all = ids(o(LoadBalancing::Random, true), 2, "", 7);
        assert_eq!(all[0], 2);
        all.sort_unstable();
        assert_eq!(all, [1, 2, 3]);
        assert_eq!(LoadBalancing::parse("IN_ORDER"), Some(LoadBalancing::InOrder));
        assert_eq!(LoadBalancing::parse("round_robin"), None);
    }

    #[test]
    fn a_read_pinned_to_key_values_needs_only_their_shards() {
        let schema = Arc::new(arrow::datatypes::Schema::new(vec![
            arrow::datatypes::Field::new("k", DataType::UInt64, false),
            arrow::datatypes::Field::new("v", DataType::Utf8, false),
        ]));
        let def = storage::TableDef {
            schema,
            engine: storage::Engine::MergeTree,
            partition_by: None,
            order_by: vec![],
            settings: Default::default(),
        };
        let storage = storage::Table::new(def).unwrap();
        let shard = |num, weight| ShardTarget { num, weight, replicas: vec![(num as u64, String::new())] };
        let t = |key: &str| {
            DistributedTable::new(storage.clone(), "c", "db", "t", Some(key.into()), vec![shard(1, 1), shard(2, 2)], 1)
                .unwrap()
        };
        let vals: ArrayRef = Arc::new(arrow::array::Int64Array::from(vec![3, 4]));
        assert_eq!(t("k").key_column().as_deref(), Some("k"));
        assert_eq!(t("k").shards_for(&vals).unwrap(), [0, 1].into());
        let three: ArrayRef = Arc::new(arrow::array::Int64Array::from(vec![3, 6]));
        assert_eq!(t("k").shards_for(&three).unwrap(), [0].into(), "slot 0 of 3 is shard 1's");
        assert_eq!(t("intHash64(k)").key_column().as_deref(), Some("k"));
        assert_eq!(t("rand()").key_column(), None);
    }

    #[test]
    fn sharding_values_wrap_as_clickhouse_casts() {
        let v: ArrayRef = Arc::new(arrow::array::Int32Array::from(vec![-1, 5]));
        assert_eq!(as_u64(&v).unwrap(), vec![u64::MAX, 5]);
        let s: ArrayRef = Arc::new(arrow::array::StringArray::from(vec!["a"]));
        assert!(as_u64(&s).is_err());
        assert!(is_rand(" RAND ( ) "));
    }
}
