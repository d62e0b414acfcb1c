//! Which compression stores least, and at what CPU cost: the new chunks of successive checkpoints
//! (a real PostgreSQL cluster under pgbench load, and the sample generator's workdir), chunked as
//! a store chunks them and deduplicated across checkpoints, compressed by each candidate scheme:
//! per-chunk zstd at several levels, per-chunk zstd with a dictionary trained on the first chunks
//! written, ~1 MiB groups of consecutive chunks in one frame, and each chunk as a delta against
//! the bytes around it in the previous version of its file. borg 1.2 (zstd,3) and restic
//! (compression auto) ingest the same checkpoints in the same run for reference.
//!
//! Run: `cargo bench --bench compression`. Settings (env): LAYERCAS_COMP_CHECKPOINTS (default 6),
//! LAYERCAS_PEERS_SCALE / LAYERCAS_PEERS_TX / LAYERCAS_PEERS_SAMPLE_MIB as in benches/peers.rs,
//! LAYERCAS_COMP_DATASETS (default `pgbench,sample`), LAYERCAS_COMP_PEERS=0 to skip borg and
//! restic. CPU times are one thread's.

mod common;
#[path = "common/pg.rs"]
mod pg;
#[path = "common/proc.rs"]
#[allow(dead_code)]
mod proc;
#[path = "compression/stored_delta.rs"]
mod stored_delta;
#[path = "common/tools.rs"]
#[allow(dead_code)]
mod tools;

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use common::{env_or, mib};
use layercas::format::config::ChunkerParams;
use layercas::format::{dict, pack};
use layercas::id::ChunkId;
use layercas::testkit::sample::{SampleSpec, SampleWorkdir};
use stored_delta::{Bound, stored_delta};
use tools::{Kind, Tool};

/// Bytes of consecutive new chunks compressed as one frame by the grouped scheme.
const GROUP: usize = 1 << 20;

/// The new chunks of every checkpoint, in the order a writer stores them, and the logical bytes.
struct Chunks {
    new: Vec<Vec<u8>>,
    /// For each new chunk, the bytes around its offset in the previous checkpoint's version of
    /// its file (the same name up to `__`, where the datasets put the LSN), if there was one.
    refs: Vec<Option<Vec<u8>>>,
    /// Each new chunk's id, and the ids of the previous version's chunks overlapping its range.
    ids: Vec<ChunkId>,
    covers: Vec<Vec<ChunkId>>,
    /// Index into `new` where each checkpoint's chunks start.
    starts: Vec<usize>,
    logical: u64,
}

/// Every layer file under the workdir, sorted by path (metadata files are tiny: skipped).
fn layer_files(workdir: &Path) -> Vec<std::path::PathBuf> {
    let mut files: Vec<_> = walkdir::WalkDir::new(workdir.join("tenants"))
        .into_iter()
        .flatten()
        .filter(|e| e.file_type().is_file() && e.file_name() != "metadata")
        .map(|e| e.into_path())
        .collect();
    files.sort();
    files
}

/// A store's chunker, with the default parameters (format-spec section 4).
struct Chunker(ChunkerParams);

impl Chunker {
    fn chunk_slice<'a>(&self, data: &'a [u8]) -> impl Iterator<Item = &'a [u8]> + 'a {
        use fastcdc::v2020::{FastCDC, Normalization};
        let p = &self.0;
        assert_eq!(p.normalization, 1);
        let (min, avg, max) = (
            p.min_size as usize,
            p.avg_size as usize,
            p.max_size as usize,
        );
        FastCDC::with_level(data, min, avg, max, Normalization::Level1)
            .map(move |c| &data[c.offset..c.offset + c.length])
    }
}

/// One version of a file: its bytes and where its chunks start.
struct Version {
    bytes: Vec<u8>,
    layout: Vec<(usize, ChunkId)>,
}

impl Version {
    /// The chunks overlapping `len` bytes at `at`, in file order.
    fn overlapping(&self, at: usize, len: usize) -> Vec<ChunkId> {
        let first = self
            .layout
            .partition_point(|(s, _)| *s <= at)
            .saturating_sub(1);
        self.layout[first..]
            .iter()
            .take_while(|(s, _)| *s < at + len)
            .map(|(_, id)| *id)
            .collect()
    }
}

/// Bytes of the previous version taken on each side of a new chunk's range as its reference.
const REF_SLACK: usize = 16 << 10;

