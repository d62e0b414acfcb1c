//! Ingest and restore benchmark on a generated sample workdir, with the physical limits (blake3
//! and zstd over the same bytes) measured in the same run, and a sweep of average chunk sizes.
//!
//! Run: `cargo bench --bench ingest` (env: LAYERCAS_BENCH_MIB = approximate MiB per timeline of
//! the first checkpoint, default 24; LAYERCAS_BENCH_STEPS = checkpoints after the first, default 3;
//! LAYERCAS_BENCH_SWEEP=0 to skip the chunk-size sweep). Prints a table and one JSON line.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use layercas::backend::local::LocalBackend;
use layercas::config::{ChunkerParams, StoreConfig};
use layercas::ingest::{CheckpointMode, CheckpointRequest, SourceFile, Writer};
use layercas::progress;
use layercas::sample::{CheckpointDelta, SampleSpec, SampleWorkdir};
use layercas::store::Store;
use rayon::prelude::*;

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Peak resident set size since the last reset, in bytes (Linux).
fn peak_rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// Resets the peak RSS counter so the next stage measures its own peak.
fn reset_peak_rss() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

fn mib(b: u64) -> f64 {
    b as f64 / (1 << 20) as f64
}

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
    /// Bytes of files that had to be chunked (new or changed, not recognised whole).
    chunked_bytes: u64,
    stored_bytes: u64,
    objects: u64,
    peak_rss: u64,
}

fn ingest(
    rt: &tokio::runtime::Runtime,
    data: &Dataset,
    store_dir: &Path,
    config: StoreConfig,
) -> IngestResult {
    reset_peak_rss();
    let started = Instant::now();
    let chunked_bytes = rt.block_on(async {
        let backend = Arc::new(LocalBackend::new(store_dir).unwrap());
        let store = Store::open_or_create(backend, config).await.unwrap();
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
                let r = writer.checkpoint(req, progress::none()).await.unwrap();
                chunked += r.chunked_bytes;
            }
        }
        chunked
    });
    let seconds = started.elapsed().as_secs_f64();
    let (objects, stored_bytes) = dir_totals(store_dir);
    IngestResult {
        seconds,
        chunked_bytes,
        stored_bytes,
        objects,
        peak_rss: peak_rss(),
    }
}

fn dir_totals(dir: &Path) -> (u64, u64) {
    let mut stack = vec![dir.to_path_buf()];
    let (mut n, mut bytes) = (0, 0);
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            let name = e.file_name();
            if name.to_str().is_some_and(|s| s.starts_with('.')) {
                continue;
            }
            if e.file_type().unwrap().is_dir() {
                stack.push(e.path());
            } else {
                n += 1;
                bytes += e.metadata().unwrap().len();
            }
        }
    }
    (n, bytes)
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

    let store_dir = tmp.path().join("store");
    let ing = ingest(&rt, &data, &store_dir, StoreConfig::default_config());
    let ingest_rate = mib(data.logical_bytes) / ing.seconds;
    let objects_per_gib = ing.objects as f64 / (data.logical_bytes as f64 / (1u64 << 30) as f64);
    let chunked_rate = mib(ing.chunked_bytes) / ing.seconds;
    println!(
        "ingest:  {ingest_rate:.0} MiB/s logical, {chunked_rate:.0} MiB/s of chunked (new or changed) files ({:.1} MiB in {:.2} s)",
        mib(ing.chunked_bytes),
        ing.seconds
    );
    println!(
        "         stored {:.1} MiB, dedup ratio {:.2}x, {} objects ({objects_per_gib:.0} per logical GiB), peak RSS {:.0} MiB",
        mib(ing.stored_bytes),
        data.logical_bytes as f64 / ing.stored_bytes as f64,
        ing.objects,
        mib(ing.peak_rss)
    );

    reset_peak_rss();
    let started = Instant::now();
    let (restored_bytes, range_reads) = rt.block_on(async {
        let store = Store::open(Arc::new(LocalBackend::new(&store_dir).unwrap()))
            .await
            .unwrap();
        let (mut bytes, mut reads) = (0, 0);
        for (d, _) in data.rounds.last().unwrap() {
            let to = tmp
                .path()
                .join(format!("restored/{}/{}", d.tenant, d.timeline));
            let r = store
                .restore_timeline(&d.tenant, &d.timeline, None, &to, progress::none())
                .await
                .unwrap();
            bytes += r.bytes;
            reads += r.range_reads;
        }
        (bytes, reads)
    });
    let restore_secs = started.elapsed().as_secs_f64();
    println!(
        "restore: {:.0} MiB/s ({:.1} MiB in {restore_secs:.2} s, {range_reads} ranged reads), peak RSS {:.0} MiB",
        mib(restored_bytes) / restore_secs,
        mib(restored_bytes),
        mib(peak_rss())
    );

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
            let r = ingest(&rt, &data, &dir, config);
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
    let json = serde_json::json!({
        "logical_bytes": data.logical_bytes,
        "blake3_mib_s_1core": b3_1, "blake3_mib_s_all": b3_n, "zstd3_mib_s_1core": z_1, "zstd3_mib_s_all": z_n,
        "ingest_mib_s": ingest_rate, "ingest_chunked_mib_s": chunked_rate, "chunked_bytes": ing.chunked_bytes, "stored_bytes": ing.stored_bytes, "objects": ing.objects,
        "objects_per_logical_gib": objects_per_gib, "ingest_peak_rss": ing.peak_rss,
        "restore_mib_s": mib(restored_bytes) / restore_secs, "range_reads": range_reads,
        "sweep": sweep_rows,
    });
    println!("{json}");
}
