//! casctl: the maintenance command line of a layercas store. A thin layer over the library:
//! argument parsing, output (text or `--json`), progress bars and exit codes.

mod demo;
mod progress;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use layercas::backend::DynBackend;
use layercas::backend::open::{Opened, StackConfig, open_location, standard_stack};
use layercas::format::config::{ChunkerParams, StoreConfig};
use layercas::format::metadata::{METADATA_FILE_NAME, TimelineMetadata};
use layercas::id::{Lsn, TenantId, TimelineId};
use layercas::store::Store;
use layercas::verify::{VerifyOptions, verify};
use layercas::write::{CheckpointMode, CheckpointRequest, SourceFile, Writer};
use serde::Serialize;

#[derive(Parser)]
#[command(
    name = "casctl",
    version,
    about = "Inspect, fill, restore and check a layercas store"
)]
struct Cli {
    #[command(flatten)]
    store: StoreArgs,
    /// Print machine-readable JSON on stdout instead of text.
    #[arg(long, global = true)]
    json: bool,
    /// Log more (repeat for more detail); logs go to stderr.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    verbose: u8,
    #[command(subcommand)]
    command: Command,
}

/// Where the store is.
#[derive(clap::Args, Clone)]
struct StoreArgs {
    /// The store: a local directory or s3://BUCKET[/PREFIX].
    #[arg(long = "store", global = true, env = "LAYERCAS_STORE")]
    location: Option<String>,
    /// S3 endpoint URL for s3:// stores (default: AWS_ENDPOINT_URL, else AWS itself).
    #[arg(long, global = true)]
    endpoint: Option<String>,
    /// S3 region for s3:// stores (default: AWS_REGION).
    #[arg(long, global = true)]
    region: Option<String>,
}

#[derive(Subcommand)]
enum Command {
    /// Create a store with explicit chunking and pack settings (otherwise the first checkpoint
    /// creates it with the defaults).
    Init {
        #[arg(long, default_value_t = 16 << 10)]
        chunk_min: u32,
        #[arg(long, default_value_t = 32 << 10)]
        chunk_avg: u32,
        #[arg(long, default_value_t = 128 << 10)]
        chunk_max: u32,
        #[arg(long, default_value_t = 16 << 20)]
        pack_size: u64,
        #[arg(long, default_value_t = 3)]
        zstd_level: i32,
    },
    /// Record one checkpoint of a timeline made of the given files (directories are recursed,
    /// names are relative to the argument). A `metadata` file found in a given directory is
    /// used as the timeline metadata unless --metadata names one.
    Checkpoint {
        #[arg(long)]
        tenant: TenantId,
        #[arg(long)]
        timeline: TimelineId,
        /// The checkpoint's LSN (X/Y); must equal the metadata's disk_consistent_lsn if both given.
        #[arg(long)]
        lsn: Option<Lsn>,
        /// A timeline metadata file.
        #[arg(long)]
        metadata: Option<PathBuf>,
        /// Add the files to the previous checkpoint instead of replacing its file set.
        #[arg(long)]
        incremental: bool,
        #[arg(required = true)]
        paths: Vec<PathBuf>,
    },
    /// Restore a timeline (at its newest checkpoint, or the newest at or before --lsn) into a
    /// directory; files appear under their names only when complete and verified.
    Restore {
        #[arg(long)]
        tenant: TenantId,
        #[arg(long)]
        timeline: TimelineId,
        #[arg(long)]
        lsn: Option<Lsn>,
        #[arg(long)]
        to: PathBuf,
    },
    /// List tenants, timelines and checkpoints; with --tenant and --timeline, the files of a
    /// checkpoint.
    Ls {
        #[arg(long, requires = "timeline")]
        tenant: Option<TenantId>,
        #[arg(long, requires = "tenant")]
        timeline: Option<TimelineId>,
        #[arg(long, requires = "tenant")]
        lsn: Option<Lsn>,
    },
    /// Space used against space represented.
    Stats,
    /// Check that every checkpoint's data is present and intact. Exits 1 if any error is found.
    Verify {
        /// Read every pack in full and re-hash every chunk.
        #[arg(long)]
        read_data: bool,
        /// Read only the N-th of M deterministic slices of the packs (N/M, 1 <= N <= M), so
        /// that M runs cover the store.
        #[arg(long, value_name = "N/M", conflicts_with = "read_data")]
        read_data_subset: Option<String>,
    },
    /// Remove checkpoints retention drops, fold manifests, delete and repack packs. Safe while
    /// writers write; they are never blocked. Prints what was (or would be) removed.
    Gc {
        /// Plan and print only.
        #[arg(long)]
        dry_run: bool,
        /// Keep the newest N checkpoints of each timeline.
        #[arg(long, conflicts_with_all = ["keep_since", "retention"])]
        keep_last: Option<usize>,
        /// Keep every checkpoint at or after this LSN.
        #[arg(long, conflicts_with = "retention")]
        keep_since: Option<Lsn>,
        /// A TOML retention file ([default] and [tenants.<id>] tables).
        #[arg(long)]
        retention: Option<PathBuf>,
        /// Repack packs whose live fraction is below this.
        #[arg(long, default_value_t = layercas::gc::DEFAULT_REPACK_THRESHOLD)]
        repack_threshold: f64,
        /// The writers' window in milliseconds (gc waits this long between condemning and
        /// deleting).
        #[arg(long, default_value_t = 60_000)]
        window_ms: u64,
    },
    /// Run the sync loop once over a pageserver workdir: upload every local checkpoint the store
    /// lacks and, with --download, bring back timelines that are only (or newer) in the store.
    /// Exits 1 if any timeline ends evicted.
    Sync {
        #[arg(long)]
        workdir: PathBuf,
        #[arg(long)]
        download: bool,
        /// Timelines synced at once.
        #[arg(long, default_value_t = 4)]
        max_concurrent_sync: usize,
    },
    /// Write a deterministic sample pageserver workdir.
    Generate {
        #[arg(long)]
        dir: PathBuf,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Checkpoints after the first.
        #[arg(long, default_value_t = 2)]
        steps: usize,
    },
    /// The main job end to end on a local store: generate a sample workdir, checkpoint it,
    /// restore it elsewhere, verify, and report what deduplication saved.
    Demo {
        /// Where to work (default: a fresh temporary directory, removed afterwards).
        #[arg(long)]
        dir: Option<PathBuf>,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Checkpoints after the first.
        #[arg(long, default_value_t = 3)]
        steps: usize,
    },
}

