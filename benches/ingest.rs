//! Ingest and restore benchmark on a generated sample workdir, with the physical limits (blake3
//! and zstd over the same bytes) measured in the same run, and a sweep of average chunk sizes.
//!
//! Run: `cargo bench --bench ingest` (env: LAYERCAS_BENCH_MIB = approximate MiB per timeline of
//! the first checkpoint, default 24; LAYERCAS_BENCH_STEPS = checkpoints after the first, default 3;
//! LAYERCAS_BENCH_SWEEP=0 to skip the chunk-size sweep). Prints a table and one JSON line.

mod common;
#[path = "common/s3.rs"]
mod s3;

use common::{env_or, mib, peak_rss, reset_peak_rss};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use layercas::backend::layers::metrics::{Metrics, MetricsSnapshot};
use layercas::backend::local::LocalBackend;
use layercas::backend::wrap::Op;
use layercas::backend::{BackendExt, DynBackend, Prefix};
use layercas::format::config::{ChunkerParams, StoreConfig};
use layercas::progress;
use layercas::store::Store;
use layercas::testkit::sample::{CheckpointDelta, SampleSpec, SampleWorkdir};
use layercas::write::{CheckpointMode, CheckpointRequest, SourceFile, Writer};
use rayon::prelude::*;

fn files_of(dir: &Path) -> Vec<SourceFile> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            let p = e.path();
            if e.file_type().unwrap().is_dir() {
                stack.push(p);
            } else {
                let name = p.strip_prefix(dir).unwrap().to_str().unwrap().to_string();
                if name != "metadata" {
                    out.push(SourceFile { name, path: p });
                }
            }
        }
    }
    out
}

/// A recorded sequence of checkpoints: for each round, per timeline, a snapshot directory.
struct Dataset {
    rounds: Vec<Vec<(CheckpointDelta, PathBuf)>>,
    logical_bytes: u64,
}

/// Generates the workdir and keeps a hard-linked snapshot of every checkpoint (layer files are
/// immutable, so snapshots cost no space).
fn make_dataset(root: &Path, spec: &SampleSpec, steps: usize) -> Dataset {
    let work = root.join("work");
    let (mut wd, mut deltas) = SampleWorkdir::create(&work, spec).unwrap();
    let mut rounds = Vec::new();
    let mut logical = 0;
    for step in 0..=steps {
        let mut round = Vec::new();
        for d in std::mem::take(&mut deltas) {
            let src = work.join(format!("tenants/{}/timelines/{}", d.tenant, d.timeline));
            let snap = root.join(format!("snap/{step}/{}/{}", d.tenant, d.timeline));
            std::fs::create_dir_all(&snap).unwrap();
            for f in files_of(&src) {
                let to = snap.join(&f.name);
                std::fs::create_dir_all(to.parent().unwrap()).unwrap();
                std::fs::hard_link(&f.path, &to).unwrap();
                logical += std::fs::metadata(&to).unwrap().len();
            }
            round.push((d, snap));
        }
        rounds.push(round);
        if step < steps {
            deltas = wd.step().unwrap();
        }
    }
    Dataset {
        rounds,
        logical_bytes: logical,
    }
}

struct IngestResult {
    seconds: f64,
    /// CPU time over wall time: how many cores ingest kept busy.
    cores: f64,
    /// Bytes of files that had to be chunked (new or changed, not recognised whole).
    chunked_bytes: u64,
    stored_bytes: u64,
    objects: u64,
    peak_rss: u64,
}

/// CPU seconds (user + system) this process has used.
fn cpu_seconds() -> f64 {
    // SAFETY: getrusage only fills the struct passed to it.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) };
    let t = |tv: libc::timeval| tv.tv_sec as f64 + tv.tv_usec as f64 / 1e6;
    t(u.ru_utime) + t(u.ru_stime)
}

fn ingest(
    rt: &tokio::runtime::Runtime,
    data: &Dataset,
    backend: DynBackend,
    config: StoreConfig,
) -> IngestResult {
    reset_peak_rss();
    let started = Instant::now();
    let cpu_before = cpu_seconds();
    let chunked_bytes = rt.block_on(async {
        let store = Store::open_or_create(backend.clone(), config)
            .await
            .unwrap();
        let writer = Writer::new(store).await.unwrap();
        let mut chunked = 0;
        for round in &data.rounds {
            for (d, dir) in round {
                let req = CheckpointRequest {
                    tenant: d.tenant,
                    timeline: d.timeline,
                    metadata: d.metadata.clone(),
                    files: files_of(dir),
                    mode: CheckpointMode::Full,
                };
                chunked += writer
                    .checkpoint(req, progress::none())
                    .await
                    .unwrap()
                    .chunked_bytes;
            }
        }
        chunked
    });
    let seconds = started.elapsed().as_secs_f64();
    let cores = (cpu_seconds() - cpu_before) / seconds;
    let peak_rss = peak_rss();
    let listed = rt.block_on(backend.list_all(&Prefix::all())).unwrap();
    let stored_bytes = listed.iter().map(|m| m.size).sum();
    IngestResult {
        seconds,
        cores,
        chunked_bytes,
        stored_bytes,
        objects: listed.len() as u64,
        peak_rss,
    }
}

