//! layercas beside borg 1.2 and restic on the same data in the same run: successive checkpoints
//! of a real PostgreSQL cluster under pgbench load, and of the sample generator's workdir.
//! For each dataset and tool: seconds per checkpoint, restore of the last checkpoint to a
//! durable state (restore, then `sync`), stored bytes, peak RSS, the ratios casctl/peer, and
//! the physical limits (blake3, FastCDC, zstd-3 both ways, write+fsync) on the same bytes.
//!
//! Run: `bash scripts/bench-peers.sh` or `cargo bench --bench peers`. Settings (env):
//! LAYERCAS_PEERS_CHECKPOINTS (default 6), LAYERCAS_PEERS_SCALE (pgbench scale, default 4),
//! LAYERCAS_PEERS_TX (pgbench transactions per client between checkpoints, default 2000),
//! LAYERCAS_PEERS_SAMPLE_MIB (sample MiB per timeline, default 8), LAYERCAS_PEERS_RESTORES
//! (restore runs per tool, default 3), LAYERCAS_PEERS_DATASETS (default `pgbench,sample`),
//! LAYERCAS_PEERS_JSON or `--json PATH` (write the results there as JSON), LAYERCAS_PEERS_KEEP=1
//! (keep the workdirs and repositories, for profiling), LAYERCAS_PEERS_PER_TIMELINE=1 (casctl
//! one process per timeline instead of `sync` over the workdir), LAYERCAS_PEERS_IMMUTABLE=0
//! (per timeline, without `--immutable-names`: it reads every file), LAYERCAS_PEERS_NO_DELTAS=1
//! (per timeline, with `--no-deltas`: every new chunk stored whole), LAYERCAS_CASCTL (the
//! casctl binary; default the one cargo built with this bench). Missing borg/restic are
//! installed by scripts/install-peers.sh; when that fails the peers are skipped with a message,
//! or, under CI=true, the bench fails.

mod common;
#[path = "common/limits.rs"]
mod limits;
#[path = "common/pg.rs"]
mod pg;
#[path = "common/proc.rs"]
mod proc;
#[path = "common/tools.rs"]
mod tools;

use std::path::{Path, PathBuf};

use common::{env_or, mib};
use layercas::testkit::sample::{SampleSpec, SampleWorkdir};
use proc::{Cost, median};
use serde_json::{Value, json};
use tools::{Kind, Tool, timelines};

/// Where a dataset's next checkpoint comes from.
enum Source {
    Pg(pg::PgDataset),
    Sample(SampleWorkdir),
}

impl Source {
    /// Writes checkpoint `round` into the workdir.
    fn advance(&mut self, round: usize) {
        match self {
            Source::Pg(pg) => pg.checkpoint(),
            Source::Sample(wd) if round > 0 => {
                wd.step().unwrap();
            }
            Source::Sample(_) => {}
        }
    }

    /// Stops what runs beside the tools (the PostgreSQL server); its files stay.
    fn stop(&mut self) {
        if let Source::Pg(pg) = self {
            pg.stop();
        }
    }
}

struct Settings {
    checkpoints: usize,
    restores: usize,
    casctl: PathBuf,
    json: Option<PathBuf>,
}

/// Fails under CI=true, else prints why something is skipped.
fn skip_or_fail(what: &str, why: &str) {
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("{what}: {why} (CI=true: failing instead of skipping)");
    }
    println!("SKIPPED {what}: {why}");
}

/// The peers that run here, after trying scripts/install-peers.sh for missing ones.
fn peers() -> Vec<Kind> {
    let present = || {
        [
            (Kind::Borg, "borg", "--version"),
            (Kind::Restic, "restic", "version"),
        ]
        .into_iter()
        .filter(|(_, p, a)| proc::available(p, a))
        .map(|(k, _, _)| k)
        .collect::<Vec<_>>()
    };
    let mut found = present();
    if found.len() < 2 && env_or("LAYERCAS_PEERS_INSTALL", 1) != 0 {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/install-peers.sh");
        println!("installing the missing peers with {script}");
        let (_, status, err) = proc::run_status(std::process::Command::new("bash").arg(script));
        if !status.success() {
            println!(
                "{script}: {status}: {}",
                String::from_utf8_lossy(&err).trim()
            );
        }
        found = present();
    }
    for (k, pkg) in [(Kind::Borg, "borgbackup"), (Kind::Restic, "restic")] {
        if !found.contains(&k) {
            let why = format!(
                "`{}` is not installed and could not be (Debian package {pkg})",
                k.name()
            );
            skip_or_fail(k.name(), &why);
        }
    }
    found
}

