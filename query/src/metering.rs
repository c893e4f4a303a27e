//! Per-query accounting for `system.query_log`: CPU time, rows and bytes
//! read, and peak tracked memory.
//!
//! CPU: every node of the physical plan is wrapped so that each poll of its
//! stream is timed with the thread's CPU clock. Only the outermost metered
//! poll on a thread counts (a node polling its child synchronously is not
//! counted twice), while work DataFusion spawns onto other tasks starts at
//! depth 0 there and is counted. So the total is the CPU every thread spent
//! on this query, whichever thread it ran on.

use std::cell::Cell;
use std::fmt;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};

use arrow::array::RecordBatch;
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::error::Result;
use datafusion::execution::memory_pool::{MemoryPool, MemoryReservation};
use datafusion::execution::{RecordBatchStream, TaskContext};
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, PlanProperties, SendableRecordBatchStream,
};
use futures::Stream;

/// What one query used.
#[derive(Debug, Default)]
pub struct QueryStats {
    pub cpu_ns: AtomicU64,
    pub read_rows: AtomicU64,
    pub read_bytes: AtomicU64,
    pub peak_memory: AtomicUsize,
    /// Shards of Distributed tables left out of the answer
    /// (`skip_unavailable_shards`), by number.
    pub skipped_shards: std::sync::Mutex<Vec<u32>>,
}

impl QueryStats {
    /// The shards left out, as `1,3` (empty when none).
    pub fn skipped_shards_text(&self) -> String {
        let s = self.skipped_shards.lock().unwrap_or_else(|e| e.into_inner());
        s.iter().map(|n| n.to_string()).collect::<Vec<_>>().join(",")
    }
}

pub use storage::cpu::thread_cpu_ns;

thread_local! {
    static DEPTH: Cell<u32> = const { Cell::new(0) };
}

/// Runs `f`, adding its CPU time to `stats` unless an outer measurement on
/// this thread already covers it.
pub fn measured<T>(stats: &QueryStats, f: impl FnOnce() -> T) -> T {
    let outer = DEPTH.with(|d| {
        let v = d.get();
        d.set(v + 1);
        v == 0
    });
    let start = if outer { thread_cpu_ns() } else { 0 };
    if outer {
        storage::cpu::take_helpers();
    }
    let out = f();
    DEPTH.with(|d| d.set(d.get() - 1));
    if outer {
        let helpers = storage::cpu::take_helpers();
        stats.cpu_ns.fetch_add(thread_cpu_ns().saturating_sub(start) + helpers, Ordering::Relaxed);
    }
    out
}

/// A plan node that meters its inner node's streams.
#[derive(Debug)]
struct Metered {
    inner: Arc<dyn ExecutionPlan>,
    stats: Arc<QueryStats>,
    leaf: bool,
}

impl DisplayAs for Metered {
    fn fmt_as(&self, t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        self.inner.fmt_as(t, f)
    }
}

impl ExecutionPlan for Metered {
    fn name(&self) -> &str {
        "Metered"
    }

    fn downcast_delegate(&self) -> Option<&dyn ExecutionPlan> {
        Some(self.inner.as_ref())
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(
            &Arc<dyn datafusion::physical_plan::PhysicalExpr>,
        ) -> Result<datafusion::common::tree_node::TreeNodeRecursion>,
    ) -> Result<datafusion::common::tree_node::TreeNodeRecursion> {
        Ok(datafusion::common::tree_node::TreeNodeRecursion::Continue)
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        self.inner.properties()
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.inner]
    }

    fn with_new_children(self: Arc<Self>, mut children: Vec<Arc<dyn ExecutionPlan>>) -> Result<Arc<dyn ExecutionPlan>> {
        let inner = children.pop().unwrap_or_else(|| self.inner.clone());
        Ok(Arc::new(Metered { inner, stats: self.stats.clone(), leaf: self.leaf }))
    }

    fn execute(&self, partition: usize, context: Arc<TaskContext>) -> Result<SendableRecordBatchStream> {
        let inner = measured(&self.stats, || self.inner.execute(partition, context))?;
        Ok(Box::pin(MeteredStream { inner, stats: self.stats.clone(), leaf: self.leaf }))
    }
}

struct MeteredStream {
    inner: SendableRecordBatchStream,
    stats: Arc<QueryStats>,
    leaf: bool,
}

