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

/// Two coordinators on one queue: each keeps candidates the other may take. Every job is
/// still leased exactly once, and neither runs dry while jobs are ready.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_stores_sharing_a_queue_lease_each_job_once() {
    use std::collections::BTreeSet;

    use wf_shared::job::SweepId;

    const T: i64 = 1_700_000_000_000;
    let server = RedisServer::start().expect("redis-server");
    let first = RedisJobStore::connect(&server.url(), "shared", POLICY).await.expect("connect");
    let second = RedisJobStore::connect(&server.url(), "shared", POLICY).await.expect("connect");
    let keys: Vec<_> = (0..100).map(conformance::key).collect();
    first.enqueue(&SweepId::from_entropy(1), &keys, T).await.expect("enqueue");

    let mut leased = Vec::new();
    // The first keeps the candidates after its first lease; the second then takes
    // some of them, so the first must notice, read again and go on.
    for store in [&first, &second, &second, &second, &first, &second] {
        for _ in 0..10 {
            leased.push(store.lease("w", 30_000, T).await.expect("lease").expect("a ready job").key);
        }
    }
    while let Some(lease) = first.lease("w", 30_000, T).await.expect("lease") {
        leased.push(lease.key);
    }
    assert!(second.lease("w", 30_000, T).await.expect("lease").is_none(), "the queue is drained");
    let distinct: BTreeSet<_> = leased.iter().collect();
    assert_eq!((leased.len(), distinct.len()), (100, 100), "every job leased exactly once");
}
