//! How `tests/gc_sim.rs` runs schedules: one seed on a paused runtime (a panic is a problem), the
//! seed list from the environment, and a few threads of seeds with a summary of what happened.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::{GcTally, Verdict, mode_of, schedule};

/// Runs one seed on a fresh paused current-thread runtime; a panic is a problem too.
pub fn run_seed(seed: u64, calm: bool) -> Verdict {
    let shm = Path::new("/dev/shm");
    let dir = if shm.is_dir() {
        tempfile::Builder::new()
            .prefix("gcsim")
            .tempdir_in(shm)
            .unwrap()
    } else {
        tempfile::tempdir().unwrap()
    };
    let root = dir.path().to_path_buf();
    let result = std::panic::catch_unwind(move || {
        // The retry layer's backoff jitter comes from fastrand's per-thread generator.
        fastrand::seed(seed);
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .start_paused(true)
            .build()
            .unwrap();
        let v = rt.block_on(schedule(seed, calm, &root));
        // Joined, not detached: glibc 2.36's pthread_detach can read a blocking thread's
        // descriptor after that thread freed it on exit (SIGSEGV in pthread_detach+28).
        rt.shutdown_timeout(std::time::Duration::from_secs(60));
        v
    });
    result.unwrap_or_else(|p| {
        let msg = p
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_default();
        Verdict {
            problems: vec![format!("PANIC: {msg}")],
            ..Default::default()
        }
    })
}

/// How many failing schedules have their whole trace printed as well as saved.
const PRINTED_TRACES: u64 = 3;

/// Writes a failing schedule's trace to a file and returns its path: a replay re-runs the seed,
/// but packs and intents get fresh ids and so may sort differently, so the trace of the run that
/// failed is the record to read.
fn save_trace(name: &str, seed: u64, trace: &[String]) -> String {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("gc_sim");
    let path = dir.join(format!("{}-seed-{seed}.trace", name.replace(' ', "-")));
    let written =
        std::fs::create_dir_all(&dir).and_then(|()| std::fs::write(&path, trace.join("\n") + "\n"));
    match written {
        Ok(()) => path.display().to_string(),
        Err(e) => format!("not saved ({e})"),
    }
}

/// Seeds to run: `GC_SIM_SEED=S` alone, else `GC_SIM_SCHEDULES` seeds (default `default`)
/// from `GC_SIM_FROM` (default 1).
pub fn seeds(default: u64) -> Vec<u64> {
    if let Ok(s) = std::env::var("GC_SIM_SEED") {
        return vec![s.parse().expect("GC_SIM_SEED must be a number")];
    }
    let n = match std::env::var("GC_SIM_SCHEDULES") {
        Ok(s) => s.parse().expect("GC_SIM_SCHEDULES must be a number"),
        Err(_) => default,
    };
    assert!(
        n > 0,
        "GC_SIM_SCHEDULES=0 runs nothing; refusing to pass vacuously"
    );
    let from: u64 = match std::env::var("GC_SIM_FROM") {
        Ok(s) => s.parse().expect("GC_SIM_FROM must be a number"),
        Err(_) => 1,
    };
    (from..from + n).collect()
}

/// Runs `seeds` on a few threads; prints the summary and every failing seed; returns the losses.
pub fn simulate(name: &str, seeds: Vec<u64>, calm: bool) -> Vec<(u64, Vec<String>)> {
    // One rayon worker: the order in which chunks enter packs, and so pack ids, repeat per seed.
    let _ = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build_global();
    // A panic inside a schedule is caught and reported with its seed; one line is enough.
    std::panic::set_hook(Box::new(|info| eprintln!("panic: {info}")));
    let threads: usize = std::env::var("GC_SIM_THREADS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2);
    let started = std::time::Instant::now();
    let next = AtomicU64::new(0);
    let printed = AtomicU64::new(0);
    let results = std::sync::Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for _ in 0..threads.max(1) {
            s.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed) as usize;
                    let Some(&seed) = seeds.get(i) else { break };
                    let mut v = run_seed(seed, calm);
                    if std::env::var_os("GC_SIM_TRACE").is_some() {
                        v.trace.iter().for_each(|l| eprintln!("{l}"));
                    }
                    if !v.problems.is_empty() {
                        let trace = save_trace(name, seed, &v.trace);
                        eprintln!(
                            "{name}: seed {seed} FAILED (replay: GC_SIM_SEED={seed}; its \
                             trace: {trace}):"
                        );
                        v.problems.iter().for_each(|p| eprintln!("    {p}"));
                        // Where the file is out of reach (CI), the first few traces are printed.
                        if printed.fetch_add(1, Ordering::Relaxed) < PRINTED_TRACES {
                            v.trace.iter().for_each(|l| eprintln!("  | {l}"));
                        }
                    }
                    v.trace = Vec::new();
                    results.lock().unwrap().push((seed, v));
                }
            });
        }
    });
    let mut results = results.into_inner().unwrap();
    results.sort_by_key(|(s, _)| *s);
    let longest = results
        .iter()
        .map(|(_, v)| v.longest_pause)
        .max()
        .unwrap_or_default();
    let (ok, failed): (usize, usize) = results.iter().fold((0, 0), |(a, b), (_, v)| {
        (a + v.checkpoints_ok, b + v.checkpoints_failed)
    });
    let gc = results
        .iter()
        .fold(GcTally::default(), |t, (_, v)| t.add(v.gc));
    let (gc_ok, cached) = (gc.runs_ok, gc.manifests_cached);
    let (sealed, unchanged) = (gc.sealed, gc.unchanged);
    let deltas: u64 = results.iter().map(|(_, v)| v.deltas).sum();
    let mut errors: BTreeMap<String, usize> = BTreeMap::new();
    for (k, n) in results.iter().flat_map(|(_, v)| &v.errors) {
        *errors.entry(k.clone()).or_default() += n;
    }
    eprintln!(
        "{name}: {} schedules in {:.1?}: {} with problems; longest pause injected {:.1?}; checkpoints {ok} ok / {failed} refused, failed or killed; {gc_ok} gc runs completed ({sealed} sealed, {unchanged} stopped at a seal), {cached} manifests from gc's cache, {deltas} chunks stored as deltas",
        seeds.len(),
        started.elapsed(),
        results
            .iter()
            .filter(|(_, v)| !v.problems.is_empty())
            .count(),
        longest,
    );
    eprintln!("{name}: checkpoint errors by kind: {errors:?}");
    let mut modes: BTreeMap<String, usize> = BTreeMap::new();
    for (_, v) in &results {
        let kinds: std::collections::BTreeSet<String> =
            v.problems.iter().map(|p| mode_of(p)).collect();
        kinds
            .into_iter()
            .for_each(|k| *modes.entry(k).or_default() += 1);
    }
    for (mode, n) in &modes {
        eprintln!("{name}: {n} schedules with {mode}");
    }
    let losses: Vec<(u64, Vec<String>)> = results
        .into_iter()
        .filter(|(_, v)| !v.problems.is_empty())
        .map(|(s, v)| (s, v.problems))
        .collect();
    if !losses.is_empty() {
        let list: Vec<String> = losses.iter().map(|(s, _)| s.to_string()).collect();
        eprintln!("{name}: failing seeds: {}", list.join(" "));
    }
    losses
}