/// Chunks the workdir and appends the chunks not seen before, each with its reference in `prev`
/// (the files of the previous checkpoint by name up to `__`), which it then replaces.
fn take_checkpoint(
    workdir: &Path,
    chunker: &Chunker,
    seen: &mut HashSet<ChunkId>,
    prev: &mut HashMap<String, Version>,
    c: &mut Chunks,
) {
    c.starts.push(c.new.len());
    let mut now = HashMap::new();
    for f in layer_files(workdir) {
        let data = std::fs::read(&f).unwrap();
        c.logical += data.len() as u64;
        let rel = f.strip_prefix(workdir).unwrap().to_string_lossy();
        let stem = rel.split("__").next().unwrap().to_string();
        let old = prev.get(&stem);
        let mut layout = Vec::new();
        for chunk in chunker.chunk_slice(&data) {
            let id = ChunkId::of(chunk);
            let at = chunk.as_ptr() as usize - data.as_ptr() as usize;
            layout.push((at, id));
            if seen.insert(id) {
                c.ids.push(id);
                c.covers
                    .push(old.map_or(Vec::new(), |o| o.overlapping(at, chunk.len())));
                let r = old.map(|o| {
                    let o = &o.bytes;
                    let end = (at + chunk.len() + REF_SLACK).min(o.len());
                    o[at.saturating_sub(REF_SLACK).min(end)..end].to_vec()
                });
                c.new.push(chunk.to_vec());
                c.refs.push(r.filter(|r| !r.is_empty()));
            }
        }
        now.insert(
            stem,
            Version {
                bytes: data,
                layout,
            },
        );
    }
    *prev = now;
}

/// Stored bytes of one scheme and the CPU seconds it took (one thread).
struct Outcome {
    name: String,
    stored: u64,
    compress_s: f64,
    decompress_s: f64,
    extra: String,
}

fn per_chunk(chunks: &[Vec<u8>], level: i32, d: Option<&[u8]>, name: String) -> Outcome {
    if let Some(d) = d {
        return with_store_dictionary(chunks, level, d, name);
    }
    let t = Instant::now();
    let mut c = match d {
        Some(d) => zstd::bulk::Compressor::with_dictionary(level, d).unwrap(),
        None => zstd::bulk::Compressor::new(level).unwrap(),
    };
    let out: Vec<Option<Vec<u8>>> = chunks
        .iter()
        .map(|ch| Some(c.compress(ch).unwrap()).filter(|z| z.len() < ch.len()))
        .collect();
    let compress_s = t.elapsed().as_secs_f64();
    let stored = out
        .iter()
        .zip(chunks)
        .map(|(z, ch)| z.as_ref().map_or(ch.len(), Vec::len) as u64)
        .sum();
    let t = Instant::now();
    let mut dc = match d {
        Some(d) => zstd::bulk::Decompressor::with_dictionary(d).unwrap(),
        None => zstd::bulk::Decompressor::new().unwrap(),
    };
    for (z, ch) in out.iter().zip(chunks) {
        if let Some(z) = z {
            assert_eq!(dc.decompress(z, ch.len()).unwrap().len(), ch.len());
        }
    }
    Outcome {
        name,
        stored,
        compress_s,
        decompress_s: t.elapsed().as_secs_f64(),
        extra: String::new(),
    }
}

/// Per-chunk with dictionary `d`, exactly as a store writes and reads blobs (the 32-byte
/// dictionary id in front of each frame included).
fn with_store_dictionary(chunks: &[Vec<u8>], level: i32, d: &[u8], name: String) -> Outcome {
    let object = dict::encode(d);
    let d = Arc::new(dict::Dictionary::new(dict::DictId::of(&object), d.to_vec()).unwrap());
    dict::register(d.clone());
    let enc = dict::Encoder::new(&d, level).unwrap();
    let t = Instant::now();
    let blobs: Vec<pack::Blob> = chunks
        .iter()
        .map(|c| pack::encode_blob_with(ChunkId::of(c), c, &enc))
        .collect();
    let compress_s = t.elapsed().as_secs_f64();
    let t = Instant::now();
    for b in &blobs {
        pack::decode_blob(&b.entry, &b.data).unwrap();
    }
    Outcome {
        name,
        stored: blobs.iter().map(|b| b.data.len() as u64).sum(),
        compress_s,
        decompress_s: t.elapsed().as_secs_f64(),
        extra: String::new(),
    }
}

fn grouped(chunks: &[Vec<u8>], level: i32) -> Outcome {
    let t = Instant::now();
    let mut c = zstd::bulk::Compressor::new(level).unwrap();
    let (mut stored, mut group, mut frames) =
        (0u64, Vec::with_capacity(GROUP + (128 << 10)), vec![]);
    for (i, ch) in chunks.iter().enumerate() {
        group.extend_from_slice(ch);
        if group.len() >= GROUP || i + 1 == chunks.len() {
            let z = c.compress(&group).unwrap();
            stored += z.len().min(group.len()) as u64;
            frames.push((z, group.len()));
            group.clear();
        }
    }
    let compress_s = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let mut dc = zstd::bulk::Decompressor::new().unwrap();
    for (z, n) in &frames {
        assert_eq!(dc.decompress(z, *n).unwrap().len(), *n);
    }
    Outcome {
        name: format!("grouped {} KiB, level {level}", GROUP >> 10),
        stored,
        compress_s,
        decompress_s: t.elapsed().as_secs_f64(),
        extra: String::new(),
    }
}

