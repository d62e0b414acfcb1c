//! The backend conformance suite: one set of checks of the [`Backend`] contract that every backend
//! and every wrapper runs (from `tests/backend_conformance.rs`), with the differences between
//! backends passed in as [`Capabilities`].
//!
//! Owns the checks only. Must not know any concrete backend. Compiled into the library (hidden
//! from the docs) so that integration tests can call it; it writes only under the key prefix it is
//! given and into its own temporary files, and panics on the first violation, naming it.

use std::collections::BTreeMap;
use std::path::PathBuf;

use bytes::Bytes;
use futures::TryStreamExt;

use crate::backend::{
    Backend, BackendError, BackendExt, KEY_PUNCTUATION, Key, Payload, Prefix, PutMode,
};

/// What the backend under test can do, or how far to push it.
#[derive(Clone, Debug)]
pub struct Capabilities {
    /// Objects written for the listing test; make it several times the backend's list page size
    /// so that pagination is exercised.
    pub list_keys: usize,
    /// Whether concurrent conditional creates of one key are atomic (exactly one winner).
    pub atomic_create: bool,
    /// Whether listings report etags.
    pub etag_in_list: bool,
    /// Size of the large-object test (streamed from a file), or `None` to skip it.
    pub large_object: Option<u64>,
}

impl Default for Capabilities {
    /// Everything the contract promises; 25 listed keys; a 12 MiB large object.
    fn default() -> Self {
        Capabilities {
            list_keys: 25,
            atomic_create: true,
            etag_in_list: true,
            large_object: Some(12 << 20),
        }
    }
}

/// Runs every check under `prefix` (which should be unique to this run, e.g. `t-<random>/`).
pub async fn run_all(b: &dyn Backend, prefix: &str, caps: &Capabilities) {
    put_get_head_overwrite(b, prefix).await;
    empty_objects(b, prefix).await;
    listing_paginates(b, prefix, caps).await;
    listing_excludes_siblings(b, prefix).await;
    ranged_reads_at_the_edges(b, prefix).await;
    conditional_create(b, prefix).await;
    concurrent_creates_have_one_winner(b, prefix, caps).await;
    conditional_update(b, prefix).await;
    delete_of_missing_keys_succeeds(b, prefix).await;
    batched_deletes(b, prefix).await;
    every_allowed_character(b, prefix).await;
    invalid_keys_are_rejected();
    if let Some(size) = caps.large_object {
        large_object_from_file(b, prefix, size).await;
    }
}

fn key(prefix: &str, name: &str) -> Key {
    Key::new(format!("{prefix}{name}")).expect("test key is valid")
}

/// Deterministic, position-dependent bytes (so a shifted or reordered read is caught).
pub fn pattern(len: usize, seed: u8) -> Bytes {
    (0..len)
        .map(|i| (i as u32).wrapping_mul(2_654_435_761).to_le_bytes()[i % 4] ^ seed)
        .collect::<Vec<u8>>()
        .into()
}

async fn read_all(b: &dyn Backend, k: &Key) -> Bytes {
    b.get_bytes(k, u64::MAX)
        .await
        .unwrap_or_else(|e| panic!("get {k}: {e}"))
}

/// Put, get, head and overwrite one object: the bytes and sizes come back exactly, an overwrite
/// replaces the content and the etag, and a missing key is `NotFound` for get, head and ranges.
pub async fn put_get_head_overwrite(b: &dyn Backend, prefix: &str) {
    let k = key(prefix, "basic/object");
    let first = pattern(1000, 1);
    b.put(&k, Payload::from_bytes(first.clone()), PutMode::Overwrite)
        .await
        .expect("put");
    assert_eq!(read_all(b, &k).await, first);
    let meta = b.get(&k).await.expect("get").meta; // body dropped unread
    assert_eq!(meta.size, 1000);
    assert_eq!(meta.key, k);
    let head = b.head(&k).await.expect("head");
    assert_eq!(head.size, 1000);
    assert!(head.etag.is_some(), "head reports an etag");

    let second = Payload::from_parts(vec![pattern(300, 2), pattern(200, 3)]);
    b.put(&k, second.clone(), PutMode::Overwrite)
        .await
        .expect("overwrite");
    assert_eq!(read_all(b, &k).await, second.to_bytes().await.unwrap());
    let head2 = b.head(&k).await.expect("head");
    assert_eq!(head2.size, 500);
    assert_ne!(
        head.etag, head2.etag,
        "an overwrite with new content changes the etag"
    );

    let missing = key(prefix, "basic/missing");
    assert!(
        b.get(&missing)
            .await
            .err()
            .is_some_and(|e| e.is_not_found())
    );
    assert!(b.head(&missing).await.is_err_and(|e| e.is_not_found()));
    assert!(
        b.get_range(&missing, 0..1)
            .await
            .is_err_and(|e| e.is_not_found())
    );
}