impl Stream for MeteredStream {
    type Item = Result<RecordBatch>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let stats = self.stats.clone();
        let r = measured(&stats, || self.inner.as_mut().poll_next(cx));
        if self.leaf
            && let Poll::Ready(Some(Ok(b))) = &r
        {
            stats.read_rows.fetch_add(b.num_rows() as u64, Ordering::Relaxed);
            stats.read_bytes.fetch_add(b.get_array_memory_size() as u64, Ordering::Relaxed);
        }
        r
    }
}

impl RecordBatchStream for MeteredStream {
    fn schema(&self) -> arrow::datatypes::SchemaRef {
        self.inner.schema()
    }
}

/// Wraps every node of `plan` in a meter reporting to `stats`.
pub fn meter(plan: Arc<dyn ExecutionPlan>, stats: &Arc<QueryStats>) -> Result<Arc<dyn ExecutionPlan>> {
    plan.transform_up(|node| {
        let leaf = node.children().is_empty();
        Ok(Transformed::yes(Arc::new(Metered { inner: node, stats: stats.clone(), leaf }) as Arc<dyn ExecutionPlan>))
    })
    .map(|t| t.data)
}

/// A memory pool that remembers its peak, over DataFusion's greedy pool
/// (bounded by `max_memory_usage`) or its unbounded one.
#[derive(Debug)]
pub struct PeakPool {
    inner: Arc<dyn MemoryPool>,
    stats: Arc<QueryStats>,
}

impl PeakPool {
    /// A pool limited to `limit` bytes (0: unlimited).
    pub fn new(limit: usize, stats: Arc<QueryStats>) -> PeakPool {
        let inner: Arc<dyn MemoryPool> = if limit > 0 {
            Arc::new(datafusion::execution::memory_pool::GreedyMemoryPool::new(limit))
        } else {
            Arc::new(datafusion::execution::memory_pool::UnboundedMemoryPool::default())
        };
        PeakPool { inner, stats }
    }

    fn note(&self) {
        self.stats.peak_memory.fetch_max(self.inner.reserved(), Ordering::Relaxed);
    }
}

impl fmt::Display for PeakPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "shardhouse_query({})", self.inner)
    }
}

impl MemoryPool for PeakPool {
    fn name(&self) -> &str {
        "shardhouse_query"
    }

    fn register(&self, c: &datafusion::execution::memory_pool::MemoryConsumer) {
        self.inner.register(c)
    }

    fn unregister(&self, c: &datafusion::execution::memory_pool::MemoryConsumer) {
        self.inner.unregister(c)
    }

    fn grow(&self, r: &MemoryReservation, additional: usize) {
        self.inner.grow(r, additional);
        self.note();
    }

    fn shrink(&self, r: &MemoryReservation, shrink: usize) {
        self.inner.shrink(r, shrink)
    }

    fn try_grow(&self, r: &MemoryReservation, additional: usize) -> Result<()> {
        self.inner.try_grow(r, additional)?;
        self.note();
        Ok(())
    }

    fn reserved(&self) -> usize {
        self.inner.reserved()
    }
}

#[cfg(test)]
mod tests {
    use storage::cpu::{charge_helpers, take_helpers, thread_cpu_ns, timed};

    use super::{QueryStats, measured};

    fn spin(ns: u64) -> u64 {
        let start = thread_cpu_ns();
        let mut x = 0u64;
        while thread_cpu_ns() - start < ns {
            x = x.wrapping_mul(31).wrapping_add(1);
        }
        x
    }

    /// Regression guard: CPU spent on helper threads (Parquet decoding on
    /// every core, a one-node table's insert on a blocking thread) is
    /// counted in the query's CPU, not only the caller's.
    #[test]
    fn helper_threads_cpu_counts_in_the_measured_query() {
        let stats = QueryStats::default();
        measured(&stats, || {
            let (_, cpu) = std::thread::scope(|s| s.spawn(|| timed(|| spin(30_000_000))).join().unwrap());
            charge_helpers(cpu);
        });
        let counted = stats.cpu_ns.load(std::sync::atomic::Ordering::Relaxed);
        assert!(counted >= 30_000_000, "helper CPU not counted: {counted} ns");
        assert_eq!(take_helpers(), 0, "the charge was consumed by the measurement");
    }
}
