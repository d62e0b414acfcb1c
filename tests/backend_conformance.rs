//! Runs the one conformance suite (`layercas::testkit::conformance`) against every backend and
//! every wrapper: local filesystem, the in-memory test backend, S3 on a real SeaweedFS server
//! (moto with `LAYERCAS_S3_SERVER=moto`), each wrapper around the local backend, retry + fault
//! around S3, and the production stack exactly as `backend::open::standard_stack` builds it around
//! each of the three.

mod common;

use std::sync::Arc;
use std::time::Duration;
#[cfg(feature = "s3")]
use std::time::Instant;

use layercas::backend::Backend;
use layercas::backend::layers::fault::{FaultBackend, FaultConfig};
use layercas::backend::layers::limit::LimitBackend;
use layercas::backend::layers::metrics::MetricsBackend;
use layercas::backend::layers::retry::{RetryBackend, RetryConfig};
use layercas::backend::layers::timeout::{TimeoutBackend, TimeoutConfig};
use layercas::backend::local::LocalBackend;
use layercas::backend::open::{StackConfig, standard_stack};
use layercas::backend::wrap::Op;
use layercas::testkit::conformance::{Capabilities, run_all};
use layercas::testkit::memory::MemoryBackend;

#[cfg(feature = "s3")]
use common::s3server::{s3_backend, small_pages_and_parts, unique};

fn local() -> (tempfile::TempDir, Arc<dyn Backend>) {
    let dir = tempfile::tempdir().expect("tempdir");
    let backend = LocalBackend::new(dir.path()).expect("local backend");
    (dir, Arc::new(backend))
}

/// Quick retries so fault tests stay fast.
fn fast_retry() -> RetryConfig {
    RetryConfig {
        max_attempts: 8,
        base_delay: Duration::from_millis(2),
        max_delay: Duration::from_millis(50),
    }
}

/// The local-filesystem backend keeps the whole contract.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_fs() {
    let (_dir, b) = local();
    run_all(&*b, "t/", &Capabilities::default()).await;
}

/// The in-memory test backend keeps the whole contract too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory() {
    let b = MemoryBackend::new();
    run_all(&b, "t/", &Capabilities::default()).await;
    assert!(!b.is_empty());
}

/// Runs the suite over `base` wrapped by `standard_stack` with its default settings, and checks
/// that the stack's metrics saw the calls.
async fn through_standard_stack(base: Arc<dyn Backend>, prefix: &str) {
    let opened = standard_stack(base, &StackConfig::default());
    run_all(&*opened.backend, prefix, &Capabilities::default()).await;
    let snap = opened.metrics.snapshot();
    assert!(snap.op(Op::Put).requests >= 25 + 16, "{snap:?}");
    assert!(snap.op(Op::List).requests >= 5, "{snap:?}");
}

/// The production stack (retry → limit → timeout → metrics) around the local backend.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn standard_stack_around_local() {
    let (_dir, b) = local();
    through_standard_stack(b, "t/").await;
}

/// The production stack around the in-memory backend.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn standard_stack_around_memory() {
    through_standard_stack(Arc::new(MemoryBackend::new()), "t/").await;
}

#[cfg(feature = "s3")]
/// The production stack around S3 on a real server (small pages and parts, as in `s3`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn standard_stack_around_s3() {
    let s3: Arc<dyn Backend> = Arc::new(s3_backend(small_pages_and_parts).await);
    through_standard_stack(s3, &format!("{}/", unique("t"))).await;
}

/// The retry wrapper changes nothing when nothing fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_around_local() {
    let (_dir, b) = local();
    let b = RetryBackend::new(b, fast_retry());
    run_all(&b, "t/", &Capabilities::default()).await;
}

/// Generous timeouts change nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeout_around_local() {
    let (_dir, b) = local();
    let b = TimeoutBackend::new(b, TimeoutConfig::default());
    run_all(&b, "t/", &Capabilities::default()).await;
}

/// Concurrency limits of 1 read and 1 write still let every check (including 16 racing
/// creators and a listing walked while objects are read) complete.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limit_around_local() {
    let (_dir, b) = local();
    let b = LimitBackend::new(b, 1, 1);
    run_all(&b, "t/", &Capabilities::default()).await;
}

/// The metrics wrapper passes everything through and counts it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_around_local() {
    let (_dir, b) = local();
    let b = MetricsBackend::new(b);
    run_all(&b, "t/", &Capabilities::default()).await;
    let snap = b.metrics().snapshot();
    assert!(snap.op(Op::Put).requests >= 25 + 16);
    assert!(snap.op(Op::Put).bytes_out >= 12 << 20);
    assert!(snap.op(Op::Get).bytes_in >= 12 << 20);
    assert!(snap.op(Op::Head).not_found >= 1);
    assert!(snap.op(Op::List).requests >= 5);
}

/// Retry around a fault injector that fails the first two attempts of every (operation, key):
/// every check still passes, and faults were really injected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_and_fault_around_local() {
    let (_dir, b) = local();
    let fault = Arc::new(FaultBackend::new(b, FaultConfig::fail_first(2)));
    let b = RetryBackend::new(fault.clone(), fast_retry());
    run_all(&b, "t/", &Capabilities::default()).await;
    assert!(fault.injected() > 50, "injected {}", fault.injected());
}

#[cfg(feature = "s3")]
/// S3 on a real server, with 7-key pages (so the 25-key listing takes 4 pages) and 5 MiB
/// multipart parts (so the 12 MiB object takes 3).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3() {
    let b = s3_backend(small_pages_and_parts).await;
    let start = Instant::now();
    run_all(&b, &format!("{}/", unique("t")), &Capabilities::default()).await;
    eprintln!("s3 conformance: {:?}", start.elapsed());
}

#[cfg(feature = "s3")]
/// The production stack (metrics → retry → timeout → limit → S3) around a fault injector failing
/// 20% of calls at random: every check passes. Prints the request counts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_full_stack_with_faults() {
    let s3: Arc<dyn Backend> = Arc::new(s3_backend(small_pages_and_parts).await);
    let fault = Arc::new(FaultBackend::new(s3, FaultConfig::random(0.2, 7)));
    let limited = Arc::new(LimitBackend::new(fault.clone(), 8, 4));
    let timed = Arc::new(TimeoutBackend::new(limited, TimeoutConfig::default()));
    let retried = Arc::new(RetryBackend::new(timed, fast_retry()));
    let b = MetricsBackend::new(retried);
    let start = Instant::now();
    run_all(&b, &format!("{}/", unique("t")), &Capabilities::default()).await;
    let snap = b.metrics().snapshot();
    eprintln!(
        "s3 full stack: {:?}, {} calls, {} faults injected\n{}",
        start.elapsed(),
        snap.total_requests(),
        fault.injected(),
        serde_json::to_string(
            &snap
                .ops
                .iter()
                .map(|(k, v)| (k, v.requests))
                .collect::<Vec<_>>()
        )
        .unwrap()
    );
    assert!(fault.injected() > 0);
}