/// Empty objects can be created, read, ranged at 0..0, headed and listed.
pub async fn empty_objects(b: &dyn Backend, prefix: &str) {
    let k = key(prefix, "empty/zero");
    b.put(&k, Payload::from_bytes(Bytes::new()), PutMode::Create)
        .await
        .expect("create empty");
    assert_eq!(read_all(b, &k).await.len(), 0);
    assert_eq!(b.head(&k).await.expect("head").size, 0);
    assert_eq!(b.get_range(&k, 0..0).await.expect("empty range").len(), 0);
    let listed = b
        .list_all(&Prefix::new(format!("{prefix}empty/")).unwrap())
        .await
        .expect("list");
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].size, 0);
}

/// A listing returns every object under the prefix exactly once with its size (and etag where
/// supported), also when it takes many pages.
pub async fn listing_paginates(b: &dyn Backend, prefix: &str, caps: &Capabilities) {
    let mut want = BTreeMap::new();
    let puts = (0..caps.list_keys).map(|i| {
        let k = key(prefix, &format!("many/{i:04}"));
        want.insert(k.clone(), i as u64);
        async move {
            b.put(&k, Payload::from_bytes(pattern(i, 7)), PutMode::Overwrite)
                .await
                .expect("put for listing");
        }
    });
    futures::future::join_all(puts).await;
    let listed = b
        .list_all(&Prefix::new(format!("{prefix}many/")).unwrap())
        .await
        .expect("list");
    let mut got = BTreeMap::new();
    for meta in &listed {
        assert!(
            got.insert(meta.key.clone(), meta.size).is_none(),
            "{} listed twice",
            meta.key
        );
        if caps.etag_in_list {
            assert!(meta.etag.is_some(), "{} listed without etag", meta.key);
        }
    }
    assert_eq!(got, want, "listing = what was written");
}

/// A listing under `a/b` returns `a/bc` and `a/b/x` but nothing that merely shares a shorter
/// prefix, and a listing under a prefix with no objects is empty. (No key is both an object and
/// the prefix of another, `a/b` and `a/b/x`: the local backend cannot store that.)
pub async fn listing_excludes_siblings(b: &dyn Backend, prefix: &str) {
    for name in [
        "sib/a/b/y",
        "sib/a/bc",
        "sib/a/b/x",
        "sib/a/a",
        "sib/a/c",
        "sib/ab",
    ] {
        b.put(
            &key(prefix, name),
            Payload::from_bytes(Bytes::from_static(b"s")),
            PutMode::Overwrite,
        )
        .await
        .expect("put sibling");
    }
    let names = |p: &str| {
        let p = Prefix::new(format!("{prefix}{p}")).unwrap();
        async move {
            let mut v: Vec<String> = b
                .list_all(&p)
                .await
                .expect("list")
                .into_iter()
                .map(|m| m.key.as_str().strip_prefix(prefix).unwrap().to_string())
                .collect();
            v.sort();
            v
        }
    };
    assert_eq!(
        names("sib/a/b").await,
        ["sib/a/b/x", "sib/a/b/y", "sib/a/bc"]
    );
    assert_eq!(names("sib/a/b/").await, ["sib/a/b/x", "sib/a/b/y"]);
    assert_eq!(names("sib/a/").await.len(), 5);
    assert_eq!(
        names("sib/a").await.len(),
        6,
        "a plain string prefix: sib/ab too"
    );
    assert!(names("sib/zz").await.is_empty());
    assert!(names("nothing-here/").await.is_empty());
}

/// Ranged reads: first byte, last byte, a range running past the end (cut), the whole object, an
/// empty range at the end, and ranges starting at or past the end (`InvalidRange`).
pub async fn ranged_reads_at_the_edges(b: &dyn Backend, prefix: &str) {
    let k = key(prefix, "range/object");
    let data = pattern(100, 9);
    b.put(&k, Payload::from_bytes(data.clone()), PutMode::Overwrite)
        .await
        .expect("put");
    let r = |range: std::ops::Range<u64>| b.get_range(&k, range);
    assert_eq!(r(0..1).await.unwrap(), data.slice(0..1));
    assert_eq!(r(99..100).await.unwrap(), data.slice(99..100));
    assert_eq!(r(10..50).await.unwrap(), data.slice(10..50));
    assert_eq!(
        r(90..200).await.unwrap(),
        data.slice(90..100),
        "cut at the end"
    );
    assert_eq!(r(0..100).await.unwrap(), data);
    assert_eq!(r(100..100).await.unwrap().len(), 0);
    for bad in [100..101, 150..160, 101..101] {
        match r(bad.clone()).await {
            Err(BackendError::InvalidRange { size, .. }) => assert_eq!(size, 100),
            other => panic!("range {bad:?}: want InvalidRange, got {other:?}"),
        }
    }
}