/// The order tools run in during round `round`: rotated, so none is always first after the
/// data was written.
fn order(n: usize, round: usize) -> impl Iterator<Item = usize> {
    (0..n).map(move |i| (i + round) % n)
}

/// Ingests every checkpoint with every tool, interleaved; returns per tool the cost of each
/// checkpoint, and the logical bytes of all checkpoints.
fn ingest_all(
    tools: &mut [Tool],
    source: &mut Source,
    workdir: &Path,
    s: &Settings,
) -> (Vec<Vec<Cost>>, u64) {
    let mut costs = vec![Vec::new(); tools.len()];
    let mut logical = 0;
    for round in 0..s.checkpoints {
        source.advance(round);
        proc::sync();
        let tls = timelines(workdir);
        let (bytes, files) = proc::tree_bytes(workdir, None);
        logical += bytes;
        let mut line = format!(
            "  checkpoint {round}: {:.1} MiB in {files} files;",
            mib(bytes)
        );
        for i in order(tools.len(), round) {
            let c = tools[i].ingest(workdir, &tls);
            costs[i].push(c);
        }
        for (t, c) in tools.iter().zip(&costs) {
            let c = c[round];
            line += &format!(" {} {:.2} s ({:.2} cpu)", t.kind.name(), c.secs, c.cpu);
        }
        println!("{line}");
    }
    (costs, logical)
}

/// Restores the last checkpoint with every tool, `runs` times, interleaved, each into a new empty
/// directory; checks each restore holds the workdir's files with their bytes. The restored trees
/// stay until the bench ends (see `main` on removing files before restores are timed).
fn restore_all(tools: &[Tool], workdir: &Path, scratch: &Path, runs: usize) -> Vec<Vec<Cost>> {
    let tls = timelines(workdir);
    let want = proc::tree_bytes(workdir, Some("metadata"));
    let want_digest = proc::tree_digest(workdir, Some("metadata"));
    let mut costs = vec![Vec::new(); tools.len()];
    for run in 0..runs {
        for i in order(tools.len(), run) {
            let to = scratch.join(format!("restored-{}-{run}", tools[i].kind.name()));
            let _ = std::fs::remove_dir_all(&to);
            proc::sync();
            let c = tools[i].restore(&to, &tls);
            let got = proc::tree_bytes(&to, Some("metadata"));
            assert_eq!(
                got,
                want,
                "{} restored (bytes, files)",
                tools[i].kind.name()
            );
            let digest = proc::tree_digest(&to, Some("metadata"));
            assert!(
                digest == want_digest,
                "{} restored other bytes than the workdir holds",
                tools[i].kind.name()
            );
            costs[i].push(c);
        }
    }
    costs
}

/// Seconds of each round.
fn secs(c: &[Cost]) -> Vec<f64> {
    c.iter().map(|c| c.secs).collect()
}

/// Median over pairs of a/b.
fn median_ratio(a: &[Cost], b: &[Cost]) -> f64 {
    let r: Vec<f64> = a.iter().zip(b).map(|(a, b)| a.secs / b.secs).collect();
    median(&r)
}

/// The largest peak RSS over all of a tool's runs, as f64 bytes.
fn peak(a: &[Cost], b: &[Cost]) -> f64 {
    a.iter().chain(b).map(|c| c.peak_rss).max().unwrap_or(0) as f64
}

