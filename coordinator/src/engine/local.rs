//! The one-node MergeTree engine behind the async [`TableEngine`]: every
//! call that touches disk runs on a blocking thread.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use arrow::array::RecordBatch;
use async_trait::async_trait;
use storage::Part;
use storage::local::{BlockDedup, LocalTable, MutationParser};
use storage::mutation::MutationCommand;

use super::{EngineKind, InsertOptions, MergeInfo, MutationInfo, MutationSync, OptimizeOptions, TableEngine};
use crate::error::{EngineError, Result};

/// A MergeTree table on this node.
#[derive(Debug)]
pub struct LocalEngine {
    inner: Arc<LocalTable>,
}

impl LocalEngine {
    /// Opens (or creates) the table in `dir`, recovering its parts. Blocks:
    /// call it off the runtime (at startup, or in `spawn_blocking`).
    pub fn open(dir: &Path, name: &str, table: Arc<storage::Table>, parse: &MutationParser) -> Result<LocalEngine> {
        Ok(LocalEngine { inner: Arc::new(LocalTable::open(dir, name, table, parse)?) })
    }

    /// Runs `f` on a blocking thread.
    async fn off_runtime<T: Send + 'static>(
        &self,
        f: impl FnOnce(&LocalTable) -> storage::Result<T> + Send + 'static,
    ) -> Result<T> {
        let inner = self.inner.clone();
        let (out, cpu) = tokio::task::spawn_blocking(move || storage::cpu::timed(|| f(&inner)))
            .await
            .map_err(|e| EngineError::Task(e.to_string()))?;
        // The thread that awaited is the one the query's accounting measures.
        storage::cpu::charge_helpers(cpu);
        Ok(out?)
    }
}

#[async_trait]
impl TableEngine for LocalEngine {
    fn kind(&self) -> EngineKind {
        EngineKind::Local
    }

    fn storage(&self) -> &Arc<storage::Table> {
        self.inner.storage()
    }

    async fn insert(&self, batch: &RecordBatch, opts: &InsertOptions) -> Result<usize> {
        let batch = batch.clone();
        let dedup = BlockDedup { deduplicate: opts.deduplicate, token: opts.token.clone(), index: opts.index };
        self.off_runtime(move |t| t.insert(&batch, &dedup)).await
    }

    fn snapshot(&self) -> Vec<Arc<Part>> {
        self.inner.snapshot()
    }

    fn merge_step(&self) -> Result<bool> {
        Ok(self.inner.merge_step()?)
    }

    async fn optimize(&self, opts: &OptimizeOptions) -> Result<()> {
        let opts = opts.clone();
        self.off_runtime(move |t| t.optimize(&opts)).await
    }

    async fn mutate(&self, commands: Vec<MutationCommand>, text: &str, sync: MutationSync) -> Result<()> {
        let text = text.to_string();
        let id = self.off_runtime(move |t| t.record_mutation(commands, &text)).await?;
        if sync == MutationSync::Async {
            return Ok(());
        }
        // One replica: 1 and 2 wait alike, for the merge thread's rewrites.
        loop {
            let Some(m) = self.inner.mutations().into_iter().find(|m| m.mutation_id == id) else {
                return Err(EngineError::MutationKilled { id });
            };
            if m.is_done {
                return Ok(());
            }
            if !m.latest_fail_reason.is_empty() {
                return Err(EngineError::MutationFailed {
                    id,
                    part: m.latest_failed_part,
                    reason: m.latest_fail_reason,
                });
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    async fn kill_mutation(&self, id: &str) -> Result<bool> {
        let id = id.to_string();
        self.off_runtime(move |t| t.kill_mutation(&id)).await
    }

    async fn drop_partition(&self, partition_id: &str) -> Result<()> {
        let id = partition_id.to_string();
        self.off_runtime(move |t| t.drop_partition(&id)).await
    }

    async fn truncate(&self) -> Result<()> {
        self.off_runtime(|t| t.truncate()).await
    }

    fn set_merges_stopped(&self, stopped: bool) {
        self.inner.set_merges_stopped(stopped)
    }

    fn cleanup(&self) -> Result<()> {
        Ok(self.inner.cleanup()?)
    }

    fn outdated(&self) -> Vec<Arc<Part>> {
        self.inner.outdated()
    }

    fn merges(&self) -> Vec<MergeInfo> {
        self.inner.merges()
    }

    fn mutations(&self) -> Vec<MutationInfo> {
        self.inner.mutations()
    }
}
