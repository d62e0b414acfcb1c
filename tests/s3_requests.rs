//! Request economy on the real S3 server: checkpointing 1 GiB of new data takes at most 100
//! PUT-class requests (PUT and LIST), restoring it at most 200 GET-class requests, counted by
//! the metrics wrapper next to the real backend.
mod common;

use std::sync::Arc;

use common::*;
use layercas::backend::open::{StackConfig, standard_stack};
use layercas::backend::wrap::Op;
use layercas::format::config::StoreConfig;
use layercas::store::Store;
use layercas::write::Writer;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_gib_costs_few_requests() {
    let (_w, work) = tempdir();
    {
        // 1 GiB of incompressible data: the worst case for the number of packs.
        use std::io::Write;
        let mut f = std::io::BufWriter::new(std::fs::File::create(work.join("layer")).unwrap());
        for i in 0..16 {
            f.write_all(&noise(64 << 20, 500 + i)).unwrap();
        }
    }
    // Default S3 settings: packs (16 MiB) go up as single PutObject requests.
    let s3 = common::s3server::s3_backend(|_| {}).await;
    let opened = standard_stack(Arc::new(s3), &StackConfig::default());
    let store = Store::open_or_create(opened.backend.clone(), StoreConfig::default_config())
        .await
        .unwrap();
    let writer = Writer::new(store.clone()).await.unwrap();
    let before = opened.metrics.snapshot();
    let report = checkpoint_dir(&writer, &work, 0x100).await;
    let after = opened.metrics.snapshot();
    let count = |op| after.op(op).requests - before.op(op).requests;
    let put_class = count(Op::Put) + count(Op::List);
    eprintln!(
        "checkpoint of 1 GiB: {} packs, {} PUT, {} LIST",
        report.packs_written,
        count(Op::Put),
        count(Op::List)
    );
    assert_eq!(report.new_raw_bytes, 1 << 30);
    assert!(put_class <= 100, "{put_class} PUT-class requests for 1 GiB");

    let (_o, out) = tempdir();
    let before = opened.metrics.snapshot();
    let r = store
        .restore_timeline(&TENANT, &TIMELINE, None, &out, layercas::progress::none())
        .await
        .unwrap();
    let after = opened.metrics.snapshot();
    let count = |op| after.op(op).requests - before.op(op).requests;
    let get_class = count(Op::Get) + count(Op::GetRange) + count(Op::Head);
    eprintln!(
        "restore of 1 GiB: {} ranged reads, {get_class} GET-class requests",
        r.range_reads
    );
    assert!(
        get_class <= 200,
        "{get_class} GET-class requests to restore 1 GiB"
    );
    assert_eq!(std::fs::metadata(out.join("layer")).unwrap().len(), 1 << 30);
    assert_eq!(
        blake3_file(&out.join("layer")),
        blake3_file(&work.join("layer"))
    );
}

fn blake3_file(p: &std::path::Path) -> blake3::Hash {
    let mut h = blake3::Hasher::new();
    h.update_reader(std::fs::File::open(p).unwrap()).unwrap();
    h.finalize()
}