/// Per-chunk with a dictionary of `size` bytes trained the way a store trains it.
fn with_dictionary(chunks: &[Vec<u8>], size: usize, level: i32) -> Outcome {
    let t = Instant::now();
    let trained = dict::train(chunks.iter().map(Vec::as_slice), size);
    let train_s = t.elapsed().as_secs_f64();
    let Some(d) = trained else {
        return Outcome {
            name: format!("dictionary {} KiB: training failed", size >> 10),
            stored: 0,
            compress_s: train_s,
            decompress_s: 0.0,
            extra: String::new(),
        };
    };
    let mut o = per_chunk(
        chunks,
        level,
        Some(&d),
        format!("dictionary {} KiB, level {level}", size >> 10),
    );
    o.stored += d.len() as u64;
    o.extra = format!(
        "training {train_s:.2} s on the first {} MiB",
        dict::TRAIN_BYTES >> 20
    );
    o
}

/// What a store gets when it trains once `split` chunks were written: those stay per-chunk
/// level 3, the rest use a dictionary trained on the first of them.
fn trained_after(chunks: &[Vec<u8>], split: usize, size: usize, when: &str) -> Outcome {
    let (before, after) = chunks.split_at(split.min(chunks.len()));
    let t = Instant::now();
    let trained = dict::train(before.iter().map(Vec::as_slice), size);
    let train_s = t.elapsed().as_secs_f64();
    let mut plain = per_chunk(before, 3, None, String::new());
    let mut o = match &trained {
        Some(d) => per_chunk(after, 3, Some(d), String::new()),
        None => per_chunk(after, 3, None, String::new()),
    };
    o.name = format!("dictionary {} KiB trained {when}", size >> 10);
    o.stored += plain.stored + trained.as_ref().map_or(0, |d| d.len() as u64);
    o.compress_s += std::mem::take(&mut plain.compress_s) + train_s;
    o.decompress_s += plain.decompress_s;
    o.extra = format!(
        "{} chunks before the dictionary, training {train_s:.2} s",
        before.len()
    );
    o
}

/// Generates the checkpoints of one dataset, feeding borg and restic as it goes.
fn collect(
    name: &str,
    workdir: &Path,
    scratch: &Path,
    checkpoints: usize,
) -> (Chunks, Vec<(Kind, u64)>) {
    let chunker = Chunker(ChunkerParams::default_params());
    let mut peers: Vec<Tool> = if env_or("LAYERCAS_COMP_PEERS", 1) != 0 {
        [Kind::Borg, Kind::Restic]
            .into_iter()
            .map(|k| Tool::new(k, Path::new("casctl"), scratch))
            .collect()
    } else {
        Vec::new()
    };
    let mut seen = HashSet::new();
    let mut prev = HashMap::new();
    let mut chunks = Chunks {
        new: Vec::new(),
        refs: Vec::new(),
        ids: Vec::new(),
        covers: Vec::new(),
        starts: Vec::new(),
        logical: 0,
    };
    let mut pg = None;
    let mut sample = None;
    if name == "pgbench" {
        let (scale, tx) = (
            env_or("LAYERCAS_PEERS_SCALE", 4),
            env_or("LAYERCAS_PEERS_TX", 2000),
        );
        pg = Some(pg::PgDataset::start(workdir, scale, tx));
    } else {
        let spec = SampleSpec {
            bytes_per_timeline: env_or("LAYERCAS_PEERS_SAMPLE_MIB", 8) << 20,
            ..SampleSpec::demo()
        };
        sample = Some(SampleWorkdir::create(workdir, &spec).unwrap().0);
    }
    for round in 0..checkpoints {
        match (&mut pg, &mut sample) {
            (Some(pg), _) => pg.checkpoint(),
            (_, Some(wd)) if round > 0 => drop(wd.step().unwrap()),
            _ => {}
        }
        take_checkpoint(workdir, &chunker, &mut seen, &mut prev, &mut chunks);
        let tls = tools::timelines(workdir);
        for p in &mut peers {
            p.ingest(workdir, &tls);
        }
        let new: u64 = chunks.new[chunks.starts[round]..]
            .iter()
            .map(|c| c.len() as u64)
            .sum();
        println!(
            "  {name} checkpoint {round}: {:.1} MiB new in chunks",
            mib(new)
        );
    }
    let stored = peers.iter().map(|p| (p.kind, p.stored_bytes())).collect();
    (chunks, stored)
}