/// Runs one dataset through every tool; prints its table and returns its JSON.
fn run_dataset(
    name: &str,
    source: &mut Source,
    workdir: &Path,
    kinds: &[Kind],
    s: &Settings,
) -> Value {
    let scratch = workdir.parent().unwrap().join(format!("{name}-repos"));
    let mut tools: Vec<Tool> = kinds
        .iter()
        .map(|k| Tool::new(*k, &s.casctl, &scratch))
        .collect();
    println!("dataset {name}:");
    let (ingest, logical) = ingest_all(&mut tools, source, workdir, s);
    source.stop(); // before the restores are timed
    let restore = restore_all(&tools, workdir, &scratch, s.restores);
    let lim = limits::measure(workdir, &scratch, 256 << 20);
    let mut rows = Vec::new();
    for (i, t) in tools.iter().enumerate() {
        rows.push(json!({
            "tool": t.kind.name(), "version": t.version(),
            "ingest_secs": secs(&ingest[i]),
            "ingest_cpu_secs": ingest[i].iter().map(|c| c.cpu).collect::<Vec<_>>(),
            "first_checkpoint_secs": ingest[i][0].secs,
            "secs_per_checkpoint_after_first": median(&secs(&ingest[i][1..])),
            "ingest_peak_rss": ingest[i].iter().map(|c| c.peak_rss).max(),
            "restore_secs": secs(&restore[i]), "restore_secs_median": median(&secs(&restore[i])),
            "restore_peak_rss": restore[i].iter().map(|c| c.peak_rss).max(),
            "stored_bytes": t.stored_bytes(),
        }));
    }
    let ratios: Vec<Value> = (1..tools.len())
        .map(|p| {
            json!({
                "peer": tools[p].kind.name(),
                "ingest_first": ingest[0][0].secs / ingest[p][0].secs,
                "ingest_after_first": median_ratio(&ingest[0][1..], &ingest[p][1..]),
                "restore": median_ratio(&restore[0], &restore[p]),
                "stored": tools[0].stored_bytes() as f64 / tools[p].stored_bytes() as f64,
                "peak_rss": peak(&ingest[0], &restore[0]) / peak(&ingest[p], &restore[p]),
            })
        })
        .collect();
    let out = json!({
        "dataset": name, "checkpoints": s.checkpoints, "logical_bytes": logical,
        "last_checkpoint_bytes": proc::tree_bytes(workdir, None).0,
        "tools": rows, "ratios": ratios, "limits": lim, "rss_floor": proc::own_rss(),
    });
    print_table(&out);
    out
}

/// The dataset's table: one row per tool, then the ratios and the limits.
fn print_table(d: &Value) {
    let f = |v: &Value| v.as_f64().unwrap_or(f64::NAN);
    let m = |v: &Value| mib(v.as_u64().unwrap_or(0));
    println!(
        "\n{}: {} checkpoints, {:.1} MiB in the last, {:.1} MiB logical in all",
        d["dataset"].as_str().unwrap(),
        d["checkpoints"],
        m(&d["last_checkpoint_bytes"]),
        m(&d["logical_bytes"])
    );
    println!(
        "(a peak RSS includes this process's {:.0} MiB resident when the tool starts)",
        m(&d["rss_floor"])
    );
    println!(
        "| tool | s first checkpoint | s/checkpoint after first (median) | restore + sync s (median) | stored MiB | peak RSS ingest MiB | peak RSS restore MiB |"
    );
    println!("|---|---|---|---|---|---|---|");
    for t in d["tools"].as_array().unwrap() {
        println!(
            "| {} | {:.2} | {:.2} | {:.2} | {:.1} | {:.0} | {:.0} |",
            t["tool"].as_str().unwrap(),
            f(&t["first_checkpoint_secs"]),
            f(&t["secs_per_checkpoint_after_first"]),
            f(&t["restore_secs_median"]),
            m(&t["stored_bytes"]),
            m(&t["ingest_peak_rss"]),
            m(&t["restore_peak_rss"])
        );
    }
    for r in d["ratios"].as_array().unwrap() {
        println!(
            "casctl/{}: ingest {:.2} (first checkpoint {:.2}), restore {:.2}, stored {:.2}, peak RSS {:.2}",
            r["peer"].as_str().unwrap(),
            f(&r["ingest_after_first"]),
            f(&r["ingest_first"]),
            f(&r["restore"]),
            f(&r["stored"]),
            f(&r["peak_rss"])
        );
    }
    let l = &d["limits"];
    println!(
        "limits on {:.0} MiB of it (MiB/s): blake3 {:.0} (1 core) {:.0} (all); FastCDC {:.0} (1 core); \
         zstd-3 {:.0} (1 core) {:.0} (all), ratio {:.2}; unzstd {:.0} (1 core) {:.0} (all); write+fsync {:.0}\n",
        f(&l["sample_mib"]),
        f(&l["blake3_1core"]),
        f(&l["blake3_all"]),
        f(&l["fastcdc_1core"]),
        f(&l["zstd3_1core"]),
        f(&l["zstd3_all"]),
        f(&l["zstd3_ratio"]),
        f(&l["unzstd_1core"]),
        f(&l["unzstd_all"]),
        f(&l["write_fsync"])
    );
}

