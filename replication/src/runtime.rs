//! openraft's async runtime: tokio, with Raft ticks aligned to a coarse,
//! process-wide grid.
//!
//! Every group runs its own tick task (openraft's `core/tick.rs`), which wakes
//! every 1.5 heartbeat intervals even while its ticks are disabled by
//! quiescing. With the deadlines of 1,000 groups spread over time, a worker
//! thread parks and unparks for nearly every one of them, and the context
//! switches, not the ticks, were most of a quiet node's CPU. Rounding the tick
//! deadline up to the grid makes every group wake at the same few instants a
//! second, handled in one pass by one worker. `sleep_until` is only used by
//! the tick loop; everything else delegates to [`TokioRuntime`] unchanged.

use std::future::Future;
use std::sync::OnceLock;
use std::time::Duration;

use openraft::{AsyncRuntime, OptionalSend, TokioRuntime};

/// Granularity of Raft tick deadlines. Heartbeats (≥ 50 ms in tests, 250 ms
/// by default) and election timeouts stay well above it.
pub const TICK_GRID: Duration = Duration::from_millis(50);

/// tokio with grid-aligned Raft ticks (see the module docs).
#[derive(Debug, Default, PartialEq, Eq, Clone, Copy)]
pub struct GridRuntime;

fn epoch() -> tokio::time::Instant {
    static EPOCH: OnceLock<tokio::time::Instant> = OnceLock::new();
    *EPOCH.get_or_init(tokio::time::Instant::now)
}

/// The first grid instant at or after `deadline`.
pub fn align(deadline: tokio::time::Instant) -> tokio::time::Instant {
    let base = epoch();
    let grid = TICK_GRID.as_nanos();
    let since = deadline.saturating_duration_since(base).as_nanos();
    let slots = since.div_ceil(grid);
    let nanos = u64::try_from(slots.saturating_mul(grid)).unwrap_or(u64::MAX);
    base + Duration::from_nanos(nanos)
}

type Tokio = TokioRuntime;

impl AsyncRuntime for GridRuntime {
    type JoinError = <Tokio as AsyncRuntime>::JoinError;
    type JoinHandle<T: OptionalSend + 'static> = <Tokio as AsyncRuntime>::JoinHandle<T>;
    type Sleep = <Tokio as AsyncRuntime>::Sleep;
    type Instant = <Tokio as AsyncRuntime>::Instant;
    type TimeoutError = <Tokio as AsyncRuntime>::TimeoutError;
    type Timeout<R, T: Future<Output = R> + OptionalSend> = <Tokio as AsyncRuntime>::Timeout<R, T>;
    type ThreadLocalRng = <Tokio as AsyncRuntime>::ThreadLocalRng;
    type OneshotSender<T: OptionalSend> = <Tokio as AsyncRuntime>::OneshotSender<T>;
    type OneshotReceiverError = <Tokio as AsyncRuntime>::OneshotReceiverError;
    type OneshotReceiver<T: OptionalSend> = <Tokio as AsyncRuntime>::OneshotReceiver<T>;

    fn spawn<T>(future: T) -> Self::JoinHandle<T::Output>
    where
        T: Future + OptionalSend + 'static,
        T::Output: OptionalSend + 'static,
    {
        Tokio::spawn(future)
    }

    fn sleep(duration: Duration) -> Self::Sleep {
        Tokio::sleep(duration)
    }

    fn sleep_until(deadline: Self::Instant) -> Self::Sleep {
        Tokio::sleep_until(align(deadline))
    }

    fn timeout<R, F: Future<Output = R> + OptionalSend>(duration: Duration, future: F) -> Self::Timeout<R, F> {
        Tokio::timeout(duration, future)
    }

    fn timeout_at<R, F: Future<Output = R> + OptionalSend>(deadline: Self::Instant, future: F) -> Self::Timeout<R, F> {
        Tokio::timeout_at(deadline, future)
    }

    fn is_panic(join_error: &Self::JoinError) -> bool {
        Tokio::is_panic(join_error)
    }

    fn thread_rng() -> Self::ThreadLocalRng {
        Tokio::thread_rng()
    }

    fn oneshot<T>() -> (Self::OneshotSender<T>, Self::OneshotReceiver<T>)
    where
        T: OptionalSend,
    {
        Tokio::oneshot()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deadlines_round_up_to_the_grid() {
        let base = epoch();
        for ms in [0u64, 1, 49, 50, 51, 374, 375, 1000] {
            let d = base + Duration::from_millis(ms);
            let a = align(d);
            assert!(a >= d, "{ms}: never earlier than asked");
            assert!(a - d < TICK_GRID, "{ms}: less than one grid step later");
            assert_eq!((a - base).as_nanos() % TICK_GRID.as_nanos(), 0, "{ms}: on the grid");
        }
    }
}