fn main() -> std::process::ExitCode {
    // Packs and ranged reads are buffers of megabytes. glibc raises its mmap threshold after the
    // first such buffer is freed and then serves them from per-thread arenas, which keeps freed
    // memory resident; a fixed threshold returns every large buffer to the system when freed.
    // SAFETY: mallopt only changes allocator tuning; called before any other thread exists.
    unsafe { libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 20) };
    let cli = Cli::parse();
    init_logging(cli.verbose);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("casctl: error: {e:#}");
            std::process::ExitCode::from(2)
        }
    }
}

fn init_logging(verbose: u8) {
    let default = match verbose {
        0 => "warn",
        1 => "info",
        2 => "debug",
        _ => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("LAYERCAS_LOG")
        .unwrap_or_else(|_| default.into());
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

async fn run(cli: Cli) -> Result<std::process::ExitCode> {
    let json = cli.json;
    let ok = std::process::ExitCode::SUCCESS;
    match cli.command {
        Command::Init {
            chunk_min,
            chunk_avg,
            chunk_max,
            pack_size,
            zstd_level,
        } => {
            let config = StoreConfig::new(
                ChunkerParams::fastcdc(chunk_min, chunk_avg, chunk_max),
                pack_size,
                zstd_level,
            );
            let store =
                Store::open_or_create(open(&cli.store).await?.backend, config.clone()).await?;
            if store.config().store_id != config.store_id {
                bail!("the store already exists with its own configuration");
            }
            emit(json, store.config(), |c| {
                format!("created store {}", hex::encode(c.store_id))
            });
        }
        Command::Checkpoint {
            tenant,
            timeline,
            lsn,
            metadata,
            incremental,
            paths,
        } => {
            let store = Store::open_or_create(
                open(&cli.store).await?.backend,
                StoreConfig::default_config(),
            )
            .await?;
            let (files, found_metadata) = collect_sources(&paths)?;
            let metadata = resolve_metadata(lsn, metadata.or(found_metadata))?;
            let mode = if incremental {
                CheckpointMode::Incremental
            } else {
                CheckpointMode::Full
            };
            let req = CheckpointRequest {
                tenant,
                timeline,
                metadata,
                files,
                mode,
            };
            let writer = Writer::new(store).await?;
            let (p, pb) = progress::bar("checkpoint", !json);
            let report = writer.checkpoint(req, p).await;
            progress::finish(pb);
            emit(json, &report?, |r| {
                format!(
                    "recorded {} at {}: {} files added ({} already stored whole), {} unchanged, {} removed; \
                     {} new chunks of {}, {} bytes stored in {} packs",
                    r.manifest,
                    r.lsn,
                    r.files_added,
                    r.files_deduplicated,
                    r.files_unchanged,
                    r.files_removed,
                    r.new_chunks,
                    r.chunks,
                    r.new_stored_bytes,
                    r.packs_written
                )
            });
        }
        Command::Restore {
            tenant,
            timeline,
            lsn,
            to,
        } => {
            let store = Store::open(open(&cli.store).await?.backend).await?;
            let (p, pb) = progress::bar("restore", !json);
            let report = store
                .restore_timeline(&tenant, &timeline, lsn, &to, p)
                .await;
            progress::finish(pb);
            emit(json, &report?, |r| {
                format!(
                    "restored {} files ({} bytes) at {} into {}; {} reused, {} chunks in {} ranged reads",
                    r.files,
                    r.bytes,
                    r.lsn,
                    to.display(),
                    r.files_reused,
                    r.chunks_fetched,
                    r.range_reads
                )
            });
        }
        Command::Ls {
            tenant,
            timeline,
            lsn,
        } => {
            let store = Store::open(open(&cli.store).await?.backend).await?;
            match (tenant, timeline) {
                (Some(t), Some(tl)) => list_files(&store, t, tl, lsn, json).await?,
                _ => {
                    let listing = layercas::inspect::list_timelines(&store).await?;
                    emit(json, &listing, |l| {
                        l.iter()
                            .map(|t| {
                                format!("{}/{}: {}", t.tenant, t.timeline, t.checkpoints.join(" "))
                            })
                            .collect::<Vec<_>>()
                            .join("\n")
                    });
                }
            }
        }
        Command::Stats => {
            let opened = open(&cli.store).await?;
            let store = Store::open(opened.backend.clone()).await?;
            let store_stats = layercas::inspect::stats(&store).await?;
            /// The store's numbers plus the requests this run made to read them.
            #[derive(Serialize)]
            struct StatsOutput {
                #[serde(flatten)]
                store: layercas::inspect::StoreStats,
                requests: layercas::backend::layers::metrics::MetricsSnapshot,
            }
            let out = StatsOutput {
                store: store_stats,
                requests: opened.metrics.snapshot(),
            };
            emit(json, &out, |StatsOutput { store: s, requests }| {
                format!(
                    "{} tenants, {} timelines, {} checkpoints\nlogical {} bytes (added {}), stored {} bytes: {:.2}x\n\
                     {} chunks in {} packs ({} bytes), {} index objects ({} bytes), manifests {} bytes",
                    s.tenants,
                    s.timelines,
                    s.manifests,
                    s.logical_bytes,
                    s.added_bytes,
                    s.stored_bytes,
                    s.dedup_ratio,
                    s.chunks,
                    s.packs,
                    s.pack_bytes,
                    s.index_objects,
                    s.index_bytes,
                    s.manifest_bytes
                ) + &format!(
                    "\n{} requests to the store in this run",
                    requests.total_requests()
                )
            });
        }
        Command::Verify {
            read_data,
            read_data_subset,
        } => {
            let subset = read_data_subset.as_deref().map(parse_subset).transpose()?;
            let read_data = read_data || subset.is_some();
            let store = Store::open(open(&cli.store).await?.backend).await?;
            let (p, pb) = progress::bar("verify", !json && read_data);
            let opts = VerifyOptions { read_data, subset };
            let report = verify(&store, opts, p).await;
            progress::finish(pb);
            let report = report?;
            emit(json, &report, |r| {
                let mut lines: Vec<String> = r
                    .problems
                    .iter()
                    .map(|p| {
                        format!("{:?}: {}: {}", p.severity, p.key, p.message).to_lowercase_first()
                    })
                    .collect();
                lines.push(format!(
                    "checked {} manifests, {} index objects, {} packs ({} read, {} chunks re-hashed): {} errors, {} warnings",
                    r.manifests, r.index_objects, r.packs, r.packs_read, r.blobs_checked, r.errors(), r.problems.len() - r.errors()
                ));
                lines.join("\n")
            });
            if report.errors() > 0 {
                return Ok(std::process::ExitCode::from(1));
            }
        }
        Command::Gc {
            dry_run,
            keep_last,
            keep_since,
            retention,
            repack_threshold,
            window_ms,
        } => {
            use layercas::gc::retention::{Policy, Retention};
            if !(0.0..=1.0).contains(&repack_threshold) {
                bail!("--repack-threshold must be between 0 and 1");
            }
            let retention = match (keep_last, keep_since, retention) {
                (Some(0), _, _) => bail!("--keep-last must be at least 1"),
                (Some(n), _, _) => Retention::uniform(Policy::KeepLast(n)),
                (_, Some(l), _) => Retention::uniform(Policy::KeepSince(l)),
                (_, _, Some(f)) => Retention::from_toml(
                    &std::fs::read_to_string(&f).with_context(|| format!("{}", f.display()))?,
                )?,
                _ => Retention::uniform(Policy::KeepAll),
            };
            let mut opts = layercas::gc::GcOptions::new(retention);
            opts.dry_run = dry_run;
            opts.repack_threshold = repack_threshold;
            opts.window = std::time::Duration::from_millis(window_ms);
            let store = Store::open(open(&cli.store).await?.backend).await?;
            let (p, pb) = progress::bar("repack", !json);
            let report = layercas::gc::run(&store, &opts, p).await;
            progress::finish(pb);
            let r = report?;
            emit(json, &r, |r| {
                let verb = if r.dry_run { "would free" } else { "freed" };
                format!(
                    "{}manifests folded {}, deleted {}; packs deleted {}, repacked {}, rescued {}, written {}; index objects deleted {}, written {}; {verb} {} bytes, wrote {} bytes in {} ms",
                    if r.dry_run { "dry run: " } else { "" },
                    r.manifests_folded,
                    r.manifests_deleted,
                    r.packs_deleted,
                    r.packs_repacked,
                    r.packs_rescued,
                    r.packs_written,
                    r.index_objects_deleted,
                    r.index_objects_written,
                    r.bytes_freed,
                    r.bytes_written,
                    r.duration_ms
                )
            });
        }
        Command::Sync {
            workdir,
            download,
            max_concurrent_sync,
        } => {
            let report = sync_once(
                open(&cli.store).await?.backend,
                workdir,
                download,
                max_concurrent_sync,
            )
            .await?;
            emit(json, &report, SyncReport::to_text);
            if report.evicted > 0 {
                return Ok(std::process::ExitCode::from(1));
            }
        }
        Command::Generate { dir, seed, steps } => {
            let summary = demo::generate(&dir, seed, steps)?;
            emit(json, &summary, |s| {
                format!(
                    "wrote {} timelines, {} files, {} bytes under {}",
                    s.timelines,
                    s.files,
                    s.bytes,
                    dir.display()
                )
            });
        }
        Command::Demo { dir, seed, steps } => {
            let report = demo::run(dir, seed, steps, json).await?;
            emit(json, &report, demo::DemoReport::to_text);
            if !report.ok {
                return Ok(std::process::ExitCode::from(1));
            }
        }
    }
    Ok(ok)
}

trait LowerFirst {
    fn to_lowercase_first(self) -> String;
}

impl LowerFirst for String {
    fn to_lowercase_first(self) -> String {
        let mut c = self.chars();
        c.next()
            .map(|f| f.to_lowercase().chain(c).collect())
            .unwrap_or_default()
    }
}

/// Prints `value` as JSON or as the text `text` makes of it.
/// Parses `N/M` with 1 <= N <= M.
fn parse_subset(s: &str) -> Result<(u64, u64)> {
    let parsed = s
        .split_once('/')
        .and_then(|(n, m)| Some((n.parse::<u64>().ok()?, m.parse::<u64>().ok()?)));
    match parsed {
        Some((n, m)) if n >= 1 && n <= m => Ok((n, m)),
        _ => bail!("--read-data-subset wants N/M with 1 <= N <= M, not {s:?}"),
    }
}

fn emit<T: Serialize>(json: bool, value: &T, text: impl FnOnce(&T) -> String) {
    use std::io::Write;
    let out = if json {
        serde_json::to_string_pretty(value).expect("serializable")
    } else {
        text(value)
    };
    // A closed pipe (`casctl ls | head`) is not an error worth a panic.
    let _ = writeln!(std::io::stdout().lock(), "{out}");
}

/// The backend named by `--store`.
/// The store named by `--store` (a directory or `s3://bucket/prefix`), in the standard stack.
async fn open(args: &StoreArgs) -> Result<Opened> {
    let location = args
        .location
        .as_deref()
        .context("no store given: pass --store DIR|s3://BUCKET/PREFIX or set LAYERCAS_STORE")?;
    let base = open_location(location, args.endpoint.clone(), args.region.clone())
        .await
        .with_context(|| format!("opening store {location}"))?;
    Ok(standard_stack(base, &StackConfig::default()))
}

/// A local store directory in the standard stack.
pub async fn open_local(dir: &Path) -> Result<Opened> {
    let base = open_location(&dir.to_string_lossy(), None, None).await?;
    Ok(standard_stack(base, &StackConfig::default()))
}

/// Every file under `paths` with its name, and a `metadata` file found at the top of a directory.
pub fn collect_sources(paths: &[PathBuf]) -> Result<(Vec<SourceFile>, Option<PathBuf>)> {
    let mut files = Vec::new();
    let mut metadata = None;
    for path in paths {
        let md = std::fs::metadata(path).with_context(|| format!("reading {}", path.display()))?;
        if md.is_dir() {
            let candidate = path.join(METADATA_FILE_NAME);
            if candidate.is_file() {
                metadata.get_or_insert(candidate);
            }
            walk(path, path, &mut files)?;
        } else {
            let name = path
                .file_name()
                .and_then(|n| n.to_str())
                .with_context(|| format!("{} has no UTF-8 file name", path.display()))?;
            files.push(SourceFile {
                name: name.to_string(),
                path: path.clone(),
            });
        }
    }
    let mut names = std::collections::HashSet::new();
    for f in &files {
        if !names.insert(&f.name) {
            bail!("two files would be recorded as {:?}", f.name);
        }
    }
    Ok((files, metadata))
}

fn walk(root: &Path, dir: &Path, out: &mut Vec<SourceFile>) -> Result<()> {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .with_context(|| format!("listing {}", dir.display()))?
        .collect::<Result<_, _>>()?;
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let path = e.path();
        let ft = e.file_type()?;
        let rel = path.strip_prefix(root).expect("under root");
        let name = rel
            .to_str()
            .with_context(|| format!("{} is not UTF-8", path.display()))?
            .to_string();
        if ft.is_dir() {
            walk(root, &path, out)?;
        } else if ft.is_file()
            && name != METADATA_FILE_NAME
            && !name
                .rsplit('/')
                .next()
                .unwrap_or("")
                .starts_with(".layercas")
        {
            out.push(SourceFile { name, path });
        }
    }
    Ok(())
}

/// The metadata of a checkpoint from `--lsn` and/or a metadata file.
pub fn resolve_metadata(lsn: Option<Lsn>, file: Option<PathBuf>) -> Result<TimelineMetadata> {
    match (lsn, file) {
        (None, None) => bail!("give --lsn or --metadata (or a directory holding a metadata file)"),
        (Some(lsn), None) => Ok(TimelineMetadata::at(lsn)),
        (lsn, Some(path)) => {
            let bytes =
                std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
            let md = TimelineMetadata::from_file_bytes(&bytes)
                .with_context(|| format!("parsing metadata file {}", path.display()))?;
            if let Some(lsn) = lsn.filter(|l| *l != md.disk_consistent_lsn) {
                bail!(
                    "--lsn {lsn} differs from disk_consistent_lsn {} in {}",
                    md.disk_consistent_lsn,
                    path.display()
                );
            }
            Ok(md)
        }
    }
}

async fn list_files(
    store: &Store,
    tenant: TenantId,
    timeline: TimelineId,
    lsn: Option<Lsn>,
    json: bool,
) -> Result<()> {
    let state = store
        .timeline_state(&tenant, &timeline, lsn)
        .await?
        .with_context(|| format!("timeline {tenant}/{timeline} has no checkpoint there"))?;
    #[derive(Serialize)]
    struct FileRow<'a> {
        name: &'a str,
        size: u64,
        chunks: usize,
        blake3: String,
    }
    let rows: Vec<FileRow> = state
        .files
        .values()
        .map(|f| FileRow {
            name: &f.name,
            size: f.size,
            chunks: f.chunks.len(),
            blake3: f.hash.to_hex(),
        })
        .collect();
    emit(json, &rows, |rows| {
        let mut out = vec![format!("checkpoint {} of {tenant}/{timeline}:", state.lsn)];
        out.extend(
            rows.iter()
                .map(|r| format!("{:>12}  {:>6} chunks  {}", r.size, r.chunks, r.name)),
        );
        out.join("\n")
    });
    Ok(())
}

