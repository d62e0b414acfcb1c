//! Scale benchmark (issue 14): a fleet of many small timelines checkpointing into one store, on
//! local disk and on an S3 server (SeaweedFS started by scripts/s3-server.sh unless
//! `LAYERCAS_S3_ENDPOINT` names one). Measures what must not grow with the store: per-checkpoint
//! time and requests at 1%, 50% and 100% of the run, a new writer's start (time, requests, peak
//! RSS), gc (and a gc with nothing to do), objects per GiB, packs under 4 MiB per timeline after
//! gc, a restore of one timeline, and a writer's peak RSS beside 10 million chunks stored by
//! other writers (their index objects synthesized, `synth::foreign_index`).
//!
//! Run: `cargo bench --bench scale [-- --json] [-- --small]`. Env (defaults = the full run):
//! LAYERCAS_SCALE_TIMELINES (10000), _CHECKPOINTS (10 per timeline), _FILES (2 new layer files
//! per checkpoint, median 60 KiB), _PER_TENANT (1 timeline per tenant), _CONCURRENCY (8
//! checkpoints in flight between samples), _SAMPLE (20 checkpoints measured one by one at each
//! point), _FOREIGN_CHUNKS (10000000), _FOREIGN_TENANTS (100 tenants whose domains hold them; 0
//! puts them in the legacy domain, as stores before tenant domains had them), _LOCAL and _S3 (1 = run on that backend),
//! _DEDUP_TENANTS (4: tenants of the sample workdir whose cross-tenant dedup is counted, 0 to
//! skip). `--small` is 100 timelines and 200,000 foreign chunks (about a minute).

mod common;
#[path = "scale/dedup.rs"]
mod dedup;
#[path = "scale/foreign.rs"]
mod foreign;
#[path = "common/s3.rs"]
mod s3;
#[path = "scale/side_by_side.rs"]
mod side_by_side;
#[path = "scale/synth.rs"]
mod synth;
#[path = "scale/under.rs"]
mod under;

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use futures::{StreamExt, TryStreamExt};
use layercas::backend::local::LocalBackend;
use layercas::backend::{BackendExt, DynBackend, Prefix};
use layercas::format::layout;
use layercas::gc::{self, GcOptions};
use layercas::store::Store;
use layercas::{
    CheckpointMode, CheckpointRequest, Lsn, Policy, Retention, SourceFile, StoreConfig,
    TimelineMetadata, Writer, progress,
};
use serde_json::{Value, json};

use common::{env_or, mib, peak_rss, reset_peak_rss, status_bytes};
use under::{Under, local_under, s3_under};

/// Packs under this size count as small (the acceptance: at most one per timeline after gc).
const SMALL_PACK: u64 = 4 << 20;
/// Timelines whose packs are counted after gc (evenly spread over the run).
const PACK_SAMPLE: u64 = 200;

#[derive(Clone, Copy, Debug)]
struct Knobs {
    timelines: u64,
    checkpoints: u64,
    files: u64,
    per_tenant: u64,
    concurrency: usize,
    sample: u64,
    foreign_chunks: u64,
}

impl Knobs {
    fn from_env(small: bool) -> Knobs {
        let k = |name: &str, full: u64, small_value: u64| {
            env_or(
                &format!("LAYERCAS_SCALE_{name}"),
                if small { small_value } else { full },
            )
        };
        Knobs {
            timelines: k("TIMELINES", 10_000, 100).max(1),
            checkpoints: k("CHECKPOINTS", 10, 10).max(1),
            files: k("FILES", 2, 2).max(1),
            per_tenant: k("PER_TENANT", 1, 1).max(1),
            concurrency: k("CONCURRENCY", 8, 8).max(1) as usize,
            sample: k("SAMPLE", 20, 10).max(1),
            foreign_chunks: k("FOREIGN_CHUNKS", 10_000_000, 200_000),
        }
    }

    fn total(&self) -> u64 {
        self.timelines * self.checkpoints
    }
}

/// Text goes to stdout, or to stderr when stdout carries the JSON alone (`--json`).
macro_rules! say {
    ($json:expr, $($arg:tt)*) => {
        if $json { eprintln!($($arg)*) } else { println!($($arg)*) }
    };
}
pub(crate) use say;

