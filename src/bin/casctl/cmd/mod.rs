//! The casctl commands, one module each, and what they share: the store arguments and how a
//! command's store is opened.
//!
//! Owns dispatch. Each command module owns its arguments, calls the library and formats its
//! result; none holds library logic (walking, metadata, the sync pass live in `layercas::sync`).

pub mod checkpoint;
pub mod demo;
pub mod gc;
pub mod generate;
pub mod init;
pub mod ls;
pub mod repair;
pub mod restore;
pub mod stats;
pub mod sync;
pub mod verify;

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::Subcommand;
use layercas::backend::open::{
    Opened, StackConfig, open_existing_location, open_location, standard_stack,
};

use crate::output::{Exit, UsageError};

/// Where the store is.
#[derive(clap::Args, Clone)]
pub struct StoreArgs {
    /// The store: a local directory or s3://BUCKET[/PREFIX].
    #[arg(long = "store", global = true, env = "LAYERCAS_STORE")]
    location: Option<String>,
    /// S3 endpoint URL for s3:// stores (default: AWS_ENDPOINT_URL, else AWS itself).
    #[arg(long = "endpoint-url", visible_alias = "endpoint", global = true)]
    endpoint_url: Option<String>,
    /// S3 region for s3:// stores (default: AWS_REGION).
    #[arg(long, global = true)]
    region: Option<String>,
}

/// The timeline a command works on.
#[derive(clap::Args)]
pub struct TimelineArgs {
    #[arg(long)]
    pub tenant: layercas::id::TenantId,
    #[arg(long)]
    pub timeline: layercas::id::TimelineId,
}

/// What every command gets besides its own arguments.
pub struct Ctx {
    pub store: StoreArgs,
    /// Print JSON instead of text (and draw no progress bars).
    pub json: bool,
    /// Whether a missing local store directory may be created (commands that write a store);
    /// for the others it is an error naming the path.
    pub create_store: bool,
}

impl Ctx {
    /// Whether `--store` (or `LAYERCAS_STORE`) was given.
    pub fn has_store(&self) -> bool {
        self.store.location.is_some()
    }

    /// The store named by `--store` (a directory or `s3://bucket/prefix`), in the standard stack.
    pub async fn open(&self) -> Result<Opened> {
        let Some(location) = self.store.location.as_deref() else {
            return Err(UsageError(
                "no store given: pass --store DIR|s3://BUCKET/PREFIX or set LAYERCAS_STORE".into(),
            )
            .into());
        };
        let (endpoint, region) = (self.store.endpoint_url.clone(), self.store.region.clone());
        let base = if self.create_store {
            open_location(location, endpoint, region).await
        } else {
            open_existing_location(location, endpoint, region).await
        };
        let base = base.with_context(|| format!("opening store {location}"))?;
        Ok(standard_stack(base, &StackConfig::default()))
    }

    /// The store's directory when it is a local store.
    pub fn local_dir(&self) -> Option<PathBuf> {
        let location = self.store.location.as_deref()?;
        (!location.starts_with("s3://")).then(|| PathBuf::from(location))
    }
}

/// A local store directory in the standard stack.
pub async fn open_local(dir: &Path) -> Result<Opened> {
    let base = open_location(&dir.to_string_lossy(), None, None).await?;
    Ok(standard_stack(base, &StackConfig::default()))
}

/// The staging files of the store when it is local (format-spec section 14.3).
pub fn staging_report(ctx: &Ctx) -> Result<Option<layercas::backend::local::StagingReport>> {
    let Some(dir) = ctx.local_dir() else {
        return Ok(None);
    };
    let report = layercas::backend::local::LocalBackend::staging_report(&dir)
        .with_context(|| format!("reading the staging directory of {}", dir.display()))?;
    Ok(Some(report))
}

/// A text line (with its leading newline) about staging files, empty when there are none.
pub fn staging_line(s: &layercas::backend::local::StagingReport) -> String {
    if s.stale_files == 0 && s.live_files == 0 {
        return String::new();
    }
    format!(
        "\nstaging: {} leftover files of writers that are gone ({}; the next write removes them), {} files of live writers",
        s.stale_files,
        crate::output::size(s.stale_bytes),
        s.live_files
    )
}

#[derive(Subcommand)]
pub enum Command {
    /// Create a store with explicit chunking and pack settings (otherwise the first checkpoint
    /// creates it with the defaults).
    Init(init::Args),
    /// Record one checkpoint of a timeline made of the given files (directories are recursed,
    /// names are relative to the argument). A `metadata` file found in a given directory is
    /// used as the timeline metadata unless --metadata names one.
    Checkpoint(checkpoint::Args),
    /// Restore a timeline (at its newest checkpoint, or the newest at or before --lsn) into a
    /// directory; files appear under their names only when complete and verified.
    Restore(restore::Args),
    /// List tenants, timelines and checkpoints; with --tenant and --timeline, the files of a
    /// checkpoint.
    Ls(ls::Args),
    /// Space used against space represented.
    Stats,
    /// Check that every checkpoint's data is present and intact. Exits 1 if any error is found.
    Verify(verify::Args),
    /// Remove checkpoints retention drops, fold manifests, delete and repack packs. Safe while
    /// writers write; they are never blocked. Prints what was (or would be) removed.
    Gc(gc::Args),
    /// Repair what a lost object broke. `repair index` rebuilds index objects from the tables of
    /// packs no index object names.
    #[command(subcommand)]
    Repair(repair::Command),
    /// Run the sync loop once over a pageserver workdir: upload every local checkpoint the store
    /// lacks and, with --download, bring back timelines that are only (or newer) in the store.
    /// Exits 1 if any timeline ends evicted.
    Sync(sync::Args),
    /// Write a deterministic sample pageserver workdir.
    Generate(generate::Args),
    /// The main job end to end on a local store: generate a sample workdir, checkpoint it,
    /// restore it elsewhere, verify, and report what deduplication saved.
    Demo(demo::Args),
}

impl Command {
    /// Runs the command.
    pub async fn run(self, ctx: &Ctx) -> Result<Exit> {
        match self {
            Command::Init(a) => init::run(ctx, a).await,
            Command::Checkpoint(a) => checkpoint::run(ctx, a).await,
            Command::Restore(a) => restore::run(ctx, a).await,
            Command::Ls(a) => ls::run(ctx, a).await,
            Command::Stats => stats::run(ctx).await,
            Command::Verify(a) => verify::run(ctx, a).await,
            Command::Gc(a) => gc::run(ctx, a).await,
            Command::Repair(c) => repair::run(ctx, c).await,
            Command::Sync(a) => sync::run(ctx, a).await,
            Command::Generate(a) => generate::run(ctx, a),
            Command::Demo(a) => demo::run(ctx, a).await,
        }
    }

    /// Whether the command writes a store, and so may create a missing local store directory.
    pub fn creates_store(&self) -> bool {
        matches!(
            self,
            Command::Init(_) | Command::Checkpoint(_) | Command::Sync(_)
        )
    }

    /// The local directory where an interrupted run may leave temporary files.
    pub fn scratch_dir(&self) -> Option<PathBuf> {
        match self {
            Command::Restore(a) => Some(a.to.clone()),
            Command::Sync(a) => Some(a.workdir.clone()),
            Command::Demo(a) => a.dir.clone(),
            _ => None,
        }
    }
}
