//! `casctl demo` and `casctl generate`: the main job end to end on the embedded default — a
//! generated sample workdir, a local store — and the sample generator on its own.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, ensure};
use layercas::backend::DynBackend;
use layercas::format::config::StoreConfig;
use layercas::store::Store;
use layercas::sync::once::{OnceOptions, SyncReport, sync_once};
use layercas::testkit::sample::{SampleSpec, SampleWorkdir};
use layercas::verify::{VerifyOptions, verify};
use serde::Serialize;

use super::Ctx;
use crate::output::{Exit, emit, size};
use crate::progress;

#[derive(clap::Args)]
pub struct Args {
    /// Where to work (default: a fresh temporary directory, removed afterwards).
    #[arg(long)]
    pub dir: Option<PathBuf>,
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Checkpoints after the first.
    #[arg(long, default_value_t = 3)]
    steps: usize,
}

/// Runs `casctl demo`: exit 1 when the demo did not pass.
pub async fn run(ctx: &Ctx, a: Args) -> Result<Exit> {
    let report = run_demo(a.dir, a.seed, a.steps, ctx.json).await?;
    emit(ctx.json, &report, DemoReport::to_text);
    Ok(if report.ok { Exit::Ok } else { Exit::Findings })
}

/// What `generate` wrote.
#[derive(Serialize)]
pub struct GenerateSummary {
    pub timelines: usize,
    pub files: usize,
    pub bytes: u64,
}

/// Writes a sample workdir: checkpoint 0 and `steps` more.
pub fn generate(dir: &Path, seed: u64, steps: usize) -> Result<GenerateSummary> {
    let spec = SampleSpec {
        seed,
        ..SampleSpec::demo()
    };
    let (mut wd, _) = SampleWorkdir::create(dir, &spec)
        .with_context(|| format!("generating into {}", dir.display()))?;
    for _ in 0..steps {
        wd.step().context("advancing the sample workdir")?;
    }
    let (files, bytes) = tree_size(&dir.join("tenants"))?;
    Ok(GenerateSummary {
        timelines: wd.timelines().len(),
        files,
        bytes,
    })
}

/// What the demo did and measured.
#[derive(Serialize)]
pub struct DemoReport {
    pub ok: bool,
    pub workdir: String,
    pub timelines: usize,
    pub checkpoints: usize,
    /// Bytes handed to checkpoints (every file of every checkpoint).
    pub logical_bytes: u64,
    /// Bytes of the files the checkpoints added.
    pub added_bytes: u64,
    pub stored_bytes: u64,
    pub dedup_ratio: f64,
    pub checkpoint_seconds: f64,
    pub restore_seconds: f64,
    pub restored_files: usize,
    pub verify_errors: usize,
    pub verify_warnings: usize,
}

impl DemoReport {
    /// The human-readable summary.
    pub fn to_text(&self) -> String {
        format!(
            "demo {}: {} timelines x {} checkpoints in {}\n\
             synced {} of checkpointed files ({} in files new to their checkpoint) in {:.2} s\n\
             store holds {}: {:.1}x smaller than full copies\n\
             downloaded {} files into an empty workdir, byte-identical, in {:.2} s; verify --read-data: {} errors, {} warnings",
            if self.ok { "passed" } else { "FAILED" },
            self.timelines,
            self.checkpoints,
            self.workdir,
            size(self.logical_bytes),
            size(self.added_bytes),
            self.checkpoint_seconds,
            size(self.stored_bytes),
            self.dedup_ratio,
            self.restored_files,
            self.restore_seconds,
            self.verify_errors,
            self.verify_warnings
        )
    }
}

