//! `casctl sync`: one pass of the sync loop over a pageserver workdir
//! (`layercas::sync::once::sync_once_with`); exit 1 when a timeline ends evicted or the scan
//! skipped one (unreadable metadata, a symbolic link...). `--config FILE` reads the same
//! `[remote_storage]` section a pageserver reads (the store too, unless `--store` is given).

use std::path::PathBuf;

use anyhow::{Context, Result};
use layercas::sync::once::{OnceOptions, SyncReport, sync_once_with};
use layercas::sync::{RemoteStorageConfig, RemoteStorageKind};

use super::Ctx;
use crate::output::{Exit, UsageError, emit};
use crate::progress;

#[derive(clap::Args)]
pub struct Args {
    #[arg(long)]
    pub workdir: PathBuf,
    #[arg(long)]
    download: bool,
    /// Timelines synced at once.
    #[arg(long, default_value_t = 4)]
    max_concurrent_sync: usize,
    /// A TOML file whose `[remote_storage]` section configures the loop (and names the store
    /// when `--store` is not given).
    #[arg(long)]
    config: Option<PathBuf>,
}

pub async fn run(ctx: &Ctx, a: Args) -> Result<Exit> {
    let (remote, backend) = match &a.config {
        None => (default_remote(&a), ctx.open().await?.backend),
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?;
            let remote = RemoteStorageConfig::from_toml(&text)?.ok_or_else(|| {
                UsageError(format!(
                    "{} has no [remote_storage] section",
                    path.display()
                ))
            })?;
            let backend = if ctx.has_store() {
                ctx.open().await?.backend
            } else {
                remote.open().await?.backend
            };
            (remote, backend)
        }
    };
    let (p, pb) = progress::counter("sync", "timelines", !ctx.json);
    let opts = OnceOptions {
        download: a.download,
        max_concurrent_sync: a.max_concurrent_sync,
        progress: p,
    };
    let report = sync_once_with(backend, a.workdir, opts, remote).await;
    progress::finish(pb);
    let report = report?;
    emit(ctx.json, &report, to_text);
    Ok(if report.evicted > 0 || !report.skipped.is_empty() {
        Exit::Findings
    } else {
        Exit::Ok
    })
}

fn default_remote(a: &Args) -> RemoteStorageConfig {
    // The kind only names the store for logs; the backend opened from --store is the one used.
    RemoteStorageConfig::new(RemoteStorageKind::Local {
        path: a.workdir.clone(),
    })
}

/// The report as text: one line per timeline, the skipped ones, then the totals.
pub fn to_text(r: &SyncReport) -> String {
    let mut lines: Vec<String> = r
        .timelines
        .iter()
        .map(|t| {
            let lsn = t.lsn.as_deref().unwrap_or("");
            format!("{}/{}: {} {lsn}", t.tenant, t.timeline, t.state)
        })
        .collect();
    lines.extend(r.skipped.iter().map(|s| format!("skipped {s}")));
    lines.push(format!(
        "{} ready, {} only in the store, {} evicted, {} skipped, in {:.2} s",
        r.ready,
        r.cloud_only,
        r.evicted,
        r.skipped.len(),
        r.seconds
    ));
    lines.join("\n")
}
