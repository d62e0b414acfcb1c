//! A virtual-time adversarial backend for the gc simulation (tests/gc_sim.rs): a `Backend` around
//! a real one that, from a seeded generator, delays requests before they are sent and answers
//! after they were served, pauses requests on chosen key prefixes for far longer than any gc
//! window, and lets writes time out from the caller's point of view while they still land later.
//!
//! Meant to sit *under* the production stack (retry, timeout, limit, metrics), so that retries
//! and timeouts go through the real layers. Needs tokio with paused time: every delay is a
//! `tokio::time::sleep`. Holds no knowledge of what keys mean beyond their prefixes.

use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::{self, BoxStream, StreamExt};
use layercas::backend::{
    Backend, BackendError, DynBackend, GetResult, Key, ObjectMeta, Payload, Prefix, PutMode,
};

/// A small seeded generator (splitmix64), shared by the simulation's planning and the adversary.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed ^ 0x5DEE_CE66_D1CE_4E5B)
    }

    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (0 when `n` is 0).
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.next() % n }
    }

    /// True with probability `per_mille / 1000`.
    pub fn chance(&mut self, per_mille: u64) -> bool {
        self.below(1000) < per_mille
    }

    /// Uniform in `lo..=hi`.
    pub fn between(&mut self, lo: Duration, hi: Duration) -> Duration {
        let (lo, hi) = (lo.as_millis() as u64, hi.as_millis() as u64);
        Duration::from_millis(lo + self.below(hi.saturating_sub(lo) + 1))
    }

    /// A generator for a sub-stream (so that one party's draws do not shift another's).
    pub fn fork(&mut self) -> Rng {
        Rng::new(self.next())
    }
}

/// What the adversary does to one party's requests.
#[derive(Clone, Debug)]
pub struct Profile {
    /// Every request waits up to this long before it is sent and again before it is answered.
    pub jitter: Duration,
    /// Key prefixes whose requests may be paused (`""` matches everything).
    pub pause_prefixes: Vec<&'static str>,
    /// Chance (per mille) that a request on a paused prefix is held for `pause_min..=pause_max`.
    pub pause_per_mille: u64,
    pub pause_min: Duration,
    pub pause_max: Duration,
    /// Chance (per mille) that a write (put or delete) fails for its caller after up to
    /// `late_fail_max` but is served anyway, up to `late_land_max` after it was sent.
    pub late_per_mille: u64,
    pub late_fail_max: Duration,
    pub late_land_max: Duration,
}

impl Profile {
    /// Small jitter only.
    pub fn calm() -> Profile {
        Profile {
            jitter: Duration::from_millis(5),
            pause_prefixes: Vec::new(),
            pause_per_mille: 0,
            pause_min: Duration::ZERO,
            pause_max: Duration::ZERO,
            late_per_mille: 0,
            late_fail_max: Duration::ZERO,
            late_land_max: Duration::ZERO,
        }
    }
}

/// What the adversary did, over every party of one schedule, and a log of every request and
/// event in virtual time (kept for every schedule, so that a failing one is printed whole even
/// when its replay takes another path).
#[derive(Debug)]
pub struct Stats {
    pub longest_pause_ms: AtomicU64,
    pub pauses: AtomicU64,
    pub late_writes: AtomicU64,
    /// Chunks the writers' successful checkpoints stored as deltas (format-spec 5.2).
    pub deltas: AtomicU64,
    start: tokio::time::Instant,
    trace: Mutex<Vec<String>>,
    /// Keys some party deleted.
    deleted: Mutex<std::collections::HashSet<String>>,
    /// Keys a late write re-created after some party had deleted them (a manifest gc dropped by
    /// retention, brought back by its writer's first create attempt).
    pub resurrected: Mutex<std::collections::HashSet<String>>,
}

impl Stats {
    /// Stats counted from now (virtual time).
    pub fn start() -> Stats {
        Stats {
            longest_pause_ms: AtomicU64::new(0),
            pauses: AtomicU64::new(0),
            late_writes: AtomicU64::new(0),
            deltas: AtomicU64::new(0),
            start: tokio::time::Instant::now(),
            trace: Mutex::default(),
            deleted: Mutex::default(),
            resurrected: Mutex::default(),
        }
    }

    /// Logs `what` at the current virtual time.
    pub fn log(&self, what: impl FnOnce() -> String) {
        let at = self.start.elapsed().as_secs_f64();
        let line = format!("{at:>10.3}s {}", what());
        self.trace.lock().unwrap().push(line);
    }

    /// The log so far.
    pub fn trace(&self) -> Vec<String> {
        self.trace.lock().unwrap().clone()
    }

    fn saw_pause(&self, d: Duration) {
        self.pauses.fetch_add(1, Ordering::Relaxed);
        self.longest_pause_ms
            .fetch_max(d.as_millis() as u64, Ordering::Relaxed);
    }
}

/// The adversarial wrapper. One per party (writer, each gc), each with its own generator.
#[derive(Debug)]
pub struct Adversary {
    name: String,
    inner: DynBackend,
    rng: Mutex<Rng>,
    profile: Profile,
    stats: Arc<Stats>,
}

/// The fate of one request.
struct Fate {
    before: Duration,
    after: Duration,
    /// For writes: `(fail the caller after, land after)`.
    late: Option<(Duration, Duration)>,
}

impl Adversary {
    pub fn wrap(
        name: &str,
        inner: &DynBackend,
        rng: Rng,
        profile: Profile,
        stats: &Arc<Stats>,
    ) -> DynBackend {
        Arc::new(Adversary {
            name: name.to_string(),
            inner: inner.clone(),
            rng: Mutex::new(rng),
            profile,
            stats: stats.clone(),
        })
    }

