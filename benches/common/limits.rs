//! Physical limits measured on the same bytes in the same run: blake3, FastCDC with the store's
//! default chunk sizes, zstd-3 compression and decompression (one core and all cores), and disk write with
//! fsync. They bound what any of the compared tools can do on this machine at this minute.

use std::io::Write;
use std::path::Path;
use std::time::Instant;

use fastcdc::v2020::{FastCDC, Normalization};
use layercas::format::config::ChunkerParams;
use rayon::prelude::*;

/// Pieces hashed or compressed independently (the store's average chunk size).
const PIECE: usize = 32 << 10;

/// Throughputs in MiB/s.
#[derive(Debug, serde::Serialize)]
pub struct Limits {
    pub sample_mib: f64,
    pub blake3_1core: f64,
    pub blake3_all: f64,
    pub fastcdc_1core: f64,
    pub zstd3_1core: f64,
    pub zstd3_all: f64,
    pub zstd3_ratio: f64,
    pub unzstd_1core: f64,
    pub unzstd_all: f64,
    pub write_fsync: f64,
}

/// Reads up to `cap` bytes of the files under `dir`.
fn sample(dir: &Path, cap: usize) -> Vec<u8> {
    let mut bytes = Vec::new();
    for e in walkdir::WalkDir::new(dir)
        .sort_by_file_name()
        .into_iter()
        .flatten()
    {
        if bytes.len() >= cap {
            break;
        }
        if e.file_type().is_file() {
            bytes.extend(std::fs::read(e.path()).unwrap());
        }
    }
    bytes.truncate(cap);
    bytes
}

/// MiB/s of `f` over `len` bytes.
fn rate(len: usize, f: impl FnOnce()) -> f64 {
    let t = Instant::now();
    f();
    len as f64 / (1 << 20) as f64 / t.elapsed().as_secs_f64()
}

/// Measures the limits over (up to `cap` bytes of) the files under `dir`, writing the fsync
/// probe under `scratch`.
pub fn measure(dir: &Path, scratch: &Path, cap: usize) -> Limits {
    let bytes = sample(dir, cap);
    let n = bytes.len();
    let pieces: Vec<&[u8]> = bytes.chunks(PIECE).collect();
    let hash = |p: &&[u8]| {
        std::hint::black_box(blake3::hash(p));
    };
    let blake3_1core = rate(n, || pieces.iter().for_each(hash));
    let blake3_all = rate(n, || pieces.par_iter().for_each(hash));
    let p = ChunkerParams::default_params();
    let fastcdc_1core = rate(n, || {
        let (min, avg, max) = (
            p.min_size as usize,
            p.avg_size as usize,
            p.max_size as usize,
        );
        let cuts = FastCDC::with_level(&bytes, min, avg, max, level(p.normalization));
        std::hint::black_box(cuts.count());
    });
    let compress = |p: &&[u8]| zstd::bulk::compress(p, 3).unwrap();
    let mut packed = Vec::new();
    let zstd3_1core = rate(n, || packed = pieces.iter().map(compress).collect());
    let zstd3_all = rate(n, || {
        std::hint::black_box(pieces.par_iter().map(compress).count());
    });
    let stored: usize = packed.iter().map(Vec::len).sum();
    let unpack = |c: &Vec<u8>| {
        std::hint::black_box(zstd::bulk::decompress(c, PIECE).unwrap());
    };
    let unzstd_1core = rate(n, || packed.iter().for_each(unpack));
    let unzstd_all = rate(n, || packed.par_iter().for_each(unpack));
    Limits {
        sample_mib: n as f64 / (1 << 20) as f64,
        blake3_1core,
        blake3_all,
        fastcdc_1core,
        zstd3_1core,
        zstd3_all,
        zstd3_ratio: n as f64 / stored.max(1) as f64,
        unzstd_1core,
        unzstd_all,
        write_fsync: write_fsync(&bytes, scratch),
    }
}

fn level(n: u8) -> Normalization {
    match n {
        0 => Normalization::Level0,
        1 => Normalization::Level1,
        2 => Normalization::Level2,
        _ => Normalization::Level3,
    }
}

/// MiB/s of writing `bytes` to a new file in 1 MiB writes and fsyncing it (as `dd conv=fsync`).
fn write_fsync(bytes: &[u8], scratch: &Path) -> f64 {
    let path = scratch.join("fsync-probe");
    let r = rate(bytes.len(), || {
        let mut f = std::fs::File::create(&path).unwrap();
        for piece in bytes.chunks(1 << 20) {
            f.write_all(piece).unwrap();
        }
        f.sync_all().unwrap();
    });
    std::fs::remove_file(&path).unwrap();
    r
}
