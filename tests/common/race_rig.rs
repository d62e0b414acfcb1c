//! The rig of the end-to-end gc race tests (tests/gc_races.rs): a bucket on the test S3 server,
//! a direct store on it, one request-holding proxy each for writer and gc, checkpoint helpers
//! that remember what each timeline's newest successful checkpoint recorded, and the final
//! check (verify clean, every timeline restores byte for byte).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use layercas::backend::DynBackend;
use layercas::backend::open::{StackConfig, standard_stack};
use layercas::backend::s3::{S3Backend, S3Config, S3Credentials};
use layercas::format::config::StoreConfig;
use layercas::format::metadata::TimelineMetadata;
use layercas::gc::retention::{Policy, Retention};
use layercas::gc::{self, GcOptions, GcReport};
use layercas::id::{Lsn, TimelineId};
use layercas::progress;
use layercas::store::Store;
use layercas::verify::{self, Severity, VerifyOptions};
use layercas::write::{CheckpointMode, CheckpointReport, CheckpointRequest, Writer};

use super::hold_proxy::HoldProxy;
use super::{TENANT, s3server};

pub const T1: TimelineId = TimelineId([0x11; 16]);
pub const T2: TimelineId = TimelineId([0x22; 16]);
pub const T3: TimelineId = TimelineId([0x33; 16]);

pub type Files = BTreeMap<String, Vec<u8>>;

/// A bucket on the test server, a direct store on it, and one proxy each for writer and gc.
pub struct Rig {
    pub bucket: String,
    pub direct: Store,
    pub writer_proxy: HoldProxy,
    pub gc_proxy: HoldProxy,
    /// Source directories of the checkpoints (kept until the test ends).
    pub dirs: Vec<tempfile::TempDir>,
    /// The newest successful checkpoint's files, per timeline.
    pub expected: BTreeMap<TimelineId, Files>,
}

pub fn s3_config(bucket: &str, endpoint: &str) -> S3Config {
    let server = s3server::server();
    let mut config = S3Config::new(bucket).with_endpoint(endpoint);
    config.prefix = "store/".into();
    config.region = Some("us-east-1".into());
    config.credentials = Some(S3Credentials {
        access_key_id: server.access_key.clone(),
        secret_access_key: server.secret_key.clone(),
        session_token: None,
    });
    config
}

/// The S3 backend at `endpoint` in the standard stack every application uses.
pub async fn stacked(bucket: &str, endpoint: &str) -> DynBackend {
    let backend = S3Backend::new(s3_config(bucket, endpoint))
        .await
        .expect("S3 backend");
    standard_stack(Arc::new(backend), &StackConfig::default()).backend
}

impl Rig {
    /// A fresh store whose gc state says `window`.
    pub async fn new(window: Duration) -> Rig {
        let server = s3server::server();
        let bucket = s3server::unique("races");
        let raw = S3Backend::new(s3_config(&bucket, &server.endpoint))
            .await
            .expect("S3 backend");
        raw.create_bucket_if_missing().await.expect("bucket");
        let direct = stacked(&bucket, &server.endpoint).await;
        let direct = Store::open_or_create(direct, StoreConfig::default_config())
            .await
            .expect("store");
        gc::init_state(&direct, window).await.expect("gc state");
        Rig {
            bucket,
            direct,
            writer_proxy: HoldProxy::start(&server.endpoint).await,
            gc_proxy: HoldProxy::start(&server.endpoint).await,
            dirs: Vec::new(),
            expected: BTreeMap::new(),
        }
    }

    /// The store as seen through `proxy`.
    pub async fn via(&self, proxy: &HoldProxy) -> Store {
        Store::open(stacked(&self.bucket, &proxy.url).await)
            .await
            .expect("store via proxy")
    }

    /// A full checkpoint request of `files` on `timeline` at `lsn` (files written to disk).
    pub fn request(&mut self, timeline: TimelineId, lsn: u64, files: &Files) -> CheckpointRequest {
        let dir = tempfile::tempdir().unwrap();
        super::write_files(dir.path(), files);
        let path: PathBuf = dir.path().into();
        self.dirs.push(dir);
        CheckpointRequest {
            tenant: TENANT,
            timeline,
            metadata: TimelineMetadata::at(Lsn(lsn)),
            files: super::sources(&path),
            mode: CheckpointMode::Full,
        }
    }

