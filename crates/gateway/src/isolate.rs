//! The node's background jobs (sweepers, presence, NATS readers, interest release) run for
//! the node's whole life, so one panic must not end one for good: a bug, or input that
//! slipped past validation, would silently stop what the job does (pings, typing expiry,
//! deliveries) on that node. Each job runs its per-entry (or per-pass) work through these
//! helpers, which log the panic and go on with the next entry.

use std::future::Future;
use std::panic::AssertUnwindSafe;

use futures_util::{FutureExt, Stream, StreamExt};

use crate::metrics;

/// Runs one entry's async work; a panic there is logged, counted and skipped.
pub async fn isolated(job: &'static str, work: impl Future<Output = ()>) {
    // The work's captures are dropped with the panic; what it shares with the rest of the
    // job (maps, locks that do not poison) stays usable, which is what skipping relies on.
    if AssertUnwindSafe(work).catch_unwind().await.is_err() {
        skipped(job);
    }
}

/// Runs one entry's synchronous work; a panic there is logged, counted and skipped.
pub fn isolated_sync(job: &'static str, work: impl FnOnce()) {
    if std::panic::catch_unwind(AssertUnwindSafe(work)).is_err() {
        skipped(job);
    }
}

/// Hands every item of `items` to `handle`, one after the other, until the stream ends;
/// an item whose handling panics is skipped.
pub async fn for_each<S, F, Fut>(job: &'static str, items: S, mut handle: F)
where
    S: Stream,
    F: FnMut(S::Item) -> Fut,
    Fut: Future<Output = ()>,
{
    let mut items = std::pin::pin!(items);
    while let Some(item) = items.next().await {
        isolated(job, handle(item)).await;
    }
}

fn skipped(job: &'static str) {
    tracing::error!(job, "background job panicked on one entry; skipped it");
    metrics::counter!(metrics::JOB_PANICS, "job" => job).increment(1);
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    #[tokio::test]
    async fn an_entry_that_panics_is_skipped_and_the_next_ones_run() {
        let handled = Mutex::new(Vec::new());
        let items = futures_util::stream::iter(["a", "bad", "b"]);
        for_each("test", items, |item| {
            let handled = &handled;
            async move {
                assert_ne!(item, "bad", "a bad entry");
                handled.lock().unwrap().push(item);
            }
        })
        .await;
        assert_eq!(*handled.lock().unwrap(), ["a", "b"]);

        let mut after = 0;
        isolated("test", async { panic!("a bad entry") }).await;
        isolated_sync("test", || panic!("a bad entry"));
        isolated_sync("test", || after += 1);
        assert_eq!(after, 1, "the work after a panic runs");
    }
}
