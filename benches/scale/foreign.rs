//! A writer beside millions of chunks other writers stored (their index objects synthesized,
//! `synth::foreign_index`): the peak RSS its start and first checkpoint add.
//!
//! Owns that measurement; the store it fills is its own.

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use layercas::StoreConfig;
use layercas::backend::DynBackend;
use layercas::backend::local::LocalBackend;
use layercas::backend::open::{StackConfig, standard_stack};
use layercas::store::Store;
use serde_json::{Value, json};

use crate::common::{mib, peak_rss, status_bytes};
use crate::under::Under;
use crate::{Knobs, checkpoint, say, synth, writer_start};

/// A writer's start and its first checkpoint (of its own tenant) beside `chunks` chunks other
/// writers stored (synthesized index objects in `tenants` other tenants' domains, or in the
/// legacy domain when 0): peak RSS added over both, and their requests.
pub async fn foreign_memory(root: &Path, chunks: u64, tenants: u64, quiet: bool) -> Value {
    let backend: DynBackend = Arc::new(LocalBackend::new(root).unwrap());
    Store::open_or_create(backend.clone(), StoreConfig::default_config())
        .await
        .unwrap();
    let t = Instant::now();
    let objects = synth::foreign_index(root, chunks, tenants).unwrap();
    let synth_secs = t.elapsed().as_secs_f64();
    let opened = standard_stack(backend, &StackConfig::default());
    let u = Under {
        name: "foreign",
        backend: opened.backend,
        metrics: opened.metrics,
        scratch: root.with_extension("src"),
    };
    let rss_before = status_bytes("VmRSS:");
    let (mut v, writer) = writer_start(&u).await;
    let k = Knobs::from_env(true);
    let before = u.requests();
    let (secs, _) = checkpoint(&writer, &u, &k, 0).await;
    // Peak since the start's reset, over the start and the first checkpoint.
    let added = peak_rss().saturating_sub(rss_before);
    v["first_checkpoint_ms"] = json!(secs * 1e3);
    v["first_checkpoint_requests"] = json!(u.requests() - before);
    v["peak_rss_added"] = json!(added);
    say!(
        quiet,
        "writer beside {chunks} foreign chunks ({objects} index objects in {}, synthesized in {synth_secs:.0} s): start {:.0} ms, {} requests; first checkpoint {:.0} ms, {} requests; +{:.1} MiB peak RSS over both (acceptance: 64 MiB)",
        if tenants == 0 {
            "the legacy domain".to_string()
        } else {
            format!("{tenants} tenants' domains")
        },
        v["start_ms"].as_f64().unwrap(),
        v["start_requests"],
        secs * 1e3,
        v["first_checkpoint_requests"],
        mib(added)
    );
    v["foreign_chunks"] = json!(chunks);
    v["foreign_tenants"] = json!(tenants);
    v["index_objects"] = json!(objects);
    v["within_64_mib"] = json!(added <= 64 << 20);
    v
}
