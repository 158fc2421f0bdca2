use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use super::conformance::{self, POLICY};
use super::{JobStore, MemoryJobStore, RedisJobStore};
use crate::testing::RedisServer;

#[tokio::test]
async fn memory_store_passes_the_conformance_suite() {
    let failures = conformance::run(|| async { Arc::new(MemoryJobStore::new(POLICY)) as Arc<dyn JobStore> }).await;
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_store_passes_the_conformance_suite() {
    let server = RedisServer::start().expect("redis-server");
    let url = server.url();
    // One server, a fresh queue (its own hash tag) per check: no FLUSHDB, no sharing.
    let queue = AtomicUsize::new(0);
    let failures = conformance::run(|| {
        let name = format!("conformance-{}", queue.fetch_add(1, Ordering::Relaxed));
        let url = url.clone();
        async move {
            let store = RedisJobStore::connect(&url, &name, POLICY).await.expect("connect to the test redis");
            Arc::new(store) as Arc<dyn JobStore>
        }
    })
    .await;
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
