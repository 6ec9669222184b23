//! Helpers shared by this crate's unit tests.

use std::time::Duration;

/// Polls `what` every millisecond until it holds; fails the test after 5 s.
pub(crate) async fn until(what: impl Fn() -> bool) {
    tokio::time::timeout(Duration::from_secs(5), async {
        while !what() {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    })
    .await
    .expect("condition within 5 s");
}