/// What `casctl sync` did.
#[derive(Serialize)]
pub struct SyncReport {
    pub timelines: Vec<SyncRow>,
    pub ready: usize,
    pub cloud_only: usize,
    pub evicted: usize,
    pub seconds: f64,
}

/// One timeline's final state.
#[derive(Serialize)]
pub struct SyncRow {
    pub tenant: String,
    pub timeline: String,
    pub state: &'static str,
    pub lsn: Option<String>,
}

impl SyncReport {
    fn to_text(&self) -> String {
        let mut lines: Vec<String> = self
            .timelines
            .iter()
            .map(|r| {
                format!(
                    "{}/{}: {} {}",
                    r.tenant,
                    r.timeline,
                    r.state,
                    r.lsn.as_deref().unwrap_or("")
                )
            })
            .collect();
        lines.push(format!(
            "{} ready, {} only in the store, {} evicted, in {:.2} s",
            self.ready, self.cloud_only, self.evicted, self.seconds
        ));
        lines.join("\n")
    }
}

/// Starts the sync loop over `workdir`, lets it converge, and stops it.
pub async fn sync_once(
    backend: DynBackend,
    workdir: PathBuf,
    download: bool,
    max_concurrent_sync: usize,
) -> Result<SyncReport> {
    use layercas::sync::{RemoteStorageConfig, RemoteStorageKind, StateBoard, TimelineSyncState};
    let started = std::time::Instant::now();
    // The kind only names the store for logs; the backend given is the one used.
    let mut remote = RemoteStorageConfig::new(RemoteStorageKind::Local {
        path: workdir.clone(),
    });
    remote.max_concurrent_sync = max_concurrent_sync;
    let board = Arc::new(StateBoard::default());
    let startup =
        layercas::sync::start_with_backend(workdir, &remote, backend, board.clone()).await?;
    let handle = startup.handle.context("the sync loop did not start")?;
    if download {
        for ((tenant, timeline), state) in &startup.states {
            if matches!(
                state,
                TimelineSyncState::CloudOnly(_) | TimelineSyncState::AwaitsDownload(_)
            ) {
                handle.schedule_timeline_download(*tenant, *timeline)?;
            }
        }
    }
    handle.wait_idle().await?;
    handle.shutdown().await;
    let states = board.snapshot();
    let count = |f: fn(&TimelineSyncState) -> bool| states.values().filter(|s| f(s)).count();
    Ok(SyncReport {
        ready: count(|s| matches!(s, TimelineSyncState::Ready(_))),
        cloud_only: count(|s| {
            matches!(
                s,
                TimelineSyncState::CloudOnly(_) | TimelineSyncState::AwaitsDownload(_)
            )
        }),
        evicted: count(|s| matches!(s, TimelineSyncState::Evicted(_))),
        timelines: states
            .into_iter()
            .map(|((t, tl), s)| SyncRow {
                tenant: t.to_string(),
                timeline: tl.to_string(),
                state: s.name(),
                lsn: s.lsn().map(|l| l.to_string()),
            })
            .collect(),
        seconds: started.elapsed().as_secs_f64(),
    })
}
