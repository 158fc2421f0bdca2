use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use super::conformance::{self, POLICY};
use super::{EpochCheck, JobStore, MemoryJobStore, RedisJobStore};
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
    first.start_epoch(1).await.expect("epoch");
    assert_eq!(second.epoch_check().await.expect("check"), EpochCheck::Current(1), "the second adopts the epoch");

    let mut leased = Vec::new();
    // The first keeps the candidates after its first lease; the second then takes
    // some of them, so the first must notice, read again and go on.
    for store in [&first, &second, &second, &second, &first, &second] {
        for _ in 0..10 {
            leased.push(store.lease("w", 30_000, None, T).await.expect("lease").expect("a ready job").key);
        }
    }
    while let Some(lease) = first.lease("w", 30_000, None, T).await.expect("lease") {
        leased.push(lease.key);
    }
    assert!(second.lease("w", 30_000, None, T).await.expect("lease").is_none(), "the queue is drained");
    let distinct: BTreeSet<_> = leased.iter().collect();
    assert_eq!((leased.len(), distinct.len()), (100, 100), "every job leased exactly once");
}

const T: i64 = 1_700_000_000_000;

fn sweep() -> wf_shared::job::SweepId {
    wf_shared::job::SweepId::from_entropy(1)
}

/// A flush, a deleted jobs hash and a server restart (from its AOF) each take the epoch
/// marker away: the store refuses to grant leases until a new epoch is started, so no
/// token of the state it may have lost is handed out again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_store_grants_nothing_after_a_loss_until_a_new_epoch() {
    let mut server = RedisServer::start_persistent().expect("redis-server");
    let store = RedisJobStore::connect(&server.url(), "q", POLICY).await.expect("connect");
    let lost =
        |result: Result<Option<super::Lease>, super::StoreError>| matches!(result, Err(super::StoreError::EpochLost));
    assert!(lost(store.lease("w", 30_000, None, T).await), "a store without an epoch granted a lease");
    store.start_epoch(1).await.expect("epoch");
    store.enqueue(&sweep(), &[conformance::key(1), conformance::key(2)], T).await.expect("enqueue");
    let first = store.lease("w", 30_000, None, T).await.expect("lease").expect("a job");
    assert_eq!((first.token.epoch, first.token.attempt), (1, 1));

    let client = redis::Client::open(server.url()).expect("url");
    let mut raw = client.get_multiplexed_async_connection().await.expect("connection");
    let () = redis::cmd("DEL").arg("wf:{q}:jobs").query_async(&mut raw).await.expect("DEL jobs");
    store.enqueue(&sweep(), &[conformance::key(1)], T).await.expect("enqueue again");
    assert!(lost(store.lease("w", 30_000, None, T).await), "granted after the jobs hash was lost");
    assert_eq!(store.epoch_check().await.expect("check"), EpochCheck::Lost);
    store.start_epoch(2).await.expect("epoch 2");
    let again = store.lease("w", 30_000, None, T).await.expect("lease").expect("a job");
    assert_eq!((again.key, again.token.epoch, again.token.attempt), (conformance::key(1), 2, 1));

    // A restart, even one that kept everything (the AOF), may have lost the last grants.
    std::thread::sleep(std::time::Duration::from_millis(1_100));
    server.restart().expect("restart");
    // The first call may meet the broken connection; the job must get queued.
    for _ in 0..20 {
        if store.enqueue(&sweep(), &[conformance::key(3)], T).await.is_ok() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(store.depth().await.expect("depth").queued, 2, "key 3 queued (key 2's entry has no state)");
    let mut outcome = store.lease("w", 30_000, None, T).await;
    for _ in 0..20 {
        // The connection may need a moment to come back.
        if !matches!(outcome, Err(super::StoreError::Backend(_))) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        outcome = store.lease("w", 30_000, None, T).await;
    }
    let text = format!("{outcome:?}");
    assert!(lost(outcome), "granted after a restart without a new epoch: {text}");
    store.start_epoch(3).await.expect("epoch 3");
    let after = store.lease("w", 30_000, None, T).await.expect("lease").expect("a job");
    assert_eq!(after.token.epoch, 3);
}

/// A partial loss: the ready set, the leased set and the owner hash deleted. Queued jobs
/// would never be leased, leased ones never reaped; repair puts them back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_store_repairs_indices_after_a_partial_loss() {
    let server = RedisServer::start().expect("redis-server");
    let store = RedisJobStore::connect(&server.url(), "q", POLICY).await.expect("connect");
    store.start_epoch(1).await.expect("epoch");
    let keys: Vec<_> = (1..=4).map(conformance::key).collect();
    store.enqueue(&sweep(), &keys, T).await.expect("enqueue");
    let leased = store.lease("w", 30_000, None, T).await.expect("lease").expect("a job");
    assert_eq!(store.repair(T).await.expect("repair"), super::Repaired::default());

    let client = redis::Client::open(server.url()).expect("url");
    let mut raw = client.get_multiplexed_async_connection().await.expect("connection");
    for key in ["wf:{q}:ready", "wf:{q}:leased", "wf:{q}:owner"] {
        let () = redis::cmd("DEL").arg(key).query_async(&mut raw).await.expect("DEL");
    }
    // A stray entry for a job that does not exist.
    let () =
        redis::cmd("ZADD").arg("wf:{q}:ready").arg(T).arg("f".repeat(64)).query_async(&mut raw).await.expect("ZADD");
    let depth = store.depth().await.expect("depth");
    assert_eq!((depth.queued, depth.leased), (1, 0), "only the stray entry is indexed after the loss");

    let repaired = store.repair(T).await.expect("repair");
    assert_eq!(repaired.fixed, 3 + 1 + 1, "3 ready, 1 leased, 1 stray: {repaired:?}");
    assert_eq!(repaired.unowned.len(), 4);
    for key in &repaired.unowned {
        store.set_owner(key, &sweep()).await.expect("owner");
    }
    assert_eq!(store.repair(T).await.expect("again"), super::Repaired::default(), "not idempotent");
    let depth = store.depth().await.expect("depth");
    assert_eq!((depth.queued, depth.leased), (3, 1));
    // The leased job is reaped at its deadline again, and every job is leasable.
    assert_eq!(store.reap(T + 30_000).await.expect("reap"), vec![leased.key]);
    let mut leases = 0;
    while store.lease("w", 30_000, None, T + 10_000_000).await.expect("lease").is_some() {
        leases += 1;
    }
    assert_eq!(leases, 4);
}