/// `Create` succeeds once; a second `Create` is `AlreadyExists` and keeps the first content.
pub async fn conditional_create(b: &dyn Backend, prefix: &str) {
    let k = key(prefix, "create/once");
    b.create_bytes(&k, Bytes::from_static(b"first"))
        .await
        .expect("first create");
    match b.create_bytes(&k, Bytes::from_static(b"second")).await {
        Err(BackendError::AlreadyExists { .. }) => {}
        other => panic!("second create: want AlreadyExists, got {other:?}"),
    }
    assert_eq!(read_all(b, &k).await, Bytes::from_static(b"first"));
}

/// 16 concurrent creators of one key with different contents: exactly one wins, all others get
/// `AlreadyExists`, and the stored content is the winner's.
pub async fn concurrent_creates_have_one_winner(
    b: &dyn Backend,
    prefix: &str,
    caps: &Capabilities,
) {
    if !caps.atomic_create {
        return;
    }
    let k = key(prefix, "create/race");
    let racers = (0u8..16).map(|i| {
        let k = k.clone();
        async move { (i, b.create_bytes(&k, pattern(4096, i)).await) }
    });
    let results = futures::future::join_all(racers).await;
    let winners: Vec<u8> = results
        .iter()
        .filter(|(_, r)| r.is_ok())
        .map(|(i, _)| *i)
        .collect();
    assert_eq!(winners.len(), 1, "exactly one winner, got {winners:?}");
    for (i, r) in &results {
        if let Err(e) = r {
            assert!(
                matches!(e, BackendError::AlreadyExists { .. }),
                "racer {i}: want AlreadyExists, got {e:?}"
            );
        }
    }
    assert_eq!(read_all(b, &k).await, pattern(4096, winners[0]));
}

/// `Update(etag)` replaces the object when the etag is current and fails with
/// `PreconditionFailed` (content kept) when it is stale; on a missing key it fails.
pub async fn conditional_update(b: &dyn Backend, prefix: &str) {
    let k = key(prefix, "update/object");
    b.put(&k, Payload::from_bytes(pattern(64, 1)), PutMode::Overwrite)
        .await
        .expect("put");
    let etag = b.head(&k).await.expect("head").etag.expect("etag");
    b.put(
        &k,
        Payload::from_bytes(pattern(64, 2)),
        PutMode::Update(etag.clone()),
    )
    .await
    .expect("update with the current etag");
    assert_eq!(read_all(b, &k).await, pattern(64, 2));
    match b
        .put(
            &k,
            Payload::from_bytes(pattern(64, 3)),
            PutMode::Update(etag),
        )
        .await
    {
        Err(BackendError::PreconditionFailed { .. }) => {}
        other => panic!("update with a stale etag: want PreconditionFailed, got {other:?}"),
    }
    assert_eq!(read_all(b, &k).await, pattern(64, 2), "content kept");
    let missing = key(prefix, "update/missing");
    match b
        .put(
            &missing,
            Payload::from_bytes(pattern(1, 1)),
            PutMode::Update("\"nope\"".into()),
        )
        .await
    {
        Err(BackendError::PreconditionFailed { .. } | BackendError::NotFound { .. }) => {}
        other => panic!("update of a missing key: got {other:?}"),
    }
}

/// Deleting a missing key succeeds; deleting an existing one makes it missing.
pub async fn delete_of_missing_keys_succeeds(b: &dyn Backend, prefix: &str) {
    let k = key(prefix, "delete/object");
    b.delete(&k).await.expect("delete of a missing key");
    b.create_bytes(&k, Bytes::from_static(b"x"))
        .await
        .expect("create");
    b.delete(&k).await.expect("delete");
    assert!(b.head(&k).await.is_err_and(|e| e.is_not_found()));
    b.delete(&k).await.expect("delete again");
}

/// `delete_many` removes every key it is given, present or not, and nothing else.
pub async fn batched_deletes(b: &dyn Backend, prefix: &str) {
    let keys: Vec<Key> = (0..5).map(|i| key(prefix, &format!("batch/{i}"))).collect();
    for k in &keys[..4] {
        b.create_bytes(k, Bytes::from_static(b"x"))
            .await
            .expect("create");
    }
    // Keys 0, 1 and the never-written 4 go; 2 and 3 stay.
    let gone = [keys[0].clone(), keys[1].clone(), keys[4].clone()];
    b.delete_many(&gone).await.expect("batched delete");
    b.delete_many(&[]).await.expect("empty batch");
    for (i, k) in keys.iter().enumerate() {
        let exists = b.head(k).await.is_ok();
        assert_eq!(exists, i == 2 || i == 3, "key {k} after the batch");
    }
    b.delete_many(&keys)
        .await
        .expect("batched delete of the rest");
    let left = b
        .list_all(&Prefix::new(format!("{prefix}batch/")).unwrap())
        .await;
    assert!(left.expect("list").is_empty());
}