    /// Records `files` on `timeline` at `lsn` through `writer`, which must succeed.
    pub async fn checkpoint(
        &mut self,
        writer: &Writer,
        timeline: TimelineId,
        lsn: u64,
        files: Files,
    ) {
        let req = self.request(timeline, lsn, &files);
        writer
            .checkpoint(req, progress::none())
            .await
            .unwrap_or_else(|e| panic!("checkpoint {timeline:?} at {lsn}: {e}"));
        self.expected.insert(timeline, files);
    }

    /// Starts a checkpoint of `files` in the background; `expect` it with [`Rig::finished`].
    pub fn spawn(
        &mut self,
        writer: &Arc<Writer>,
        timeline: TimelineId,
        lsn: u64,
        files: Files,
    ) -> Pending {
        let req = self.request(timeline, lsn, &files);
        let writer = writer.clone();
        let task = tokio::spawn(async move { writer.checkpoint(req, progress::none()).await });
        Pending {
            timeline,
            files,
            task,
        }
    }

    /// Waits for a background checkpoint, which must succeed.
    pub async fn finished(&mut self, pending: Pending) {
        let report = pending.task.await.expect("checkpoint task");
        let report = report.unwrap_or_else(|e| {
            panic!(
                "checkpoint {:?} failed (gc must never make it fail): {e}",
                pending.timeline
            )
        });
        assert!(!report.manifest.is_empty());
        self.expected.insert(pending.timeline, pending.files);
    }

    /// A pack that gc will find dead: T1 records `x` at LSN 1 (in one pack of its own), then
    /// only `y` at LSN 2; gc keeping the newest checkpoint drops LSN 1 and with it the pack.
    /// Returns `x`'s files.
    pub async fn dying_pack(&mut self) -> Files {
        let writer = Writer::new(self.direct.clone()).await.expect("writer");
        let x = files("x", 300 << 10, 1);
        self.checkpoint(&writer, T1, 1, x.clone()).await;
        self.checkpoint(&writer, T1, 2, files("y", 200 << 10, 2))
            .await;
        x
    }

    /// Verify finds no error, and every timeline's newest successful checkpoint restores to
    /// exactly the files it recorded.
    pub async fn assert_intact(&self) {
        let opts = VerifyOptions {
            read_data: true,
            subset: None,
        };
        let report = verify::verify(&self.direct, opts, progress::none())
            .await
            .expect("verify");
        let errors: Vec<_> = report
            .problems
            .iter()
            .filter(|p| p.severity == Severity::Error)
            .collect();
        assert!(errors.is_empty(), "verify found errors: {errors:#?}");
        let reader = Writer::new(self.direct.clone()).await.expect("reader");
        for (timeline, files) in &self.expected {
            let (_guard, to) = super::tempdir();
            reader
                .restore(&TENANT, timeline, None, &to, progress::none())
                .await
                .unwrap_or_else(|e| panic!("restore {timeline:?}: {e}"));
            assert!(
                super::read_tree(&to) == *files,
                "{timeline:?} did not restore byte for byte"
            );
        }
    }
}

/// A checkpoint running in the background.
pub struct Pending {
    timeline: TimelineId,
    files: Files,
    task: tokio::task::JoinHandle<layercas::Result<CheckpointReport>>,
}

/// One file `name` of `len` incompressible bytes.
pub fn files(name: &str, len: usize, seed: u64) -> Files {
    [(name.to_string(), super::noise(len, seed))]
        .into_iter()
        .collect()
}

/// A gc run keeping each timeline's newest checkpoint, with `window`.
pub async fn gc(store: &Store, window: Duration) -> layercas::Result<GcReport> {
    let mut opts = GcOptions::new(Retention::uniform(Policy::KeepLast(1)));
    opts.window = window;
    gc::run(store, &opts, progress::none()).await
}