fn settings() -> Settings {
    let args: Vec<String> = std::env::args().collect();
    let json = args
        .iter()
        .position(|a| a == "--json")
        .and_then(|i| args.get(i + 1).map(PathBuf::from))
        .or_else(|| std::env::var_os("LAYERCAS_PEERS_JSON").map(PathBuf::from));
    let casctl = std::env::var_os("LAYERCAS_CASCTL")
        .map(PathBuf::from)
        .unwrap_or_else(|| env!("CARGO_BIN_EXE_casctl").into());
    Settings {
        checkpoints: env_or("LAYERCAS_PEERS_CHECKPOINTS", 6).max(2) as usize,
        restores: env_or("LAYERCAS_PEERS_RESTORES", 3).max(1) as usize,
        casctl,
        json,
    }
}

/// The pgbench dataset, or None (with a message, or a failure under CI) without PostgreSQL.
fn pgbench_source(workdir: &Path) -> Option<Source> {
    if let Some(why) = pg::missing() {
        skip_or_fail("pgbench dataset", &why);
        return None;
    }
    let scale = env_or("LAYERCAS_PEERS_SCALE", 4);
    let tx = env_or("LAYERCAS_PEERS_TX", 2000);
    println!(
        "starting PostgreSQL, pgbench -i -s {scale}, then {tx} transactions x 2 clients between checkpoints"
    );
    Some(Source::Pg(pg::PgDataset::start(workdir, scale, tx)))
}

fn sample_source(workdir: &Path) -> Source {
    let spec = SampleSpec {
        bytes_per_timeline: env_or("LAYERCAS_PEERS_SAMPLE_MIB", 8) << 20,
        ..SampleSpec::demo()
    };
    Source::Sample(SampleWorkdir::create(workdir, &spec).unwrap().0)
}

fn main() {
    let s = settings();
    let mut kinds = vec![Kind::Casctl];
    kinds.extend(peers());
    let tmp = tempfile::Builder::new()
        .prefix("layercas-peers")
        .tempdir()
        .unwrap();
    let keep = env_or("LAYERCAS_PEERS_KEEP", 0) != 0;
    if keep {
        println!(
            "keeping the workdirs and repositories under {}",
            tmp.path().display()
        );
    }
    let mut results = Vec::new();
    // Nothing is removed before the last restore: on ext4 without a journal, creating a file
    // skips every inode of its block group freed in the last minute (or more while the inode
    // table is dirty), so restores timed after thousands of files were removed (the PostgreSQL
    // data directory, an earlier dataset) pay for that scan, more or less by chance.
    let mut sources = Vec::new();
    let datasets = std::env::var("LAYERCAS_PEERS_DATASETS").unwrap_or("pgbench,sample".into());
    for name in datasets.split(',').map(str::trim) {
        let workdir = tmp.path().join(name).join("workdir");
        std::fs::create_dir_all(&workdir).unwrap();
        let source = match name {
            "pgbench" => pgbench_source(&workdir),
            "sample" => Some(sample_source(&workdir)),
            other => panic!("LAYERCAS_PEERS_DATASETS: unknown dataset {other:?} (pgbench, sample)"),
        };
        if let Some(mut source) = source {
            results.push(run_dataset(name, &mut source, &workdir, &kinds, &s));
            sources.push(source);
        }
    }
    drop(sources);
    let versions: Vec<String> = [Kind::Casctl]
        .iter()
        .map(|_| proc::first_line(s.casctl.to_str().unwrap(), &["--version"]))
        .collect();
    if keep {
        let _ = tmp.keep();
    }
    let all = json!({ "casctl": versions[0], "datasets": results });
    if let Some(path) = &s.json {
        std::fs::write(path, serde_json::to_string_pretty(&all).unwrap()).unwrap();
        println!("results written to {}", path.display());
    }
}