/// Checkpoint number `i` of the run: timeline `i % timelines`, round `i / timelines`; writes its
/// new files to scratch, records them, removes them. Returns seconds and logical bytes.
async fn checkpoint(writer: &Writer, u: &Under, k: &Knobs, i: u64) -> (f64, u64) {
    let (n, round) = (i % k.timelines, i / k.timelines);
    let (tenant, timeline) = synth::ids(n, k.per_tenant);
    let dir = u.scratch.join(format!("src/{i}"));
    std::fs::create_dir_all(&dir).unwrap();
    let mut files = Vec::new();
    let mut bytes = 0;
    for f in 0..k.files {
        let name = synth::file_name(round, f);
        let data = synth::file_bytes(n, round, f);
        bytes += data.len() as u64;
        std::fs::write(dir.join(&name), data).unwrap();
        files.push(SourceFile {
            path: dir.join(&name),
            name,
        });
    }
    let req = CheckpointRequest {
        tenant,
        timeline,
        metadata: TimelineMetadata::at(Lsn((round + 1) << 24)),
        files,
        mode: CheckpointMode::Incremental,
    };
    let started = Instant::now();
    writer.checkpoint(req, progress::none()).await.unwrap();
    let secs = started.elapsed().as_secs_f64();
    std::fs::remove_dir_all(&dir).unwrap();
    (secs, bytes)
}

/// Checkpoints `range` with `k.concurrency` in flight; returns the logical bytes.
async fn run_span(writer: &Writer, u: &Under, k: &Knobs, range: std::ops::Range<u64>) -> u64 {
    futures::stream::iter(
        range.map(|i| async move { Ok::<_, ()>(checkpoint(writer, u, k, i).await.1) }),
    )
    .buffer_unordered(k.concurrency)
    .try_fold(0, |a, b| async move { Ok(a + b) })
    .await
    .unwrap()
}

/// Checkpoints `range` one at a time, each measured alone: median seconds and requests.
async fn measure_span(
    writer: &Writer,
    u: &Under,
    k: &Knobs,
    range: std::ops::Range<u64>,
) -> (Value, u64) {
    let (mut secs, mut reqs, mut bytes) = (Vec::new(), Vec::new(), 0);
    for i in range {
        let before = u.requests();
        let (s, b) = checkpoint(writer, u, k, i).await;
        reqs.push((u.requests() - before) as f64);
        secs.push(s);
        bytes += b;
    }
    let v = json!({"checkpoint_ms": median(&secs) * 1e3, "checkpoint_requests": median(&reqs),
        "measured": secs.len()});
    (v, bytes)
}

/// A new writer's start on the store as it is: seconds, requests, peak RSS it added; and the
/// writer.
async fn writer_start(u: &Under) -> (Value, Writer) {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim only releases free heap memory.
    unsafe {
        libc::malloc_trim(0);
    }
    let rss_before = status_bytes("VmRSS:");
    reset_peak_rss();
    let before = u.requests();
    let started = Instant::now();
    let store = Store::open(u.backend.clone()).await.unwrap();
    let writer = Writer::new(store).await.unwrap();
    let secs = started.elapsed().as_secs_f64();
    let peak_added = peak_rss().saturating_sub(rss_before);
    let v = json!({"start_ms": secs * 1e3, "start_requests": u.requests() - before,
        "start_peak_rss_added": peak_added, "index_heap_bytes": writer.index_heap_bytes(),
        "known_chunks": writer.known_chunks()});
    (v, writer)
}

/// The sample windows: `k.sample` checkpoints ending at 1%, 50% and 100% of the run.
fn windows(k: &Knobs) -> Vec<(&'static str, std::ops::Range<u64>)> {
    let total = k.total();
    let mut prev_end = 0;
    let mut out = Vec::new();
    for (label, p) in [("1%", 0.01), ("50%", 0.5), ("100%", 1.0)] {
        let end = ((total as f64 * p).ceil() as u64).clamp(k.sample.min(total), total);
        let start = end.saturating_sub(k.sample).max(prev_end);
        if start < end {
            out.push((label, start..end));
            prev_end = end;
        }
    }
    out
}

