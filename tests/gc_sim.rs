//! Deterministic simulation of gc beside writers (issue 10): seeded schedules in tokio paused
//! time, where one `Writer` records 2-3 timelines concurrently while 2-3 gc runs with different
//! settings collect, every party behind the production backend stack (retry, timeout, limit,
//! metrics) over an adversarial backend (tests/common/adversary.rs) that delays, pauses far beyond
//! any gc window, reorders, and lets timed-out writes land later; either side may be killed at a
//! random point (its future dropped). After each schedule: every chunk of every manifest resolves
//! through an index object to a pack holding it intact, and the latest successful checkpoint of
//! each timeline restores byte-identically (or a newer checkpoint exists).
//!
//! `GC_SIM_SCHEDULES=N` runs N seeds from `GC_SIM_FROM` (default 1; N defaults to 10,000, 0 is
//! an error), `GC_SIM_SEED=S` replays one seed, `GC_SIM_THREADS=T` sets how many schedules run
//! at once (default 2), `GC_SIM_TRACE=1` prints every request and event of each schedule in
//! virtual time (use with `GC_SIM_SEED`), and `GC_SIM_ABLATE=late,pause,concurrent,gcs,kill`
//! switches adversary features off. A failing schedule's trace is always saved (path printed;
//! the first three are printed too): a replay repeats the schedule, but fresh pack and intent ids
//! can sort differently and take it down another path.

#[path = "common/adversary.rs"]
mod adversary;
mod common;
#[path = "common/gc_sim_check.rs"]
mod sim_check;
#[path = "common/gc_sim_driver.rs"]
mod sim_driver;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use layercas::backend::DynBackend;
use layercas::backend::open::{StackConfig, standard_stack};
use layercas::format::config::{ChunkerParams, StoreConfig};
use layercas::format::metadata::TimelineMetadata;
use layercas::gc::retention::{Policy, Retention};
use layercas::gc::{self, GcOptions};
use layercas::id::{Lsn, TimelineId};
use layercas::store::Store;
use layercas::testkit::memory::MemoryBackend;
use layercas::write::{CheckpointMode, CheckpointRequest, Writer};
use layercas::{Error, progress};

use adversary::{Adversary, Profile, Rng, Stats};
use common::{TENANT, local_backend, noise, sources, write_files};
use sim_check::check;
use sim_driver::{seeds, simulate};

fn small_config() -> StoreConfig {
    StoreConfig::new(ChunkerParams::fastcdc(256, 1024, 4096), 64 << 10, 1)
}

fn timeline_id(t: usize) -> TimelineId {
    TimelineId([0x10 + t as u8; 16])
}

/// How one checkpoint attempt ended.
#[derive(Clone, Debug)]
enum Outcome {
    Ok,
    /// A clean refusal or failure reported to the caller.
    Err(String),
    /// Its future was dropped at a random point.
    Killed,
}

/// One checkpoint attempt: what it tried to record and how that ended.
#[derive(Clone, Debug)]
struct Attempt {
    timeline: usize,
    lsn: u64,
    files: BTreeMap<String, Vec<u8>>,
    outcome: Outcome,
}

/// The settings of one gc party.
#[derive(Clone, Debug)]
struct GcPlan {
    start: Duration,
    runs: usize,
    gap: Duration,
    opts: GcOptions,
    /// Drop the party's current run this long after it started.
    kill_after: Option<Duration>,
    profile: Profile,
}

/// Everything a seed decides up front.
#[derive(Clone, Debug)]
struct Plan {
    /// The schedule's time scale: the init window, and the unit of the gc windows.
    base: Duration,
    /// The window written by `init_state` (`None`: no state until the first gc).
    init_window: Option<Duration>,
    timelines: usize,
    steps: usize,
    /// File contents checkpoints pick from (so content dropped by retention comes back).
    pool: Vec<Vec<u8>>,
    /// Chance (per mille) that a checkpoint is killed, and the latest moment.
    kill_per_mille: u64,
    kill_max: Duration,
    /// Longest idle time of a timeline between checkpoints.
    think_max: Duration,
    writer: Profile,
    gcs: Vec<GcPlan>,
    /// Long enough for every late write to land.
    settle: Duration,
}

fn pick<T: Clone>(rng: &mut Rng, xs: &[T]) -> T {
    xs[rng.below(xs.len() as u64) as usize].clone()
}

