use std::future::Future;
use std::time::Duration;

/// Every wait in the tests is bounded by this.
pub const WAIT: Duration = Duration::from_secs(10);

/// How often [`until`] checks its condition.
const POLL: Duration = Duration::from_millis(20);

/// Awaits `future`, failing the test with `what` if it takes longer than [`WAIT`].
pub async fn within<T>(what: &str, future: impl Future<Output = T>) -> T {
    within_for(what, WAIT, future).await
}

/// [`within`] with a bound of its own, for what takes longer than [`WAIT`] by design.
pub async fn within_for<T>(what: &str, limit: Duration, future: impl Future<Output = T>) -> T {
    match tokio::time::timeout(limit, future).await {
        Ok(value) => value,
        Err(_) => panic!("timed out after {limit:?} waiting for {what}"),
    }
}

/// Checks `condition` every 20 ms until it holds, failing the test with `what` after
/// `limit`: for state that announces no change (health flags, expiries, metrics).
pub async fn until<F, Fut>(what: &str, limit: Duration, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    within_for(what, limit, async {
        while !condition().await {
            tokio::time::sleep(POLL).await;
        }
    })
    .await
}
