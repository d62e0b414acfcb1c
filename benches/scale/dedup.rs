//! What per-tenant dedup domains would cost (format-spec/index-scaling.md, 2.1): the sample
//! workdir (`testkit::sample`, its checkpoints kept) chunked with the store's default chunker,
//! stored bytes with one domain for the whole store against one domain per tenant.
//!
//! Owns that count only; writes nothing but the sample workdir under the given directory.

use std::collections::{HashMap, HashSet};
use std::path::Path;

use layercas::TenantId;
use layercas::id::ChunkId;
use layercas::testkit::sample::{SampleSpec, SampleWorkdir};
use serde_json::{Value, json};

/// Chunks (with `chunks`: the store's chunker, ids and lengths) every file of every checkpoint of
/// a sample workdir of `tenants` tenants; returns the raw bytes of distinct chunks store-wide and
/// summed over per-tenant domains.
pub fn domains_cost(
    root: &Path,
    tenants: usize,
    steps: usize,
    chunks: impl Fn(&[u8]) -> Vec<(ChunkId, u64)>,
) -> Value {
    let spec = SampleSpec {
        tenants,
        ..SampleSpec::demo()
    };
    let (mut wd, first) = SampleWorkdir::create(root, &spec).expect("sample workdir");
    let mut global: HashMap<ChunkId, u64> = HashMap::new();
    let mut per_tenant: HashSet<(TenantId, ChunkId)> = HashSet::new();
    let mut tenant_bytes = 0u64;
    let mut logical = 0u64;
    let mut deltas = first;
    for step in 0..=steps {
        for d in &deltas {
            let dir = root.join(format!("tenants/{}/timelines/{}", d.tenant, d.timeline));
            for name in &d.added {
                let data = std::fs::read(dir.join(name)).expect("sample file");
                logical += data.len() as u64;
                for (id, len) in chunks(&data) {
                    global.insert(id, len);
                    if per_tenant.insert((d.tenant, id)) {
                        tenant_bytes += len;
                    }
                }
            }
        }
        if step < steps {
            deltas = wd.step().expect("sample step");
        }
    }
    let global_bytes: u64 = global.values().sum();
    let lost = tenant_bytes.saturating_sub(global_bytes);
    json!({"tenants": tenants, "checkpoints": steps + 1, "logical_bytes": logical,
        "distinct_bytes_one_domain": global_bytes, "distinct_bytes_per_tenant": tenant_bytes,
        "lost_fraction": lost as f64 / global_bytes.max(1) as f64})
}