/// Restores the newest checkpoint of every timeline; returns bytes, ranged reads and seconds.
fn restore_all(
    rt: &tokio::runtime::Runtime,
    data: &Dataset,
    backend: DynBackend,
    to: &Path,
) -> (u64, usize, f64) {
    reset_peak_rss();
    let started = Instant::now();
    let (bytes, reads) = rt.block_on(async {
        let store = Store::open(backend).await.unwrap();
        let (mut bytes, mut reads) = (0, 0);
        for (d, _) in data.rounds.last().unwrap() {
            let to = to.join(format!("{}/{}", d.tenant, d.timeline));
            let r = store
                .restore_timeline(&d.tenant, &d.timeline, None, &to, progress::none())
                .await
                .unwrap();
            bytes += r.bytes;
            reads += r.range_reads;
        }
        (bytes, reads)
    });
    (bytes, reads, started.elapsed().as_secs_f64())
}

/// Ingest and restore over one backend; prints a block and returns its numbers.
fn run_backend(
    rt: &tokio::runtime::Runtime,
    data: &Dataset,
    name: &str,
    backend: DynBackend,
    metrics: Option<Arc<Metrics>>,
    restore_to: &Path,
) -> serde_json::Value {
    let ing = ingest(rt, data, backend.clone(), StoreConfig::default_config());
    let puts = metrics.as_ref().map(|m| m.snapshot().op(Op::Put).requests);
    let ingest_rate = mib(data.logical_bytes) / ing.seconds;
    let objects_per_gib = ing.objects as f64 / (data.logical_bytes as f64 / (1u64 << 30) as f64);
    let chunked_rate = mib(ing.chunked_bytes) / ing.seconds;
    println!(
        "{name} ingest:  {ingest_rate:.0} MiB/s logical, {chunked_rate:.0} MiB/s of chunked (new or changed) files ({:.1} MiB in {:.2} s, {:.2} cores busy)",
        mib(ing.chunked_bytes),
        ing.seconds,
        ing.cores
    );
    println!(
        "{name}          stored {:.1} MiB, dedup ratio {:.2}x, {} objects ({objects_per_gib:.0} per logical GiB), peak RSS {:.0} MiB{}",
        mib(ing.stored_bytes),
        data.logical_bytes as f64 / ing.stored_bytes as f64,
        ing.objects,
        mib(ing.peak_rss),
        puts.map(|p| format!(", {p} PUT requests"))
            .unwrap_or_default()
    );
    let gets_before = metrics.as_ref().map(|m| get_class(&m.snapshot()));
    let (bytes, reads, secs) = restore_all(rt, data, backend, restore_to);
    let gets = metrics
        .as_ref()
        .map(|m| get_class(&m.snapshot()) - gets_before.unwrap_or(0));
    println!(
        "{name} restore: {:.0} MiB/s ({:.1} MiB in {secs:.2} s, {reads} ranged reads{}), peak RSS {:.0} MiB",
        mib(bytes) / secs,
        mib(bytes),
        gets.map(|g| format!(", {g} GET-class requests"))
            .unwrap_or_default(),
        mib(peak_rss())
    );
    serde_json::json!({
        "ingest_mib_s": ingest_rate, "ingest_chunked_mib_s": chunked_rate, "chunked_bytes": ing.chunked_bytes,
        "stored_bytes": ing.stored_bytes, "objects": ing.objects, "objects_per_logical_gib": objects_per_gib,
        "ingest_peak_rss": ing.peak_rss, "ingest_cores_busy": ing.cores, "put_requests": puts, "restore_mib_s": mib(bytes) / secs,
        "range_reads": reads, "restore_get_requests": gets,
    })
}

fn get_class(s: &MetricsSnapshot) -> u64 {
    s.op(Op::Get).requests + s.op(Op::GetRange).requests + s.op(Op::Head).requests
}

/// A fresh bucket on an S3 server (`common/s3.rs`), in the standard stack.
fn s3_backend(rt: &tokio::runtime::Runtime) -> (DynBackend, Arc<Metrics>) {
    let opened = s3::bucket(rt, &format!("bench-{}", std::process::id()));
    (opened.backend, opened.metrics)
}

fn local(dir: &Path) -> DynBackend {
    Arc::new(LocalBackend::new(dir).unwrap())
}

