//! Per-tenant index domains (format-spec section 6.1): a writer reads only its tenants' domains
//! and the legacy one; gc moves a legacy store's index into tenant domains and readers and
//! verify still find everything; `repair index` puts rebuilt sections in the tenants' domains;
//! a reader falls back when a chunk is not (yet) named in its tenant's domain.

mod common;

use std::collections::BTreeMap;
use std::path::Path;

use layercas::backend::{BackendExt, DynBackend, Payload, PutMode};
use layercas::format::layout::{self, IndexDomain};
use layercas::gc::{self, GcOptions};
use layercas::id::{Lsn, TenantId, TimelineId};
use layercas::store::Store;
use layercas::verify::{VerifyOptions, verify};
use layercas::write::{CheckpointMode, CheckpointRequest, Writer};
use layercas::{Policy, Retention, TimelineMetadata, progress};

use common::recording::Recording;
use common::*;

const A: TenantId = TenantId([0x0a; 16]);
const B: TenantId = TenantId([0x0b; 16]);
const TL: TimelineId = TimelineId([0x11; 16]);

/// Checkpoint `lsn` of tenant `t`: two files of new data seeded by `seed`.
async fn checkpoint(writer: &Writer, root: &Path, t: TenantId, lsn: u64, seed: u64) {
    let dir = root.join(format!("{t}-{lsn}"));
    let mut files = BTreeMap::new();
    files.insert("a".to_string(), noise(300_000, seed));
    files.insert("b".to_string(), noise(200_000, seed + 1));
    write_files(&dir, &files);
    let req = CheckpointRequest {
        tenant: t,
        timeline: TL,
        metadata: TimelineMetadata::at(Lsn(lsn)),
        files: sources(&dir),
        mode: CheckpointMode::Full,
    };
    writer.checkpoint(req, progress::none()).await.unwrap();
}

/// Index keys by domain (levels aside).
async fn index_keys(store: &Store) -> BTreeMap<Option<TenantId>, usize> {
    let mut out = BTreeMap::new();
    for m in store.list(&layout::prefix(layout::INDEX)).await.unwrap() {
        let (d, _) = layout::parse_index_key(&m.key).expect("only index keys");
        *out.entry(d.tenant()).or_default() += 1;
    }
    out
}

/// Restores tenant `t`'s timeline at `lsn` and compares it with what was checkpointed.
async fn restores(store: &Store, root: &Path, t: TenantId, lsn: u64) {
    let (_o, out) = tempdir();
    store
        .restore_timeline(&t, &TL, Some(Lsn(lsn)), &out, progress::none())
        .await
        .unwrap();
    assert_eq!(read_tree(&out), read_tree(&root.join(format!("{t}-{lsn}"))));
}

fn keep_all() -> GcOptions {
    let mut o = GcOptions::new(Retention::uniform(Policy::KeepAll));
    o.window = std::time::Duration::ZERO;
    o
}