/// Keys made of every allowed character round-trip through put, get, head and list.
pub async fn every_allowed_character(b: &dyn Backend, prefix: &str) {
    let letters: String = ('A'..='Z').chain('a'..='z').chain('0'..='9').collect();
    let names = [
        format!("chars/{letters}"),
        format!("chars/x{KEY_PUNCTUATION}"),
        "chars/a!b-c_d.e*f'g(h)i".to_string(),
        "chars/(paren)/'quote'/*star*".to_string(),
    ];
    for name in &names {
        let k = key(prefix, name);
        b.put(
            &k,
            Payload::from_bytes(Bytes::from(name.clone())),
            PutMode::Create,
        )
        .await
        .unwrap_or_else(|e| panic!("put {k}: {e}"));
        assert_eq!(read_all(b, &k).await, Bytes::from(name.clone()));
        assert_eq!(b.head(&k).await.expect("head").size, name.len() as u64);
    }
    let mut listed: Vec<String> = b
        .list_all(&Prefix::new(format!("{prefix}chars/")).unwrap())
        .await
        .expect("list")
        .into_iter()
        .map(|m| m.key.as_str().strip_prefix(prefix).unwrap().to_string())
        .collect();
    listed.sort();
    let mut want = names.to_vec();
    want.sort();
    assert_eq!(listed, want);
}

/// Keys outside the syntax never reach a backend: they are refused when the key is made.
pub fn invalid_keys_are_rejected() {
    let long = "a".repeat(1025);
    for bad in [
        "",
        "/a",
        "a/",
        "a//b",
        ".a",
        "a/.b",
        "a/..",
        "a b",
        "a?b",
        "a#b",
        "a%20",
        "a\\b",
        "ä",
        "a+b",
        "a=b",
        "a:b",
        "a\nb",
        long.as_str(),
    ] {
        assert!(
            matches!(Key::new(bad), Err(BackendError::InvalidKey { .. })),
            "{bad:?} must be rejected"
        );
    }
    assert!(Prefix::new("a/b/").is_ok());
    assert!(Prefix::new("a//").is_err());
}

/// A large object streamed from a file (multipart where the backend has it) comes back
/// byte-identical, whole and in ranges across part boundaries.
pub async fn large_object_from_file(b: &dyn Backend, prefix: &str, size: u64) {
    let path = scratch_file(size);
    let k = key(prefix, "large/object");
    let payload = Payload::from_file(&path, 0, size);
    b.put(&k, payload.clone(), PutMode::Create)
        .await
        .expect("put large object");
    let want = std::fs::read(&path).expect("read scratch file");
    let _ = std::fs::remove_file(&path);
    assert_eq!(b.head(&k).await.expect("head").size, size);
    let got = b.get(&k).await.expect("get");
    assert_eq!(got.meta.size, size);
    // Stream the body and compare piecewise rather than trusting one big buffer.
    let mut pos = 0usize;
    let mut body = got.body;
    while let Some(piece) = body.try_next().await.expect("body") {
        assert_eq!(&want[pos..pos + piece.len()], &piece[..], "bytes at {pos}");
        pos += piece.len();
    }
    assert_eq!(pos as u64, size, "whole body");
    let part = 5u64 << 20;
    for start in [part - 3, 2 * part - 1, size - 10] {
        if start + 6 <= size {
            let r = b.get_range(&k, start..start + 6).await.expect("range");
            assert_eq!(&r[..], &want[start as usize..start as usize + 6]);
        }
    }
    // A second create of the large key is refused and leaves the object alone.
    assert!(matches!(
        b.create_bytes(&k, pattern(10, 1)).await,
        Err(BackendError::AlreadyExists { .. })
    ));
    assert_eq!(b.head(&k).await.expect("head").size, size);
}

/// Writes `size` pattern bytes to a fresh temporary file.
fn scratch_file(size: u64) -> PathBuf {
    use std::io::Write;
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let path = std::env::temp_dir().join(format!(
        "layercas-conformance-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let mut f = std::io::BufWriter::new(std::fs::File::create(&path).expect("scratch file"));
    let mut left = size;
    let mut seed = 0u8;
    while left > 0 {
        let n = left.min(1 << 20);
        f.write_all(&pattern(n as usize, seed))
            .expect("write scratch");
        left -= n;
        seed = seed.wrapping_add(1);
    }
    f.flush().expect("flush scratch");
    path
}
