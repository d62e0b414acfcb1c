//! Failure behaviour of the S3 backend on a real server: random transient failures absorbed by the
//! retry wrapper, and multipart uploads that die half-way (a killed writer, a failing payload).

#![cfg(feature = "s3")]

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::TryStreamExt;
use layercas::backend::layers::fault::{FaultBackend, FaultConfig};
use layercas::backend::layers::metrics::MetricsBackend;
use layercas::backend::layers::retry::{RetryBackend, RetryConfig};
use layercas::backend::wrap::Op;
use layercas::backend::{Backend, BackendError, BackendExt, Key, Payload, Prefix, PutMode};
use layercas::testkit::conformance::pattern;

use common::s3server::{s3_backend, server, small_pages_and_parts, unique};

fn key(prefix: &str, name: &str) -> Key {
    Key::new(format!("{prefix}/{name}")).unwrap()
}

/// Writes `data` to a fresh temporary file.
fn temp_file(data: &[u8]) -> tempfile::NamedTempFile {
    let mut f = tempfile::NamedTempFile::new().unwrap();
    std::io::Write::write_all(&mut f, data).unwrap();
    f
}

/// With 30% of all calls failing transiently at random (seeded), the retry wrapper still gets
/// every put, get, ranged get, listing and delete through, and the bytes come back identical,
/// for small objects and for a 12 MiB multipart object streamed from a file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thirty_percent_transient_failures_are_retried() {
    let s3: Arc<dyn Backend> = Arc::new(s3_backend(small_pages_and_parts).await);
    let counted = Arc::new(MetricsBackend::new(s3));
    let fault = Arc::new(FaultBackend::new(
        counted.clone(),
        FaultConfig::random(0.3, 42),
    ));
    let b = RetryBackend::new(
        fault.clone(),
        RetryConfig {
            max_attempts: 12,
            base_delay: Duration::from_millis(2),
            max_delay: Duration::from_millis(100),
        },
    );
    let prefix = unique("faults");
    let start = Instant::now();

    for i in 0..20u8 {
        let data = pattern(1000 + usize::from(i) * 37, i);
        let k = key(&prefix, &format!("small/{i:02}"));
        b.put(&k, Payload::from_bytes(data.clone()), PutMode::Create)
            .await
            .unwrap();
        assert_eq!(b.get_bytes(&k, u64::MAX).await.unwrap(), data);
        assert_eq!(b.get_range(&k, 10..20).await.unwrap(), data.slice(10..20));
    }
    let listed = b
        .list_all(&Prefix::new(format!("{prefix}/small/")).unwrap())
        .await
        .unwrap();
    assert_eq!(listed.len(), 20, "every key once, despite listing failures");

    let big = pattern(12 << 20, 99);
    let file = temp_file(&big);
    let k = key(&prefix, "big");
    b.put(
        &k,
        Payload::from_file(file.path(), 0, big.len() as u64),
        PutMode::Overwrite,
    )
    .await
    .unwrap();
    let got = b.get(&k).await.unwrap();
    let body: Vec<Bytes> = got.body.try_collect().await.unwrap();
    assert!(body.concat() == big[..], "12 MiB object byte-identical");

    for i in 0..20u8 {
        b.delete(&key(&prefix, &format!("small/{i:02}")))
            .await
            .unwrap();
    }
    let snap = counted.metrics().snapshot();
    eprintln!(
        "30% faults: {:?}, {} faults injected, {} calls reached S3 ({} puts, {} gets, {} lists)",
        start.elapsed(),
        fault.injected(),
        snap.total_requests(),
        snap.op(Op::Put).requests,
        snap.op(Op::Get).requests,
        snap.op(Op::List).requests,
    );
    assert!(
        fault.injected() >= 10,
        "faults were injected: {}",
        fault.injected()
    );
}

/// A multipart upload whose writer is killed half-way (its future dropped, as a crash would leave
/// it) creates no visible object; `list_incomplete_uploads` shows the leftover and
/// `abort_incomplete_uploads` removes it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_multipart_upload_is_invisible_and_cleanable() {
    let s3 = Arc::new(
        s3_backend(|c| {
            small_pages_and_parts(c);
            c.upload_concurrency = 1;
        })
        .await,
    );
    let prefix = unique("killed");
    let data = pattern(40 << 20, 5);
    let file = temp_file(&data);
    let k = key(&prefix, "victim");
    let payload = Payload::from_file(file.path(), 0, data.len() as u64);
    let writer = {
        let (s3, k) = (s3.clone(), k.clone());
        tokio::spawn(async move { s3.put(&k, payload, PutMode::Create).await })
    };
    // Kill the writer as soon as its upload exists on the server (8 parts, one at a time, are
    // still to go).
    let deadline = Instant::now() + Duration::from_secs(30);
    while s3.list_incomplete_uploads().await.unwrap().is_empty() {
        assert!(Instant::now() < deadline, "the upload never started");
        assert!(
            !writer.is_finished(),
            "the upload finished before it could be killed"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    writer.abort();
    assert!(writer.await.unwrap_err().is_cancelled());

    assert!(
        s3.head(&k).await.is_err_and(|e| e.is_not_found()),
        "no object"
    );
    let listed = s3
        .list_all(&Prefix::new(format!("{prefix}/")).unwrap())
        .await
        .unwrap();
    assert!(listed.is_empty(), "nothing listed: {listed:?}");

    let leftovers = s3.list_incomplete_uploads().await.unwrap();
    assert_eq!(leftovers.len(), 1, "{leftovers:?}");
    assert!(leftovers[0].key.ends_with(k.as_str()));
    // A margin of an hour spares this fresh upload; zero takes it. (moto 5.2.5 reports every
    // upload as initiated on 2010-11-10, so there the margin spares nothing.)
    if server().kind != "moto" {
        let spared = s3.abort_incomplete_uploads(Duration::from_secs(3600)).await;
        assert!(spared.unwrap().is_empty());
    }
    let aborted = s3.abort_incomplete_uploads(Duration::ZERO).await.unwrap();
    assert_eq!(aborted, leftovers);
    assert!(s3.list_incomplete_uploads().await.unwrap().is_empty());

    // The key is free: a create succeeds now.
    s3.put(&k, Payload::from_bytes(pattern(10, 1)), PutMode::Create)
        .await
        .unwrap();
}

/// A multipart upload whose payload fails half-way (the file is shorter than promised) reports
/// the payload's error, not a transport error, and aborts its own upload: nothing is left.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_payload_aborts_its_multipart_upload() {
    let s3 = s3_backend(small_pages_and_parts).await;
    let prefix = unique("short");
    let data = pattern(11 << 20, 3);
    let file = temp_file(&data);
    let k = key(&prefix, "short");
    // Promise 16 MiB of an 11 MiB file: the third part runs dry.
    let err = s3
        .put(
            &k,
            Payload::from_file(file.path(), 0, 16 << 20),
            PutMode::Overwrite,
        )
        .await
        .unwrap_err();
    assert!(matches!(err, BackendError::Other { .. }), "{err:?}");
    assert!(err.to_string().contains("shorter"), "{err}");
    assert!(s3.head(&k).await.is_err_and(|e| e.is_not_found()));
    assert!(s3.list_incomplete_uploads().await.unwrap().is_empty());
    // And the same for a single-request upload.
    let small = temp_file(b"abc");
    let err = s3
        .put(
            &k,
            Payload::from_file(small.path(), 0, 10),
            PutMode::Overwrite,
        )
        .await
        .unwrap_err();
    assert!(err.to_string().contains("shorter"), "{err}");
    assert!(s3.head(&k).await.is_err_and(|e| e.is_not_found()));
}