/// verify, reading every byte, finds no error.
async fn verify_reads_everything(store: &Store) {
    let options = VerifyOptions {
        read_data: true,
        subset: None,
    };
    let v = verify(store, options, progress::none()).await.unwrap();
    assert_eq!(v.errors(), 0, "{v:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writers_of_two_tenants_never_read_each_others_index_objects() {
    let (_s, dir) = tempdir();
    let (_w, root) = tempdir();
    let store = local_store(&dir).await;
    let wa = Writer::new(store.clone()).await.unwrap();
    checkpoint(&wa, &root, A, 0x100, 1).await;
    checkpoint(&wa, &root, A, 0x200, 3).await;
    let a_chunks = wa.known_chunks();
    assert!(a_chunks > 10, "{a_chunks}");

    let rec = Recording::new(local_backend(&dir));
    let recorded: DynBackend = rec.clone();
    let store_b = Store::open(recorded).await.unwrap();
    rec.take();
    let wb = Writer::new(store_b.clone()).await.unwrap();
    let start = rec.take();
    checkpoint(&wb, &root, B, 0x100, 5).await;
    let first = rec.take();
    checkpoint(&wb, &root, B, 0x200, 7).await;
    let second = rec.take();
    let a_domain = layout::tenant_index_prefix(&A);
    for op in start.iter().chain(&first).chain(&second) {
        assert!(
            !op.contains(a_domain.as_str()),
            "writer of B touched A's domain: {op}"
        );
        assert!(
            !op.starts_with("list index/ ") && op != "list index/",
            "{op}"
        );
    }
    // Its start lists the legacy domain (16 prefixes) and reads the gc state; no index object.
    let gets = |ops: &[String], what: &str| ops.iter().filter(|o| o.starts_with(what)).count();
    assert_eq!(gets(&start, "list index/"), 16, "{start:?}");
    assert_eq!(gets(&start, "get index/"), 0, "{start:?}");
    // The first checkpoint of B lists B's domain once; the second does not list it again.
    assert_eq!(gets(&first, &format!("list index/t/{B}/")), 1, "{first:?}");
    assert_eq!(gets(&second, "list index/"), 0, "{second:?}");
    assert!(
        wb.known_chunks() < a_chunks + 10,
        "B holds only its own chunks"
    );
    let keys = index_keys(&store).await;
    assert_eq!(keys, [(Some(A), 2), (Some(B), 2)].into_iter().collect());
    // The gc state is now at this code's version (2 and above: tenant domains exist), so
    // binaries that know only version 1 refuse it.
    let state = store
        .backend()
        .get_bytes(&layout::gc_state_key(), 1 << 20)
        .await
        .unwrap();
    assert_eq!(state[5], layercas::format::gc_state::GC_STATE_VERSION);
    restores(&store, &root, A, 0x200).await;
    restores(&store, &root, B, 0x100).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gc_moves_a_legacy_index_into_tenant_domains_and_everything_still_reads() {
    let (_s, dir) = tempdir();
    let (_w, root) = tempdir();
    // Written before tenant domains: one legacy index object, gc state absent.
    copy_fixture("store-v1", &dir);
    let store = Store::open(local_backend(&dir)).await.unwrap();
    let old_tenant: TenantId = "0102030405060708090a0b0c0d0e0f10".parse().unwrap();
    let old_timeline: TimelineId = "1112131415161718191a1b1c1d1e1f20".parse().unwrap();
    let (_o, before) = tempdir();
    store
        .restore_timeline(&old_tenant, &old_timeline, None, &before, progress::none())
        .await
        .unwrap();
    // The old store takes new checkpoints (into tenant domains) beside its legacy index.
    let w = Writer::new(store.clone()).await.unwrap();
    checkpoint(&w, &root, A, 0x100, 11).await;
    assert_eq!(
        index_keys(&store).await,
        [(None, 1), (Some(A), 1)].into_iter().collect()
    );
    let report = gc::run(&store, &keep_all(), progress::none())
        .await
        .unwrap();
    assert!(report.index_objects_written >= 1, "{report:?}");
    // The legacy object's pack is referenced by the old tenant: it now lives in its domain.
    assert_eq!(
        index_keys(&store).await,
        [(Some(old_tenant), 1), (Some(A), 1)].into_iter().collect()
    );
    let (_a, after) = tempdir();
    store
        .restore_timeline(&old_tenant, &old_timeline, None, &after, progress::none())
        .await
        .unwrap();
    assert_eq!(read_tree(&after), read_tree(&before));
    restores(&store, &root, A, 0x100).await;
    verify_reads_everything(&store).await;
    // A second run has nothing to move.
    let again = gc::run(&store, &keep_all(), progress::none())
        .await
        .unwrap();
    assert_eq!(
        (again.index_objects_written, again.index_objects_deleted),
        (0, 0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repair_puts_rebuilt_sections_into_the_domains_of_their_tenants() {
    let (_s, dir) = tempdir();
    let (_w, root) = tempdir();
    let store = local_store(&dir).await;
    let w = Writer::new(store.clone()).await.unwrap();
    checkpoint(&w, &root, A, 0x100, 21).await;
    checkpoint(&w, &root, B, 0x100, 23).await;
    for m in store.list(&layout::prefix(layout::INDEX)).await.unwrap() {
        store.backend().delete(&m.key).await.unwrap();
    }
    let report = gc::repair::repair_index(&store, false).await.unwrap();
    assert_eq!(report.index_objects_written.len(), 2, "{report:?}");
    assert_eq!(
        index_keys(&store).await,
        [(Some(A), 1), (Some(B), 1)].into_iter().collect()
    );
    for t in [A, B] {
        let keys = store.list_tenant_keys(&t).await.unwrap();
        let parsed = layout::parse_index_key(&keys[0]).unwrap().0;
        assert!(matches!(parsed, IndexDomain::Tenant(x, _) if x == t));
        restores(&store, &root, t, 0x100).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chunk_named_only_in_another_domain_still_restores_and_gc_names_it_at_home() {
    let (_s, dir) = tempdir();
    let (_w, root) = tempdir();
    let store = local_store(&dir).await;
    let w = Writer::new(store.clone()).await.unwrap();
    checkpoint(&w, &root, A, 0x100, 31).await;
    // Move A's index object into B's domain (what a writer deduplicating against a legacy pack
    // gc was moving elsewhere can leave until the next gc run).
    let key = store.list_tenant_keys(&A).await.unwrap().remove(0);
    let (_, id) = layout::parse_index_key(&key).unwrap();
    let bytes = store.backend().get_bytes(&key, 1 << 30).await.unwrap();
    let moved = layout::tenant_index_key(&B, 0, &id);
    store.backend().create_bytes(&moved, bytes).await.unwrap();
    store.backend().delete(&key).await.unwrap();
    restores(&store, &root, A, 0x100).await;
    // verify says so (a warning: nothing is lost), naming the manifest.
    let away = |v: &layercas::verify::VerifyReport| -> Vec<String> {
        let named = v
            .problems
            .iter()
            .filter(|p| p.message.contains("only in other tenants'"));
        named.map(|p| p.key.clone()).collect()
    };
    let options = VerifyOptions::default();
    let v = verify(&store, options, progress::none()).await.unwrap();
    assert_eq!(v.errors(), 0, "{v:?}");
    let manifest = layout::manifest_key(&A, &TL, Lsn(0x100)).to_string();
    assert_eq!(away(&v), [manifest], "{v:?}");
    let report = gc::run(&store, &keep_all(), progress::none())
        .await
        .unwrap();
    assert_eq!(report.index_objects_written, 1, "{report:?}");
    assert_eq!(
        index_keys(&store).await,
        [(Some(A), 1), (Some(B), 1)].into_iter().collect()
    );
    assert_eq!(store.read_domain_indexes(&A).await.unwrap().len(), 1);
    let v = verify(&store, options, progress::none()).await.unwrap();
    assert!(away(&v).is_empty(), "{v:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repacked_packs_are_named_in_the_domain_of_every_tenant_they_serve() {
    let (_s, dir) = tempdir();
    let (_w, root) = tempdir();
    let store = local_store(&dir).await;
    let w = Writer::new(store.clone()).await.unwrap();
    for (i, t) in [A, B].into_iter().enumerate() {
        for lsn in [0x100, 0x200] {
            checkpoint(&w, &root, t, lsn, 40 + i as u64 * 10 + lsn / 0x100).await;
        }
    }
    // Four small packs (two per tenant) are consolidated into packs of the target size.
    let report = gc::run(&store, &keep_all(), progress::none())
        .await
        .unwrap();
    assert_eq!(report.packs_repacked, 4, "{report:?}");
    let keys = index_keys(&store).await;
    assert_eq!(
        keys.get(&None),
        None,
        "nothing in the legacy domain: {keys:?}"
    );
    for t in [A, B] {
        // Every chunk of the tenant resolves through its own domain alone.
        let objects = store.read_domain_indexes(&t).await.unwrap();
        let mut own = layercas::store::chunk_index::ChunkIndex::new();
        objects.values().for_each(|o| own.add_object(o));
        let state = store.checkpoint_state(&t, &TL, None).await.unwrap();
        for f in state.files.values() {
            assert!(
                f.chunks
                    .iter()
                    .flat_map(|c| c.stored_ids())
                    .all(|id| own.contains(&id)),
                "{t}: {}",
                f.name
            );
        }
        for lsn in [0x100, 0x200] {
            restores(&store, &root, t, lsn).await;
        }
    }
    verify_reads_everything(&store).await;
}

/// A restore through a tenant's domain does not list the store's packs (a request per 1,000
/// packs of the whole store): when an index object still names a deleted pack (here one that
/// sorts first, so its locations win), the read of it fails, and the restore plans that read
/// again without the pack and still restores every byte.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restore_lists_no_packs_and_reads_around_a_pack_named_after_deletion() {
    use layercas::format::index::IndexObject;
    use layercas::id::{IndexId, PackId};
    let (_s, dir) = tempdir();
    let (_w, root) = tempdir();
    let store = local_store(&dir).await;
    let writer = Writer::new(store.clone()).await.unwrap();
    checkpoint(&writer, &root, A, 0x100, 1).await;
    let own = store.list_tenant_keys(&A).await.unwrap();
    assert_eq!(own.len(), 1, "{own:?}");
    let real = store.read_index(&own[0]).await.unwrap();
    // The same blobs under a pack id that does not exist, in an object whose key sorts first.
    let (key, bytes) = (0u8..=255)
        .map(|salt| {
            let ghost = PackId::of(&[salt]);
            let obj = IndexObject {
                packs: real
                    .packs
                    .iter()
                    .map(|(_, es)| (ghost, es.clone()))
                    .collect(),
            };
            let bytes = obj.encode();
            (layout::tenant_index_key(&A, 0, &IndexId::of(&bytes)), bytes)
        })
        .find(|(k, _)| k < &own[0])
        .expect("one of 256 ids sorts first");
    store
        .backend()
        .put(&key, Payload::from_bytes(bytes), PutMode::Create)
        .await
        .unwrap();

    let rec = Recording::new(local_backend(&dir));
    let recorded: DynBackend = rec.clone();
    let reader = Store::open(recorded).await.unwrap();
    let (_o, out) = tempdir();
    rec.take();
    let report = reader
        .restore_timeline(&A, &TL, None, &out, progress::none())
        .await
        .unwrap();
    let ops = rec.take();
    assert_eq!(read_tree(&out), read_tree(&root.join(format!("{A}-256"))));
    assert_eq!(report.range_reads, 2, "the ghost pack, then the real one");
    let ghost_reads = ops.iter().filter(|o| o.starts_with("range packs/")).count();
    assert_eq!(ghost_reads, 2, "{ops:?}");
    // Only the retry, which reloads the whole index, lists packs.
    let pack_listings = ops.iter().filter(|o| o.starts_with("list packs/")).count();
    assert_eq!(pack_listings, 16, "{ops:?}");
}