/// The whole run on one backend; returns its figures.
async fn run_backend(u: &Under, reference: &Under, k: &Knobs, quiet: bool) -> Value {
    let store = Store::open_or_create(u.backend.clone(), StoreConfig::default_config())
        .await
        .unwrap();
    let writer = Writer::new(store.clone()).await.unwrap();
    let (mut cursor, mut logical) = (0, 0);
    let mut points = serde_json::Map::new();
    let started = Instant::now();
    for (label, range) in windows(k) {
        logical += run_span(&writer, u, k, cursor..range.start).await;
        cursor = range.end;
        let (mut v, bytes) = measure_span(&writer, u, k, range).await;
        logical += bytes;
        let start = writer_start(u).await.0;
        v.as_object_mut()
            .unwrap()
            .extend(start.as_object().unwrap().clone());
        say!(
            quiet,
            "{} at {label:>4}: checkpoint {:.1} ms, {} requests; writer start {:.0} ms, {} requests, +{:.1} MiB peak RSS ({} chunks known)",
            u.name,
            v["checkpoint_ms"].as_f64().unwrap(),
            v["checkpoint_requests"],
            v["start_ms"].as_f64().unwrap(),
            v["start_requests"],
            mib(v["start_peak_rss_added"].as_u64().unwrap()),
            v["known_chunks"]
        );
        points.insert(label.to_string(), v);
    }
    let ingest_secs = started.elapsed().as_secs_f64();
    let one_percent = windows(k)[0].1.end;
    let side = side_by_side::compare(&writer, u, reference, k, (one_percent, k.total())).await;
    say!(
        quiet,
        "{} side by side, alternating: checkpoint {:.1} ms into this store, {:.1} ms into one filled to 1% ({:.2}x; pairwise median {:.2}x); requests {} and {}",
        u.name,
        side["full"]["checkpoint_ms"].as_f64().unwrap(),
        side["at_1_percent"]["checkpoint_ms"].as_f64().unwrap(),
        side["checkpoint_ms_ratio"].as_f64().unwrap(),
        side["checkpoint_ms_pairwise_median_ratio"]
            .as_f64()
            .unwrap(),
        side["full"]["checkpoint_requests"],
        side["at_1_percent"]["checkpoint_requests"]
    );
    drop(writer);
    let mut out = json!({"checkpoints": k.total(), "logical_bytes": logical, "ingest_secs": ingest_secs,
        "checkpoints_per_sec": k.total() as f64 / ingest_secs, "points": points, "side_by_side": side});
    let ms = points_ratio(&out["points"], "checkpoint_ms");
    let reqs = points_ratio(&out["points"], "checkpoint_requests");
    out["checkpoint_ms_100_over_1"] = json!(ms);
    out["checkpoint_requests_100_over_1"] = json!(reqs);
    let objects = census(&store, logical).await;
    say!(
        quiet,
        "{} stored: {} checkpoints in {ingest_secs:.0} s, {:.0} MiB logical, {} objects ({:.0} per logical GiB, {:.0} per stored GiB)",
        u.name,
        k.total(),
        mib(logical),
        objects["objects"],
        objects["per_logical_gib"].as_f64().unwrap(),
        objects["per_stored_gib"].as_f64().unwrap()
    );
    out["before_gc"] = objects;
    out["gc"] = gc_figures(u, &store, k, quiet).await;
    out["after_gc"] = census(&store, logical).await;
    say!(
        quiet,
        "{} one listing of all {} keys after gc: {:.1} s",
        u.name,
        out["after_gc"]["objects"],
        out["after_gc"]["list_secs"].as_f64().unwrap()
    );
    out["restore"] = restore_one(u, k, quiet).await;
    out
}