/// Throughput of blake3 and zstd-3 over 32 KiB pieces of the newest round's bytes, on one core and
/// on all cores: the physical limit ingest is compared against.
fn physical_limits(data: &Dataset) -> (f64, f64, f64, f64, f64) {
    let mut bytes = Vec::new();
    for (_, dir) in data.rounds.last().unwrap() {
        for f in files_of(dir) {
            bytes.extend(std::fs::read(&f.path).unwrap());
        }
    }
    let pieces: Vec<&[u8]> = bytes.chunks(32 << 10).collect();
    let rate = |secs: f64| mib(bytes.len() as u64) / secs;
    let t = Instant::now();
    pieces.iter().for_each(|p| {
        std::hint::black_box(blake3::hash(p));
    });
    let b3_1 = rate(t.elapsed().as_secs_f64());
    let t = Instant::now();
    pieces.par_iter().for_each(|p| {
        std::hint::black_box(blake3::hash(p));
    });
    let b3_n = rate(t.elapsed().as_secs_f64());
    let t = Instant::now();
    let stored: usize = pieces
        .iter()
        .map(|p| zstd::bulk::compress(p, 3).unwrap().len())
        .sum();
    let z_1 = rate(t.elapsed().as_secs_f64());
    let t = Instant::now();
    pieces.par_iter().for_each(|p| {
        std::hint::black_box(zstd::bulk::compress(p, 3).unwrap());
    });
    let z_n = rate(t.elapsed().as_secs_f64());
    (b3_1, b3_n, z_1, z_n, bytes.len() as f64 / stored as f64)
}

fn main() {
    let mib_per_timeline = env_or("LAYERCAS_BENCH_MIB", 24);
    let steps = env_or("LAYERCAS_BENCH_STEPS", 3) as usize;
    let sweep = env_or("LAYERCAS_BENCH_SWEEP", 1) != 0;
    let tmp = tempfile::tempdir().unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let spec = SampleSpec {
        bytes_per_timeline: mib_per_timeline << 20,
        ..SampleSpec::demo()
    };
    let data = make_dataset(tmp.path(), &spec, steps);
    let total_files: usize = data
        .rounds
        .iter()
        .flatten()
        .map(|(_, d)| files_of(d).len())
        .sum();
    println!(
        "dataset: {} timelines x {} checkpoints, {:.1} MiB logical in {} file versions",
        data.rounds[0].len(),
        data.rounds.len(),
        mib(data.logical_bytes),
        total_files
    );

    let (b3_1, b3_n, z_1, z_n, zratio) = physical_limits(&data);
    println!(
        "limits:  blake3 {b3_1:.0} MiB/s (1 core), {b3_n:.0} MiB/s (all); zstd-3 {z_1:.0} MiB/s (1 core), {z_n:.0} MiB/s (all), ratio {zratio:.2}"
    );

    let mut json = serde_json::json!({
        "logical_bytes": data.logical_bytes,
        "blake3_mib_s_1core": b3_1, "blake3_mib_s_all": b3_n, "zstd3_mib_s_1core": z_1, "zstd3_mib_s_all": z_n,
    });
    let local_store = local(&tmp.path().join("store"));
    json["local"] = run_backend(
        &rt,
        &data,
        "local",
        local_store,
        None,
        &tmp.path().join("restored-local"),
    );
    if env_or("LAYERCAS_BENCH_S3", 1) != 0 {
        let (s3, metrics) = s3_backend(&rt);
        json["s3"] = run_backend(
            &rt,
            &data,
            "s3",
            s3,
            Some(metrics),
            &tmp.path().join("restored-s3"),
        );
    }

    let mut sweep_rows = Vec::new();
    if sweep {
        println!("chunk-size sweep (min = avg/2, max = avg*4):");
        println!(
            "| avg KiB | dedup ratio (logical/stored) | stored MiB | chunks/GiB stored | ingest MiB/s |"
        );
        println!("|---|---|---|---|---|");
        for avg_kib in [16u32, 32, 64, 128, 256] {
            let avg = avg_kib << 10;
            let config =
                StoreConfig::new(ChunkerParams::fastcdc(avg / 2, avg, avg * 4), 16 << 20, 3);
            let dir = tmp.path().join(format!("sweep-{avg_kib}"));
            let r = ingest(&rt, &data, local(&dir), config);
            let ratio = data.logical_bytes as f64 / r.stored_bytes as f64;
            let rate = mib(data.logical_bytes) / r.seconds;
            let chunks = rt.block_on(async {
                let store = Store::open(Arc::new(LocalBackend::new(&dir).unwrap()))
                    .await
                    .unwrap();
                store.load_index().await.unwrap().len()
            });
            let per_gib = chunks as f64 / (r.stored_bytes as f64 / (1u64 << 30) as f64);
            println!(
                "| {avg_kib} | {ratio:.2} | {:.1} | {per_gib:.0} | {rate:.0} |",
                mib(r.stored_bytes)
            );
            sweep_rows.push(serde_json::json!({"avg_kib": avg_kib, "dedup_ratio": ratio, "stored_bytes": r.stored_bytes, "ingest_mib_s": rate}));
            std::fs::remove_dir_all(&dir).unwrap();
        }
    }
    json["sweep"] = serde_json::Value::Array(sweep_rows);
    println!("{json}");
}