/// An adversary profile for a party whose longest window is `window`.
fn hostile(rng: &mut Rng, window: Duration, prefixes: &[&'static str]) -> Profile {
    let mut pause_prefixes: Vec<&'static str> = prefixes
        .iter()
        .copied()
        .filter(|_| rng.chance(500))
        .collect();
    if pause_prefixes.is_empty() {
        pause_prefixes.push(pick(rng, prefixes));
    }
    Profile {
        jitter: Duration::from_millis(rng.below(60)),
        pause_prefixes,
        pause_per_mille: pick(rng, &[0, 20, 50, 100, 200]),
        pause_min: window / 2,
        pause_max: window * 10,
        late_per_mille: pick(rng, &[0, 0, 30, 100]),
        late_fail_max: Duration::from_secs(pick(rng, &[1, 10, 40])),
        late_land_max: window * 10,
    }
}

impl Plan {
    fn new(seed: u64) -> Plan {
        let mut rng = Rng::new(seed);
        let base = pick(&mut rng, &[500u64, 1000, 5000, 60_000]);
        let base = Duration::from_millis(base);
        let init_window = rng.chance(800).then_some(base);
        let gcs: Vec<GcPlan> = (0..2 + rng.below(2))
            .map(|_| {
                let window = base * pick(&mut rng, &[1u32, 1, 2, 4]) / 2;
                let mut opts = GcOptions::new(Retention::uniform(Policy::KeepLast(
                    1 + rng.below(3) as usize,
                )));
                opts.window = window;
                opts.repack_threshold = pick(&mut rng, &[0.0, 0.5, 0.9, 1.0]);
                opts.max_chain = pick(&mut rng, &[2, 64]);
                let prefixes = ["gc/state", "manifests/", "index/", "packs/", ""];
                GcPlan {
                    start: rng.between(Duration::ZERO, base * 4),
                    runs: 1 + rng.below(3) as usize,
                    gap: rng.between(Duration::ZERO, base * 2),
                    kill_after: rng
                        .chance(300)
                        .then(|| rng.between(Duration::ZERO, base * 3)),
                    profile: hostile(&mut rng, base * 2, &prefixes),
                    opts,
                }
            })
            .collect();
        let prefixes = ["gc/state", "manifests/", "index/", "packs/"];
        let writer = hostile(&mut rng, base * 2, &prefixes);
        let pool = (0..6)
            .map(|i| noise(1500 + rng.below(5000) as usize, seed * 97 + i))
            .collect();
        Plan {
            base,
            init_window,
            timelines: 2 + rng.below(2) as usize,
            steps: 3 + rng.below(4) as usize,
            pool,
            kill_per_mille: pick(&mut rng, &[0, 50, 150]),
            kill_max: base * 3,
            think_max: base * pick(&mut rng, &[0u32, 1, 3]),
            settle: base * 40 + Duration::from_secs(600),
            writer,
            gcs,
        }
    }
}

impl Plan {
    /// Switches off the adversary features named in `GC_SIM_ABLATE` (comma-separated: `late`,
    /// `pause`, `concurrent`, `gcs`, `kill`), to find which ones a failing schedule needs.
    fn ablate(mut self) -> Plan {
        let off = std::env::var("GC_SIM_ABLATE").unwrap_or_default();
        for what in off.split(',').filter(|w| !w.is_empty()) {
            let profiles = std::iter::once(&mut self.writer)
                .chain(self.gcs.iter_mut().map(|g| &mut g.profile));
            match what {
                "late" => profiles.for_each(|p| p.late_per_mille = 0),
                "pause" => profiles.for_each(|p| p.pause_per_mille = 0),
                "concurrent" => self.timelines = 1,
                "gcs" => self.gcs.truncate(1),
                "kill" => {
                    self.kill_per_mille = 0;
                    self.gcs.iter_mut().for_each(|g| g.kill_after = None);
                }
                other => panic!("GC_SIM_ABLATE: unknown feature {other:?}"),
            }
        }
        self
    }

    /// The same schedule without the adversary's pauses and late writes, every gc using the
    /// same window: the timing today's window-based fence assumes.
    fn calm(mut self) -> Plan {
        let calm = Profile {
            jitter: self.writer.jitter,
            ..Profile::calm()
        };
        self.writer = calm.clone();
        for g in &mut self.gcs {
            g.profile = calm.clone();
            g.opts.window = self.base;
        }
        self
    }
}

/// The per-schedule result.
/// What the completed gc runs of a schedule did.
#[derive(Clone, Copy, Debug, Default)]
struct GcTally {
    runs_ok: usize,
    /// Manifests gc runs took from the manifest cache (format-spec 13.7).
    manifests_cached: usize,
    /// Runs that sealed the store, and runs that stopped at a seal (format-spec 13.8).
    sealed: usize,
    unchanged: usize,
}

impl GcTally {
    fn add(mut self, o: GcTally) -> GcTally {
        self.runs_ok += o.runs_ok;
        self.manifests_cached += o.manifests_cached;
        self.sealed += o.sealed;
        self.unchanged += o.unchanged;
        self
    }
}

#[derive(Debug, Default)]
struct Verdict {
    problems: Vec<String>,
    longest_pause: Duration,
    checkpoints_ok: usize,
    checkpoints_failed: usize,
    /// Chunks stored as deltas by checkpoints that succeeded.
    deltas: u64,
    gc: GcTally,
    /// Checkpoint errors by kind.
    errors: BTreeMap<String, usize>,
    /// Every request and event in virtual time: kept when the schedule failed or
    /// `GC_SIM_TRACE` is set.
    trace: Vec<String>,
}

/// One timeline's checkpoints, one after another, all through the shared `writer`.
async fn timeline(
    writer: &Writer,
    plan: &Plan,
    t: usize,
    mut rng: Rng,
    root: &Path,
    stats: &Stats,
) -> Vec<Attempt> {
    let mut out = Vec::new();
    let mut lsn = 0x100u64;
    for step in 0..plan.steps {
        let mut files = BTreeMap::new();
        files.insert("base".to_string(), plan.pool[0].clone());
        for k in 0..1 + rng.below(3) {
            let content = &plan.pool[1 + rng.below(plan.pool.len() as u64 - 1) as usize];
            files.insert(format!("layer_{k}"), content.clone());
        }
        if rng.chance(300) {
            files.insert(format!("own_{step}"), noise(2000, rng.next()));
        }
        let dir = root.join(format!("work/t{t}/s{step}"));
        write_files(&dir, &files);
        tokio::time::sleep(rng.between(Duration::ZERO, plan.think_max)).await;
        lsn += 0x10;
        let req = CheckpointRequest {
            tenant: TENANT,
            timeline: timeline_id(t),
            metadata: TimelineMetadata::at(Lsn(lsn)),
            files: sources(&dir),
            mode: CheckpointMode::Full,
        };
        stats.log(|| {
            format!(
                "writer timeline {t} checkpoint {lsn:#x} starts: {:?}",
                files.keys().collect::<Vec<_>>()
            )
        });
        let run = async {
            let r = writer.checkpoint(req, progress::none()).await;
            if let Ok(report) = &r {
                stats.deltas.fetch_add(report.new_deltas, Ordering::Relaxed);
            }
            r
        };
        let outcome = if rng.chance(plan.kill_per_mille) {
            let at = rng.between(Duration::ZERO, plan.kill_max);
            match tokio::time::timeout(at, run).await {
                Err(_) => Outcome::Killed,
                Ok(r) => outcome_of(r),
            }
        } else {
            outcome_of(run.await)
        };
        stats.log(|| format!("writer timeline {t} checkpoint {lsn:#x} ends: {outcome:?}"));
        out.push(Attempt {
            timeline: t,
            lsn,
            files,
            outcome,
        });
    }
    out
}

fn outcome_of<T>(r: layercas::Result<T>) -> Outcome {
    match r {
        Ok(_) => Outcome::Ok,
        Err(e) => Outcome::Err(error_kind(&e)),
    }
}

fn error_kind(e: &Error) -> String {
    match e {
        Error::Fenced(_) => "fenced".into(),
        Error::AlreadyExists(_) => "already exists".into(),
        Error::Backend(b) if b.is_transient() => "transient".into(),
        other => without_ids(&other.to_string()),
    }
}

/// `text` with every run of 16 or more hex digits (ids, keys) replaced by `…`, so that errors
/// and problems group by kind.
fn without_ids(text: &str) -> String {
    let mut out = String::new();
    let mut run = String::new();
    for ch in text.chars().chain(std::iter::once(' ')) {
        if ch.is_ascii_hexdigit() {
            run.push(ch);
            continue;
        }
        out.push_str(if run.len() >= 16 { "…" } else { &run });
        run.clear();
        out.push(ch);
    }
    out.pop();
    out
}

/// The kind of a problem line: when, what, and for lost chunks how the checkpoint ended.
fn mode_of(problem: &str) -> String {
    let (when, rest) = problem.split_once(": ").unwrap_or(("", problem));
    let what = rest.split(':').next().unwrap_or(rest);
    let how = [
        "(checkpoint Ok)",
        "(checkpoint Err",
        "(checkpoint Killed)",
        "(checkpoint unknown)",
    ]
    .iter()
    .find(|h| rest.contains(*h))
    .map(|h| format!(" {}", h.trim_start_matches('(').trim_end_matches(')')))
    .unwrap_or_default();
    format!("{when}: {what}{how}")
}

/// One gc party: `runs` runs, possibly one killed, each on its own adversarial stack.
/// Returns what its completed runs did.
async fn gc_party(n: usize, base: DynBackend, p: GcPlan, rng: Rng, stats: Arc<Stats>) -> GcTally {
    tokio::time::sleep(p.start).await;
    let name = format!("gc{n}");
    let backend = standard_stack(
        Adversary::wrap(&name, &base, rng, p.profile.clone(), &stats),
        &StackConfig::default(),
    );
    let Ok(store) = Store::open(backend.backend).await else {
        return GcTally::default();
    };
    let mut tally = GcTally::default();
    for i in 0..p.runs {
        stats.log(|| {
            format!(
                "{name} run {i} starts: window {:?} retention {:?} repack {} max_chain {}",
                p.opts.window, p.opts.retention.default, p.opts.repack_threshold, p.opts.max_chain
            )
        });
        let run = gc::run(&store, &p.opts, progress::none());
        // Losing a race to another gc or a failed request is an abort, not damage.
        let done = match (i, p.kill_after) {
            (0, Some(at)) => tokio::time::timeout(at, run).await.ok(),
            _ => Some(run.await),
        };
        stats.log(|| match &done {
            None => format!("{name} run {i} KILLED"),
            Some(Ok(r)) => format!("{name} run {i} done: {r:?}"),
            Some(Err(e)) => format!("{name} run {i} failed: {e}"),
        });
        if let Some(Ok(r)) = &done {
            tally = tally.add(GcTally {
                runs_ok: 1,
                manifests_cached: r.manifests_cached,
                sealed: r.sealed as usize,
                unchanged: r.unchanged as usize,
            });
        }
        tokio::time::sleep(p.gap).await;
    }
    tally
}

async fn schedule(seed: u64, calm: bool, root: &Path) -> Verdict {
    let plan = Plan::new(seed);
    let plan = if calm { plan.calm() } else { plan }.ablate();
    let mut rng = Rng::new(seed.wrapping_mul(31) + 7);
    // Odd seeds run on the in-memory backend, whose etags are MD5 digests as S3's are, so that
    // gc's manifest cache (format-spec 13.7) is in play; even seeds on local files.
    let base: DynBackend = if seed % 2 == 1 {
        Arc::new(MemoryBackend::new())
    } else {
        local_backend(&root.join("store"))
    };
    let store = Store::open_or_create(base.clone(), small_config())
        .await
        .unwrap();
    if let Some(w) = plan.init_window {
        gc::init_state(&store, w).await.unwrap();
    }
    let stats = Arc::new(Stats::start());
    let w_backend = Adversary::wrap("writer", &base, rng.fork(), plan.writer.clone(), &stats);
    let w_store = Store::open(standard_stack(w_backend, &StackConfig::default()).backend)
        .await
        .unwrap();
    let writer = loop {
        match Writer::new(w_store.clone()).await {
            Ok(w) => break w,
            Err(_) => tokio::time::sleep(Duration::from_secs(1)).await,
        }
    };
    let timelines = futures::future::join_all(
        (0..plan.timelines).map(|t| timeline(&writer, &plan, t, rng.fork(), root, &stats)),
    );
    let gcs = futures::future::join_all(
        plan.gcs
            .iter()
            .enumerate()
            .map(|(i, p)| gc_party(i, base.clone(), p.clone(), rng.fork(), stats.clone())),
    );
    let (attempts, gc_ok) = tokio::join!(timelines, gcs);
    let attempts: Vec<Attempt> = attempts.into_iter().flatten().collect();
    // Let every late write land.
    tokio::time::sleep(plan.settle).await;
    let mut v = Verdict {
        longest_pause: Duration::from_millis(stats.longest_pause_ms.load(Ordering::Relaxed)),
        checkpoints_ok: attempts
            .iter()
            .filter(|a| matches!(a.outcome, Outcome::Ok))
            .count(),
        gc: gc_ok.into_iter().fold(GcTally::default(), GcTally::add),
        deltas: stats.deltas.load(Ordering::Relaxed),
        ..Default::default()
    };
    v.checkpoints_failed = attempts.len() - v.checkpoints_ok;
    for a in &attempts {
        if let Outcome::Err(e) = &a.outcome {
            *v.errors.entry(e.clone()).or_default() += 1;
            // No LSN is tried twice, so the checkpoint there can only be the attempt's own
            // (landed late, perhaps made a base by gc since); and a manifest gc deleted while
            // the writer read its timeline means listing again. Neither is a failure.
            if e == "already exists" || e.ends_with("not found") {
                v.problems.push(format!(
                    "timeline {} checkpoint {:#x} failed with {e:?}",
                    a.timeline, a.lsn
                ));
            }
        }
    }
    check(
        &store,
        &plan,
        &attempts,
        root,
        "after the race",
        &stats.resurrected.lock().unwrap().clone(),
        &mut v.problems,
    )
    .await;
    if v.problems.is_empty() {
        // A final, undisturbed gc keeping everything must not break what the race left.
        let mut opts = GcOptions::new(Retention::uniform(Policy::KeepAll));
        opts.window = Duration::from_millis(100);
        if let Err(e) = gc::run(&store, &opts, progress::none()).await {
            v.problems.push(format!("final gc failed: {e}"));
        }
        check(
            &store,
            &plan,
            &attempts,
            root,
            "after the final gc",
            &stats.resurrected.lock().unwrap().clone(),
            &mut v.problems,
        )
        .await;
    }
    if !v.problems.is_empty() || std::env::var_os("GC_SIM_TRACE").is_some() {
        v.trace = stats.trace();
    }
    v
}

/// The simulation issue 10 asks for, with every adversary feature on: 10,000 schedules (about
/// 4 minutes on two cores); `GC_SIM_SCHEDULES=100000` for the long run. Seeds 20,001-120,000
/// found one problem (seed 24329, a reader's false gap), fixed since.
#[test]
fn gc_and_writers_never_lose_data_under_any_timing() {
    let losses = simulate("gc_sim", seeds(10_000), false);
    assert!(losses.is_empty(), "{} schedules lost data", losses.len());
}

/// Seeds that once failed (each fixed since, with the fix named in its commit), run besides the
/// range above: 6847 and 17611 (gc relied on doomed packs), 43 and 52 (a create gc made a base
/// reported "already exists"), 24329 (a reader's false gap), 136673 (gc deleted the predecessor
/// of a checkpoint whose intent was already gone; fails on every replay of the old code).
#[test]
fn seeds_that_once_failed_pass() {
    let seeds = vec![43, 52, 6847, 17611, 24329, 136673];
    let losses = simulate("gc_sim regressions", seeds, false);
    assert!(losses.is_empty(), "{} schedules failed", losses.len());
}

/// The harness itself, on schedules today's fence is built for (no pause or late write beyond
/// the window, one window for every gc; still concurrent checkpoints, concurrent and killed gc
/// runs, killed checkpoints, jitter and retries through the real stack). Runs in CI now.
#[test]
fn calm_schedules_lose_nothing() {
    let n = std::env::var("GC_SIM_CALM_SCHEDULES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(300);
    let list = if std::env::var_os("GC_SIM_SEED").is_some() {
        seeds(1)
    } else {
        (1..=n).collect()
    };
    let losses = simulate("gc_sim calm", list, true);
    assert!(
        losses.is_empty(),
        "{} calm schedules lost data",
        losses.len()
    );
}