    fn fate(&self, op: &str, key: &str, write: bool) -> Fate {
        let f = self.draw(key, write);
        self.stats.log(|| {
            let late = f
                .late
                .map(|(fail, land)| format!(" LATE(fail {fail:?}, land {land:?})"));
            format!(
                "{} {op} {key} +{:?}/+{:?}{}",
                self.name,
                f.before,
                f.after,
                late.unwrap_or_default()
            )
        });
        f
    }

    fn draw(&self, key: &str, write: bool) -> Fate {
        let p = &self.profile;
        let mut rng = self.rng.lock().unwrap();
        let mut before = rng.between(Duration::ZERO, p.jitter);
        let mut after = rng.between(Duration::ZERO, p.jitter);
        let paused = p.pause_prefixes.iter().any(|pre| key.starts_with(pre));
        if paused && rng.chance(p.pause_per_mille) {
            let d = rng.between(p.pause_min, p.pause_max);
            self.stats.saw_pause(d);
            // Held on the way in (never sent if the caller gives up) or on the way out (served,
            // answer lost if the caller gives up).
            if rng.chance(500) {
                before += d;
            } else {
                after += d;
            }
        }
        let late = (write && rng.chance(p.late_per_mille)).then(|| {
            let fail = rng.between(Duration::ZERO, p.late_fail_max);
            let land = rng.between(Duration::ZERO, p.late_land_max);
            self.stats.late_writes.fetch_add(1, Ordering::Relaxed);
            self.stats.saw_pause(land);
            (fail, land)
        });
        Fate {
            before,
            after,
            late,
        }
    }

    /// Runs `call` as `fate` says; a late write is spawned and the caller told it failed.
    async fn act<T, F, Fut>(
        &self,
        op: &'static str,
        key: &Key,
        fate: Fate,
        call: F,
    ) -> Result<T, BackendError>
    where
        F: FnOnce(DynBackend) -> Fut,
        Fut: std::future::Future<Output = Result<T, BackendError>> + Send + 'static,
        T: Send + 'static,
    {
        if let Some((fail, land)) = fate.late {
            let work = call(self.inner.clone());
            let (stats, what) = (self.stats.clone(), format!("{} {op} {key}", self.name));
            let key_s = key.to_string();
            tokio::spawn(async move {
                tokio::time::sleep(land).await;
                let r = work.await;
                if r.is_ok() && op == "delete" {
                    stats.deleted.lock().unwrap().insert(key_s.clone());
                } else if r.is_ok() && stats.deleted.lock().unwrap().contains(&key_s) {
                    stats.resurrected.lock().unwrap().insert(key_s);
                }
                stats.log(|| {
                    format!(
                        "{what} LANDED late: {}",
                        if r.is_ok() { "ok" } else { "error" }
                    )
                });
            });
            tokio::time::sleep(fail).await;
            return Err(BackendError::transient(op, key, "injected: answer lost"));
        }
        tokio::time::sleep(fate.before).await;
        let out = call(self.inner.clone()).await;
        if op == "delete" && out.is_ok() {
            self.stats.deleted.lock().unwrap().insert(key.to_string());
        }
        self.stats.log(|| match &out {
            Ok(_) => format!("{} {op} {key} served", self.name),
            Err(e) => format!("{} {op} {key} served: {e}", self.name),
        });
        tokio::time::sleep(fate.after).await;
        out
    }
}

#[async_trait]
impl Backend for Adversary {
    fn list(&self, prefix: &Prefix) -> BoxStream<'static, Result<ObjectMeta, BackendError>> {
        let fate = self.fate("list", prefix.as_str(), false);
        let (inner, prefix) = (self.inner.clone(), prefix.clone());
        stream::once(async move {
            tokio::time::sleep(fate.before).await;
            let items: Vec<_> = inner.list(&prefix).collect().await;
            tokio::time::sleep(fate.after).await;
            stream::iter(items)
        })
        .flatten()
        .boxed()
    }

    async fn put(&self, key: &Key, payload: Payload, mode: PutMode) -> Result<(), BackendError> {
        let fate = self.fate("put", key.as_str(), true);
        let k = key.clone();
        self.act("put", key, fate, move |b| async move {
            b.put(&k, payload, mode).await
        })
        .await
    }

    async fn get(&self, key: &Key) -> Result<GetResult, BackendError> {
        let fate = self.fate("get", key.as_str(), false);
        let k = key.clone();
        self.act("get", key, fate, move |b| async move {
            // Read the body now: the answer reflects the object as it was when served.
            let got = b.get(&k).await?;
            let body = layercas::backend::collect_stream(got.body, u64::MAX).await?;
            Ok((got.meta, body))
        })
        .await
        .map(|(meta, body)| GetResult {
            meta,
            body: stream::once(async move { Ok(body) }).boxed(),
        })
    }

    async fn get_range(&self, key: &Key, range: Range<u64>) -> Result<Bytes, BackendError> {
        let fate = self.fate("get_range", key.as_str(), false);
        let k = key.clone();
        self.act("get_range", key, fate, move |b| async move {
            b.get_range(&k, range).await
        })
        .await
    }

    async fn head(&self, key: &Key) -> Result<ObjectMeta, BackendError> {
        let fate = self.fate("head", key.as_str(), false);
        let k = key.clone();
        self.act("head", key, fate, move |b| async move { b.head(&k).await })
            .await
    }

    async fn delete(&self, key: &Key) -> Result<(), BackendError> {
        let fate = self.fate("delete", key.as_str(), true);
        let k = key.clone();
        self.act(
            "delete",
            key,
            fate,
            move |b| async move { b.delete(&k).await },
        )
        .await
    }
}