/// Runs the demo in `dir` (or a temporary directory that is removed afterwards).
async fn run_demo(dir: Option<PathBuf>, seed: u64, steps: usize, json: bool) -> Result<DemoReport> {
    let temp = match &dir {
        Some(_) => None,
        None => Some(tempfile::tempdir().context("creating a temporary directory")?),
    };
    let base = dir.unwrap_or_else(|| temp.as_ref().expect("temp").path().to_path_buf());
    let (work, store_dir, restored) = (
        base.join("workdir"),
        base.join("store"),
        base.join("restored"),
    );
    for d in [&work, &store_dir, &restored] {
        ensure!(
            !d.exists() || d.read_dir()?.next().is_none(),
            "{} exists and is not empty",
            d.display()
        );
    }
    let backend = super::open_local(&store_dir).await?.backend;
    let store = Store::open_or_create(backend.clone(), StoreConfig::default_config()).await?;

    // The pageserver's side: each step writes a checkpoint of every timeline; the sync loop
    // uploads what the store lacks.
    let spec = SampleSpec {
        seed,
        ..SampleSpec::demo()
    };
    let (mut wd, _) =
        SampleWorkdir::create(&work, &spec).context("generating the sample workdir")?;
    let checkpoint_seconds = upload_steps(&backend, &work, &mut wd, steps, json).await?;

    // A new machine: an empty workdir gets every timeline back.
    std::fs::create_dir_all(&restored)?;
    let downloaded = pass(&backend, &restored, true).await?;
    let restore_seconds = downloaded.seconds;
    let identical =
        downloaded.evicted == 0 && same_tree(&work.join("tenants"), &restored.join("tenants"))?;
    let (restored_files, _) = tree_size(&restored.join("tenants"))?;

    let (p, pb) = progress::bar("verify", !json);
    let v = verify(
        &store,
        VerifyOptions {
            read_data: true,
            subset: None,
        },
        p,
    )
    .await;
    progress::finish(pb);
    let v = v?;
    let s = layercas::inspect::stats(&store).await?;
    Ok(DemoReport {
        ok: identical && v.errors() == 0,
        workdir: if temp.is_some() {
            "a temporary directory".into()
        } else {
            base.display().to_string()
        },
        timelines: s.timelines,
        checkpoints: steps + 1,
        logical_bytes: s.logical_bytes,
        added_bytes: s.added_bytes,
        stored_bytes: s.stored_bytes,
        dedup_ratio: s.dedup_ratio,
        checkpoint_seconds,
        restore_seconds,
        restored_files,
        verify_errors: v.errors(),
        verify_warnings: v.problems.len() - v.errors(),
    })
}

/// Syncs the sample workdir after its first checkpoint and after each of `steps` more; returns
/// the seconds the passes took.
async fn upload_steps(
    backend: &DynBackend,
    work: &Path,
    wd: &mut SampleWorkdir,
    steps: usize,
    json: bool,
) -> Result<f64> {
    let mut checkpoint_seconds = 0.0;
    for step in 0..=steps {
        let synced = pass(backend, work, false).await?;
        ensure!(
            synced.evicted == 0,
            "sync evicted {} timelines",
            synced.evicted
        );
        checkpoint_seconds += synced.seconds;
        if !json {
            eprintln!(
                "checkpoint {step}: {} timelines synced in {:.2} s",
                synced.ready, synced.seconds
            );
        }
        if step < steps {
            wd.step().context("advancing the sample workdir")?;
        }
    }
    Ok(checkpoint_seconds)
}

/// One sync pass as `casctl sync` runs it by default, without a progress bar.
async fn pass(backend: &DynBackend, workdir: &Path, download: bool) -> Result<SyncReport> {
    let opts = OnceOptions {
        download,
        max_concurrent_sync: 4,
        progress: layercas::progress::none(),
    };
    Ok(sync_once(backend.clone(), workdir.to_path_buf(), opts).await?)
}

/// Whether two directories hold the same files with the same bytes.
fn same_tree(a: &Path, b: &Path) -> Result<bool> {
    let (fa, fb) = (files_of(a)?, files_of(b)?);
    if fa.len() != fb.len() {
        return Ok(false);
    }
    for (x, y) in fa.iter().zip(&fb) {
        if x.strip_prefix(a)? != y.strip_prefix(b)? || std::fs::read(x)? != std::fs::read(y)? {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Every non-directory entry under `dir`, sorted: all of it, temporaries and `metadata` included.
fn files_of(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for e in walkdir::WalkDir::new(dir).min_depth(1) {
        let e = e?;
        if !e.file_type().is_dir() {
            out.push(e.into_path());
        }
    }
    out.sort();
    Ok(out)
}

fn tree_size(dir: &Path) -> Result<(usize, u64)> {
    let files = files_of(dir)?;
    let bytes = files
        .iter()
        .map(|f| std::fs::metadata(f).map(|m| m.len()))
        .sum::<std::io::Result<u64>>()?;
    Ok((files.len(), bytes))
}