fn report(name: &str, chunks: &Chunks, peers: &[(Kind, u64)]) {
    let raw: u64 = chunks.new.iter().map(|c| c.len() as u64).sum();
    println!(
        "\n{name}: {:.1} MiB logical, {} new chunks, {:.1} MiB new raw",
        mib(chunks.logical),
        chunks.new.len(),
        mib(raw)
    );
    for (k, b) in peers {
        println!(
            "  {:<8} stored {:>8.2} MiB (whole repository)",
            k.name(),
            mib(*b)
        );
    }
    let c = &chunks.new;
    // LAYERCAS_COMP_QUICK=1: only level 3, the default dictionary and grouping.
    let quick = env_or("LAYERCAS_COMP_QUICK", 0) != 0;
    let levels: &[i32] = if quick { &[3] } else { &[3, 1, 2, 6, 9, 19] };
    let sizes: &[usize] = if quick {
        &[dict::DEFAULT_DICT_LEN]
    } else {
        &[16 << 10, 64 << 10, dict::MAX_DICT_LEN]
    };
    let mut outcomes: Vec<Outcome> = levels
        .iter()
        .copied()
        .map(|l| per_chunk(c, l, None, format!("per-chunk level {l}")))
        .collect();
    for &size in sizes {
        outcomes.push(with_dictionary(c, size, 3));
    }
    for l in [1, 2, 6] {
        outcomes.push(with_dictionary(c, dict::DEFAULT_DICT_LEN, l));
    }
    let mut acc = 0;
    let at_train_bytes = c
        .iter()
        .position(|ch| {
            acc += ch.len();
            acc >= dict::TRAIN_BYTES
        })
        .map_or(c.len(), |i| i + 1);
    for &size in &sizes[..1] {
        outcomes.push(trained_after(c, at_train_bytes, size, "at 8 MiB"));
        let end_of_first = chunks.starts.get(1).copied().unwrap_or(c.len());
        outcomes.push(trained_after(c, end_of_first, size, "after ckpt 0"));
    }
    outcomes.push(grouped(c, 3));
    outcomes.push(stored_delta::range_delta(c, &chunks.refs, 3));
    for (n, bound, level) in [
        (1, Bound::Chain, 3),
        (2, Bound::Chain, 3),
        (1, Bound::Depth1, 1),
        (1, Bound::Depth1, 2),
        (1, Bound::Depth1, 3),
        (2, Bound::Depth1, 2),
    ] {
        outcomes.push(stored_delta(
            c,
            &chunks.ids,
            &chunks.covers,
            n,
            bound,
            level,
        ));
    }
    println!(
        "  {:<32} {:>10} {:>7} {:>7} {:>7} {:>9} {:>9}",
        "scheme", "MiB", "/lvl3", "/borg", "/restic", "comp MB/s", "dec MB/s"
    );
    let base = outcomes[0].stored as f64;
    for o in &outcomes {
        let ratio = |k| {
            peers
                .iter()
                .find(|(p, _)| *p == k)
                .map_or("-".to_string(), |(_, b)| {
                    format!("{:.3}", o.stored as f64 / *b as f64)
                })
        };
        println!(
            "  {:<32} {:>10.2} {:>7.3} {:>7} {:>7} {:>9.0} {:>9.0}  {}",
            o.name,
            mib(o.stored),
            o.stored as f64 / base,
            ratio(Kind::Borg),
            ratio(Kind::Restic),
            raw as f64 / 1e6 / o.compress_s,
            raw as f64 / 1e6 / o.decompress_s.max(1e-9),
            o.extra
        );
    }
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return; // `cargo test` asks benches to list their tests
    }
    let checkpoints = env_or("LAYERCAS_COMP_CHECKPOINTS", 6) as usize;
    let datasets = std::env::var("LAYERCAS_COMP_DATASETS").unwrap_or("pgbench,sample".into());
    for name in datasets.split(',') {
        if name == "pgbench"
            && let Some(why) = pg::missing()
        {
            println!("SKIPPED pgbench: {why}");
            continue;
        }
        let tmp = tempfile::Builder::new()
            .prefix("layercas-comp")
            .tempdir()
            .unwrap();
        let workdir = tmp.path().join("work");
        std::fs::create_dir_all(&workdir).unwrap();
        let (chunks, peers) = collect(name, &workdir, tmp.path(), checkpoints);
        report(name, &chunks, &peers);
    }
}