/// The median of `xs` (0 when empty).
fn median(xs: &[f64]) -> f64 {
    let mut v = xs.to_vec();
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

/// The 100% figure over the 1% one.
fn points_ratio(points: &Value, field: &str) -> Option<f64> {
    let a = points.get("1%")?.get(field)?.as_f64()?;
    let b = points.get("100%")?.get(field)?.as_f64()?;
    (a > 0.0).then(|| b / a)
}

/// Objects and bytes stored, and objects per GiB.
async fn census(store: &Store, logical: u64) -> Value {
    let started = Instant::now();
    let listed = store.backend().list_all(&Prefix::all()).await.unwrap();
    let list_secs = started.elapsed().as_secs_f64();
    let stored: u64 = listed.iter().map(|m| m.size).sum();
    let count = |p: &str| {
        listed
            .iter()
            .filter(|m| m.key.as_str().starts_with(p))
            .count()
    };
    let gib = |b: u64| b as f64 / (1u64 << 30) as f64;
    json!({"objects": listed.len(), "list_secs": list_secs, "stored_bytes": stored, "packs": count(layout::PACKS),
        "index_objects": count(layout::INDEX), "manifests": count(layout::MANIFESTS),
        "per_logical_gib": listed.len() as f64 / gib(logical), "per_stored_gib": listed.len() as f64 / gib(stored)})
}

/// gc of the whole store (keep everything; consolidates small packs, then scans again and
/// seals), then a gc with nothing to do (it reads the state and the seal, format-spec 13.8),
/// then one told `--full` (a full scan with nothing to do), then the packs under 4 MiB per
/// sampled timeline.
async fn gc_figures(u: &Under, store: &Store, k: &Knobs, quiet: bool) -> Value {
    let mut opts = GcOptions::new(Retention::uniform(Policy::KeepAll));
    // No writer runs now: packs of the last minute need not be spared.
    opts.window = std::time::Duration::ZERO;
    let mut runs = Vec::new();
    for what in [
        "gc",
        "gc with nothing to do",
        "gc with nothing to do, --full",
    ] {
        opts.full = what.ends_with("--full");
        let before = u.requests();
        let started = Instant::now();
        let r = gc::run(store, &opts, progress::none()).await.unwrap();
        let secs = started.elapsed().as_secs_f64();
        let reqs = u.requests() - before;
        say!(
            quiet,
            "{} {what}: {secs:.1} s, {reqs} requests, {} manifests from gc's cache, {} packs repacked into {}, {} index objects merged into {}",
            u.name,
            r.manifests_cached,
            r.packs_repacked,
            r.packs_written,
            r.index_objects_deleted,
            r.index_objects_written
        );
        let steps: Vec<String> = r
            .steps
            .iter()
            .map(|s| format!("{} {}", s.step, s.ms))
            .collect();
        say!(
            quiet,
            "{} {what}, ms per step: {}",
            u.name,
            steps.join(", ")
        );
        runs.push(json!({"secs": secs, "requests": reqs, "report": r}));
    }
    let small = small_packs_per_timeline(store, k).await;
    say!(
        quiet,
        "{} after gc: packs under 4 MiB per timeline: max {}, mean {:.2} (over {} timelines)",
        u.name,
        small["max"],
        small["mean"].as_f64().unwrap(),
        small["timelines"]
    );
    let under_5s = |r: &Value| r["secs"].as_f64().unwrap() < 5.0;
    json!({"first": runs[0], "idle": runs[1], "idle_under_5s": under_5s(&runs[1]),
        "full_idle": runs[2], "full_idle_under_5s": under_5s(&runs[2]),
        "small_packs_per_timeline": small})
}

/// For timelines spread over the run: how many packs under 4 MiB hold its chunks.
async fn small_packs_per_timeline(store: &Store, k: &Knobs) -> Value {
    let index = store.load_index().await.unwrap();
    let sizes: std::collections::HashMap<_, _> = store
        .list(&layout::prefix(layout::PACKS))
        .await
        .unwrap()
        .into_iter()
        .filter_map(|m| Some((layout::parse_pack_key(&m.key)?, m.size)))
        .collect();
    let step = (k.timelines / PACK_SAMPLE).max(1);
    let mut counts = Vec::new();
    for n in (0..k.timelines).step_by(step as usize) {
        let (t, tl) = synth::ids(n, k.per_tenant);
        let state = store.checkpoint_state(&t, &tl, None).await.unwrap();
        let packs: std::collections::BTreeSet<_> = state
            .files
            .values()
            .flat_map(|f| f.chunks.iter())
            .filter_map(|c| index.get(&c.id).map(|l| l.pack))
            .collect();
        let small = packs
            .iter()
            .filter(|p| sizes.get(p).is_some_and(|s| *s < SMALL_PACK));
        counts.push(small.count() as f64);
    }
    let max = counts.iter().copied().fold(0.0, f64::max);
    let mean = counts.iter().sum::<f64>() / counts.len().max(1) as f64;
    json!({"max": max, "mean": mean, "timelines": counts.len()})
}

/// Restores the middle timeline with a fresh store handle: seconds and requests.
async fn restore_one(u: &Under, k: &Knobs, quiet: bool) -> Value {
    let (t, tl) = synth::ids(k.timelines / 2, k.per_tenant);
    let to = u.scratch.join("restored");
    let before = u.requests();
    let started = Instant::now();
    let store = Store::open(u.backend.clone()).await.unwrap();
    let r = store
        .restore_timeline(&t, &tl, None, &to, progress::none())
        .await
        .unwrap();
    let secs = started.elapsed().as_secs_f64();
    let reqs = u.requests() - before;
    assert_eq!(
        r.files as u64,
        k.checkpoints * k.files,
        "every file restored"
    );
    std::fs::remove_dir_all(&to).unwrap();
    say!(
        quiet,
        "{} restore of one timeline: {:.0} ms, {reqs} requests ({} files, {:.1} MiB, {} range reads)",
        u.name,
        secs * 1e3,
        r.files,
        mib(r.bytes),
        r.range_reads
    );
    json!({"secs": secs, "requests": reqs, "files": r.files, "bytes": r.bytes, "range_reads": r.range_reads})
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let quiet = args.iter().any(|a| a == "--json");
    let k = Knobs::from_env(args.iter().any(|a| a == "--small"));
    let tmp = tempfile::tempdir().unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    say!(
        quiet,
        "scale: {} timelines ({} per tenant) x {} checkpoints of {} new files (median {:.0} KiB), {} in flight",
        k.timelines,
        k.per_tenant,
        k.checkpoints,
        k.files,
        synth::MEDIAN_FILE / 1024.0,
        k.concurrency
    );
    let mut out = json!({"knobs": format!("{k:?}")});
    let dedup_tenants = env_or("LAYERCAS_SCALE_DEDUP_TENANTS", 4) as usize;
    if dedup_tenants > 0 {
        let root = tmp.path().join("sample");
        let backend: DynBackend = Arc::new(LocalBackend::new(root.join("store")).unwrap());
        let config = StoreConfig::default_config();
        let store = rt.block_on(Store::open_or_create(backend, config)).unwrap();
        let chunker = store.chunker();
        let chunks = |data: &[u8]| {
            let cut = chunker.chunk_slice(data);
            cut.map(|c| (layercas::ChunkId::of(c), c.len() as u64))
                .collect()
        };
        let d = dedup::domains_cost(&root.join("work"), dedup_tenants, 3, chunks);
        say!(
            quiet,
            "dedup domains on the sample workdir ({dedup_tenants} tenants, 4 checkpoints, {:.0} MiB): {:.0} MiB distinct store-wide, {:.0} MiB with one domain per tenant ({:.2}% more)",
            mib(d["logical_bytes"].as_u64().unwrap()),
            mib(d["distinct_bytes_one_domain"].as_u64().unwrap()),
            mib(d["distinct_bytes_per_tenant"].as_u64().unwrap()),
            d["lost_fraction"].as_f64().unwrap() * 100.0
        );
        out["dedup_domains"] = d;
        std::fs::remove_dir_all(&root).unwrap();
    }
    if k.foreign_chunks > 0 {
        let root = tmp.path().join("foreign");
        let tenants = env_or("LAYERCAS_SCALE_FOREIGN_TENANTS", 100);
        out["foreign"] = rt.block_on(foreign::foreign_memory(
            &root,
            k.foreign_chunks,
            tenants,
            quiet,
        ));
        std::fs::remove_dir_all(&root).unwrap();
    }
    for (name, on) in [
        ("local", env_or("LAYERCAS_SCALE_LOCAL", 1)),
        ("s3", env_or("LAYERCAS_SCALE_S3", 1)),
    ] {
        if on == 0 {
            continue;
        }
        let (scratch, ref_scratch) = (tmp.path().join(name), tmp.path().join(format!("{name}-1%")));
        let under = |dir: &Path, tag: &str| {
            std::fs::create_dir_all(dir).unwrap();
            if name == "s3" {
                s3_under(&rt, dir, tag)
            } else {
                local_under(dir)
            }
        };
        let (u, reference) = (under(&scratch, "run"), under(&ref_scratch, "ref"));
        out[name] = rt.block_on(run_backend(&u, &reference, &k, quiet));
        std::fs::remove_dir_all(&scratch).unwrap();
        std::fs::remove_dir_all(&ref_scratch).unwrap();
    }
    println!("{out}");
}
