//! Per-tenant limits on a shared coordinator: open `WatchSweep` streams, and the rate of
//! `SubmitSweep` calls (a token bucket). One tenant cannot hold every stream or flood the
//! planner; the others keep their share. A refusal is `RESOURCE_EXHAUSTED` and names
//! the tenant, the limit, its value and its option.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tonic::Status;

/// The limits, the same for every tenant.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TenantLimits {
    /// `WatchSweep` streams a tenant may hold open at once.
    pub streams: usize,
    /// `SubmitSweep` calls a tenant may make per minute (also the burst).
    pub submits_per_minute: u32,
}

/// The default open streams per tenant.
pub const DEFAULT_STREAMS_PER_TENANT: usize = 64;
/// The default submits per tenant and minute.
pub const DEFAULT_SUBMITS_PER_MINUTE: u32 = 60;

impl Default for TenantLimits {
    fn default() -> Self {
        Self { streams: DEFAULT_STREAMS_PER_TENANT, submits_per_minute: DEFAULT_SUBMITS_PER_MINUTE }
    }
}

/// A token bucket: `tokens` left at `at`.
#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// The counters behind [`TenantLimits`].
#[derive(Debug, Default)]
pub struct Quota {
    limits: TenantLimits,
    streams: Mutex<HashMap<String, usize>>,
    submits: Mutex<HashMap<String, Bucket>>,
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Quota {
    pub fn new(limits: TenantLimits) -> Arc<Self> {
        Arc::new(Self { limits, ..Self::default() })
    }

    /// A stream slot for `tenant`, given back when the slot is dropped.
    pub fn open_stream(self: &Arc<Self>, tenant: &str) -> Result<StreamSlot, Status> {
        let mut streams = lock(&self.streams);
        let open = streams.entry(tenant.to_string()).or_default();
        if *open >= self.limits.streams {
            metrics::counter!("wf_tenant_limit_refusals_total", "limit" => "streams").increment(1);
            return Err(Status::resource_exhausted(format!(
                "tenant {tenant} has {open} WatchSweep streams open, the limit (--max-streams-per-tenant {}): \
                 close one first",
                self.limits.streams
            )));
        }
        *open += 1;
        Ok(StreamSlot { quota: self.clone(), tenant: tenant.to_string() })
    }

    /// Streams `tenant` holds open now.
    pub fn open_streams(&self, tenant: &str) -> usize {
        lock(&self.streams).get(tenant).copied().unwrap_or(0)
    }

    /// Takes one submit from `tenant`'s bucket, or says when the next one is allowed.
    pub fn submit(&self, tenant: &str) -> Result<(), Status> {
        self.submit_at(tenant, Instant::now())
    }

    fn submit_at(&self, tenant: &str, now: Instant) -> Result<(), Status> {
        let capacity = f64::from(self.limits.submits_per_minute);
        let per_second = capacity / 60.0;
        let mut buckets = lock(&self.submits);
        let bucket = buckets.entry(tenant.to_string()).or_insert(Bucket { tokens: capacity, at: now });
        let elapsed = now.saturating_duration_since(bucket.at).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * per_second).min(capacity);
        bucket.at = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            return Ok(());
        }
        metrics::counter!("wf_tenant_limit_refusals_total", "limit" => "submits").increment(1);
        let wait = if per_second > 0.0 { ((1.0 - bucket.tokens) / per_second).ceil() } else { f64::INFINITY };
        Err(Status::resource_exhausted(format!(
            "tenant {tenant} submitted more than {} sweeps in a minute (--max-submits-per-minute): retry in {wait} s",
            self.limits.submits_per_minute
        )))
    }
}

/// One open stream of a tenant; dropping it gives the slot back.
#[derive(Debug)]
pub struct StreamSlot {
    quota: Arc<Quota>,
    tenant: String,
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        let mut streams = lock(&self.quota.streams);
        if let Some(open) = streams.get_mut(&self.tenant) {
            *open = open.saturating_sub(1);
            if *open == 0 {
                streams.remove(&self.tenant);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn streams_are_counted_per_tenant_and_given_back_on_drop() {
        let quota = Quota::new(TenantLimits { streams: 2, submits_per_minute: 60 });
        let first = quota.open_stream("a").expect("first");
        let _second = quota.open_stream("a").expect("second");
        let refused = quota.open_stream("a").expect_err("third");
        assert_eq!(refused.code(), tonic::Code::ResourceExhausted);
        assert!(refused.message().contains("tenant a has 2") && refused.message().contains("2)"), "{refused:?}");
        let _other = quota.open_stream("b").expect("another tenant has its own share");
        drop(first);
        assert_eq!(quota.open_streams("a"), 1);
        let _again = quota.open_stream("a").expect("a slot came back");
    }

    #[test]
    fn submits_refill_at_the_rate_per_minute() {
        let quota = Quota::new(TenantLimits { streams: 1, submits_per_minute: 3 });
        let start = Instant::now();
        for _ in 0..3 {
            quota.submit_at("a", start).expect("within the burst");
        }
        let refused = quota.submit_at("a", start).expect_err("the fourth in the same instant");
        assert_eq!(refused.code(), tonic::Code::ResourceExhausted);
        assert!(refused.message().contains("retry in 20 s"), "{}", refused.message());
        quota.submit_at("b", start).expect("another tenant");
        // One token comes back every 20 s.
        quota.submit_at("a", start + Duration::from_secs(10)).expect_err("not yet");
        quota.submit_at("a", start + Duration::from_secs(21)).expect("refilled");
        quota.submit_at("a", start + Duration::from_secs(22)).expect_err("used again");
    }
}
