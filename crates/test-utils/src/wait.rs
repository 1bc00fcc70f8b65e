//! Waiting on a condition with a time limit (never a bare sleep).

use std::future::Future;
use std::sync::Mutex;
use std::time::Duration;

/// How long [`wait_until`] waits before it fails the test.
pub const WAIT_LIMIT: Duration = Duration::from_secs(60);

/// Polls `probe` (every 50 ms) until `check` holds for its value, and
/// returns that value; panics naming `what` after [`WAIT_LIMIT`].
pub async fn wait_until<T, F>(
    what: &str,
    mut probe: impl FnMut() -> F,
    check: impl Fn(&T) -> bool,
) -> T
where
    F: Future<Output = T>,
{
    let mut tick = tokio::time::interval(Duration::from_millis(50));
    tokio::time::timeout(WAIT_LIMIT, async {
        loop {
            tick.tick().await;
            let value = probe().await;
            if check(&value) {
                return value;
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("timed out waiting: {what}"))
}

/// Waits (at most `wait`, looking every 20 ms) until `check` holds for
/// what `shared` holds; whether it did.
pub(crate) async fn wait_for_shared<T>(
    shared: &Mutex<T>,
    wait: Duration,
    mut check: impl FnMut(&T) -> bool,
) -> bool {
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    tokio::time::timeout(wait, async {
        loop {
            tick.tick().await;
            if check(&shared.lock().unwrap()) {
                return;
            }
        }
    })
    .await
    .is_ok()
}
