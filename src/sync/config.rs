//! Sync configuration: the `[remote_storage]` TOML section and the loop's limits.
//!
//! ```toml
//! [remote_storage]
//! local_path = "/var/lib/layercas"        # either a local directory ...
//! # bucket_name = "pageserver-backup"     # ... or an S3 bucket
//! # bucket_region = "eu-central-1"
//! # endpoint = "http://127.0.0.1:9000"    # S3-compatible servers
//! # prefix_in_bucket = "staging/"
//! metadata_format = "pageserver"          # or "layercas", or "auto" (the default)
//! max_concurrent_sync = 4                 # timelines synced at once
//! max_sync_errors = 10                    # failures before a timeline is evicted
//! base_backoff = "100ms"                  # first retry delay of a failed task ...
//! max_backoff = "30s"                     # ... doubling up to this
//! # The backend under the loop (each is optional; these are the defaults):
//! request_timeout = "30s"                 # per call, and per transfer below 8 MiB
//! large_request_timeout = "10m"           # per transfer of 8 MiB or more
//! max_attempts = 6                        # tries of a call failing transiently
//! retry_base_delay = "50ms"               # first delay between tries ...
//! retry_max_delay = "5s"                  # ... doubling up to this
//! max_concurrent_reads = 32               # backend reads in flight
//! max_concurrent_writes = 16              # backend writes in flight
//! # Used only when the store is created:
//! chunk_min = 16384
//! chunk_avg = 32768
//! chunk_max = 131072
//! pack_target_size = 16777216
//! ```
//! [`RemoteStorageConfig`] derives `Deserialize` from that section, so a pageserver can embed it
//! in its own configuration struct; [`RemoteStorageConfig::from_toml`] reads it from a whole
//! document. Durations are humantime strings (`"250ms"`, `"30s"`, `"1m 30s"`), read with
//! `humantime-serde`. The older keys `base_backoff_ms` and `max_backoff_ms` (plain integer
//! milliseconds) are still accepted; giving both forms of one setting is an error. Unknown keys
//! are errors.
//!
//! Owns parsing and validation. Must not open connections: see `RemoteStorageConfig::open`.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

use crate::backend::layers::retry::RetryConfig;
use crate::backend::layers::timeout::TimeoutConfig;
use crate::backend::local::LocalBackend;
use crate::backend::open::{Opened, StackConfig, open_location, standard_stack};
use crate::backend::{BackendError, DynBackend};
use crate::error::{Error, Result};
use crate::format::config::{ChunkerParams, StoreConfig};
use crate::format::metadata::MetadataFormat;

/// Where the store is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RemoteStorageKind {
    /// A directory on local disk.
    Local {
        /// The store's root directory.
        path: PathBuf,
    },
    /// An S3 bucket (or a prefix of one).
    S3 {
        /// The bucket.
        bucket: String,
        /// The region; the SDK's default chain when absent.
        region: Option<String>,
        /// An S3-compatible endpoint URL instead of AWS.
        endpoint: Option<String>,
        /// A key prefix, so several stores can share a bucket.
        prefix: Option<String>,
    },
}

/// The `[remote_storage]` section.
#[derive(Clone, Debug, Deserialize)]
#[serde(try_from = "RawSection")]
pub struct RemoteStorageConfig {
    /// Where the store is.
    pub kind: RemoteStorageKind,
    /// How the timelines' `metadata` files are read.
    pub metadata_format: MetadataFormat,
    /// Timelines synced at once.
    pub max_concurrent_sync: usize,
    /// Consecutive failures of one timeline's task before it is reported `Evicted`.
    pub max_sync_errors: u32,
    /// First retry delay of a failed task; doubles per failure up to `max_backoff`.
    pub base_backoff: Duration,
    /// The longest wait between retries of a failing timeline.
    pub max_backoff: Duration,
    /// Timeouts, retries and concurrency of the backend stack the loop opens.
    pub backend: StackConfig,
    /// The configuration a new store is created with.
    pub store: StoreConfig,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSection {
    local_path: Option<PathBuf>,
    bucket_name: Option<String>,
    bucket_region: Option<String>,
    endpoint: Option<String>,
    prefix_in_bucket: Option<String>,
    metadata_format: Option<MetadataFormat>,
    max_concurrent_sync: Option<usize>,
    max_sync_errors: Option<u32>,
    #[serde(default, with = "humantime_serde")]
    base_backoff: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    max_backoff: Option<Duration>,
    /// Before humantime durations: plain milliseconds.
    base_backoff_ms: Option<u64>,
    max_backoff_ms: Option<u64>,
    #[serde(default, with = "humantime_serde")]
    request_timeout: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    large_request_timeout: Option<Duration>,
    max_attempts: Option<u32>,
    #[serde(default, with = "humantime_serde")]
    retry_base_delay: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    retry_max_delay: Option<Duration>,
    max_concurrent_reads: Option<usize>,
    max_concurrent_writes: Option<usize>,
    chunk_min: Option<u32>,
    chunk_avg: Option<u32>,
    chunk_max: Option<u32>,
    pack_target_size: Option<u64>,
    zstd_level: Option<i32>,
}

#[derive(Deserialize)]
struct RawFile {
    remote_storage: Option<toml::Value>,
}

impl TryFrom<RawSection> for RemoteStorageConfig {
    type Error = String;

    fn try_from(raw: RawSection) -> std::result::Result<Self, String> {
        let kind = match (raw.local_path, raw.bucket_name) {
            (Some(path), None) => RemoteStorageKind::Local { path },
            (None, Some(bucket)) => RemoteStorageKind::S3 {
                bucket,
                region: raw.bucket_region,
                endpoint: raw.endpoint,
                prefix: raw.prefix_in_bucket,
            },
            _ => return Err("give exactly one of local_path and bucket_name".into()),
        };
        let mut c = RemoteStorageConfig::new(kind);
        c.metadata_format = raw.metadata_format.unwrap_or(c.metadata_format);
        c.max_concurrent_sync = raw.max_concurrent_sync.unwrap_or(c.max_concurrent_sync);
        c.max_sync_errors = raw.max_sync_errors.unwrap_or(c.max_sync_errors);
        let duration = |name: &str, d: Option<Duration>, ms: Option<u64>, default| match (d, ms) {
            (Some(_), Some(_)) => Err(format!("give {name} or {name}_ms, not both")),
            (d, ms) => Ok(d.or(ms.map(Duration::from_millis)).unwrap_or(default)),
        };
        c.base_backoff = duration(
            "base_backoff",
            raw.base_backoff,
            raw.base_backoff_ms,
            c.base_backoff,
        )?;
        c.max_backoff = duration(
            "max_backoff",
            raw.max_backoff,
            raw.max_backoff_ms,
            c.max_backoff,
        )?;
        let b = &mut c.backend;
        b.timeouts.small = raw.request_timeout.unwrap_or(b.timeouts.small);
        b.timeouts.large = raw.large_request_timeout.unwrap_or(b.timeouts.large);
        b.retry.max_attempts = raw.max_attempts.unwrap_or(b.retry.max_attempts);
        b.retry.base_delay = raw.retry_base_delay.unwrap_or(b.retry.base_delay);
        b.retry.max_delay = raw.retry_max_delay.unwrap_or(b.retry.max_delay);
        b.max_reads = raw.max_concurrent_reads.unwrap_or(b.max_reads);
        b.max_writes = raw.max_concurrent_writes.unwrap_or(b.max_writes);
        let d = ChunkerParams::default_params();
        c.store.chunker = ChunkerParams::fastcdc(
            raw.chunk_min.unwrap_or(d.min_size),
            raw.chunk_avg.unwrap_or(d.avg_size),
            raw.chunk_max.unwrap_or(d.max_size),
        );
        c.store.pack_target_size = raw.pack_target_size.unwrap_or(c.store.pack_target_size);
        c.store.zstd_level = raw.zstd_level.unwrap_or(c.store.zstd_level);
        c.validate()?;
        Ok(c)
    }
}

impl RemoteStorageConfig {
    /// Defaults for a store at `kind`.
    pub fn new(kind: RemoteStorageKind) -> RemoteStorageConfig {
        RemoteStorageConfig {
            kind,
            metadata_format: MetadataFormat::default(),
            max_concurrent_sync: 4,
            max_sync_errors: 10,
            base_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(30),
            backend: StackConfig {
                retry: RetryConfig::default(),
                timeouts: TimeoutConfig::default(),
                ..StackConfig::default()
            },
            store: StoreConfig::default_config(),
        }
    }

    /// Parses the `[remote_storage]` section of a TOML document; `None` when it has none.
    pub fn from_toml(text: &str) -> Result<Option<RemoteStorageConfig>> {
        let bad = |e: String| Error::InvalidInput(format!("[remote_storage]: {e}"));
        let file: RawFile = toml::from_str(text).map_err(|e| bad(e.to_string()))?;
        let Some(section) = file.remote_storage else {
            return Ok(None);
        };
        section
            .try_into()
            .map(Some)
            .map_err(|e: toml::de::Error| bad(e.message().to_string()))
    }

    /// Checks the limits are usable.
    pub fn validate(&self) -> std::result::Result<(), String> {
        if self.max_concurrent_sync == 0 || self.max_concurrent_sync > 1024 {
            return Err(format!(
                "max_concurrent_sync {} is not within 1..=1024",
                self.max_concurrent_sync
            ));
        }
        if self.max_sync_errors == 0 {
            return Err("max_sync_errors must be at least 1".into());
        }
        if self.base_backoff > self.max_backoff {
            return Err("base_backoff exceeds max_backoff".into());
        }
        let b = &self.backend;
        if b.retry.max_attempts == 0 || b.max_reads == 0 || b.max_writes == 0 {
            return Err(
                "max_attempts, max_concurrent_reads and max_concurrent_writes must be at least 1"
                    .into(),
            );
        }
        if b.retry.base_delay > b.retry.max_delay {
            return Err("retry_base_delay exceeds retry_max_delay".into());
        }
        if b.timeouts.small.is_zero() || b.timeouts.large.is_zero() {
            return Err("request timeouts must not be zero".into());
        }
        self.store.validate()
    }

    /// Opens the backend this configuration names, in the standard wrapper stack built with the
    /// `backend` settings. A local store's directory is created and resolved on the blocking
    /// pool.
    pub async fn open(&self) -> Result<Opened> {
        let base = match &self.kind {
            RemoteStorageKind::Local { path } => {
                let path = path.clone();
                let opened = tokio::task::spawn_blocking(move || {
                    LocalBackend::new(&path)
                        .map_err(|e| BackendError::other("open local store", path.display(), e))
                });
                let local = opened
                    .await
                    .map_err(|e| Error::TaskFailed(format!("opening the local store: {e}")))??;
                Arc::new(local) as DynBackend
            }
            RemoteStorageKind::S3 {
                bucket,
                region,
                endpoint,
                prefix,
            } => {
                let url = format!("s3://{bucket}/{}", prefix.as_deref().unwrap_or(""));
                open_location(&url, endpoint.clone(), region.clone()).await?
            }
        };
        Ok(standard_stack(base, &self.backend))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_local_and_s3_sections_and_rejects_mistakes() {
        let c = RemoteStorageConfig::from_toml(
            "[remote_storage]\nlocal_path = '/x'\nmax_concurrent_sync = 2\n",
        )
        .unwrap()
        .unwrap();
        assert_eq!(c.kind, RemoteStorageKind::Local { path: "/x".into() });
        assert_eq!(c.max_concurrent_sync, 2);
        let s3 = "[remote_storage]\nbucket_name = 'b'\nbucket_region = 'r'\nendpoint = 'http://127.0.0.1:1'\nprefix_in_bucket = 'p/'\n";
        let c = RemoteStorageConfig::from_toml(s3).unwrap().unwrap();
        assert!(matches!(c.kind, RemoteStorageKind::S3 { ref bucket, .. } if bucket == "b"));
        let human =
            "[remote_storage]\nlocal_path='/x'\nbase_backoff='250ms'\nmax_backoff='1m 30s'\n";
        let c = RemoteStorageConfig::from_toml(human).unwrap().unwrap();
        assert_eq!(c.base_backoff, Duration::from_millis(250));
        assert_eq!(c.max_backoff, Duration::from_secs(90));
        let backend = "[remote_storage]\nlocal_path='/x'\nrequest_timeout='5s'\nlarge_request_timeout='2m'\nmax_attempts=3\nretry_base_delay='10ms'\nretry_max_delay='1s'\nmax_concurrent_reads=7\nmax_concurrent_writes=5\nmetadata_format='pageserver'\n";
        let c = RemoteStorageConfig::from_toml(backend).unwrap().unwrap();
        assert_eq!(c.metadata_format, MetadataFormat::Pageserver);
        assert_eq!(c.backend.timeouts.small, Duration::from_secs(5));
        assert_eq!(c.backend.timeouts.large, Duration::from_secs(120));
        assert_eq!(c.backend.retry.max_attempts, 3);
        assert_eq!(c.backend.retry.base_delay, Duration::from_millis(10));
        assert_eq!(c.backend.retry.max_delay, Duration::from_secs(1));
        assert_eq!((c.backend.max_reads, c.backend.max_writes), (7, 5));
        let ms = "[remote_storage]\nlocal_path='/x'\nbase_backoff_ms=20\nmax_backoff_ms=400\n";
        let c = RemoteStorageConfig::from_toml(ms).unwrap().unwrap();
        assert_eq!(c.base_backoff, Duration::from_millis(20));
        assert_eq!(c.max_backoff, Duration::from_millis(400));
        assert!(
            RemoteStorageConfig::from_toml("other = 1")
                .unwrap()
                .is_none()
        );
        for bad in [
            "[remote_storage]\n",
            "[remote_storage]\nlocal_path='/x'\nbucket_name='b'\n",
            "[remote_storage]\nlocal_path='/x'\nmax_concurrent_sync=0\n",
            "[remote_storage]\nlocal_path='/x'\nchunk_avg=10\n",
            "[remote_storage]\nlocal_path='/x'\ntypo=1\n",
            "[remote_storage]\nlocal_path='/x'\nbase_backoff='1s'\nbase_backoff_ms=5\n",
            "[remote_storage]\nlocal_path='/x'\nmax_backoff='soon'\n",
            "[remote_storage]\nlocal_path='/x'\nbase_backoff='1m'\nmax_backoff='1s'\n",
            "[remote_storage]\nlocal_path='/x'\nmax_attempts=0\n",
            "[remote_storage]\nlocal_path='/x'\nrequest_timeout='0s'\n",
            "[remote_storage]\nlocal_path='/x'\nmetadata_format='xml'\n",
        ] {
            let e = RemoteStorageConfig::from_toml(bad).unwrap_err().to_string();
            assert!(e.contains("[remote_storage]"), "{bad:?}: {e}");
        }
    }

    /// A pageserver embeds the section in its own configuration struct.
    #[test]
    fn the_section_deserializes_inside_a_callers_struct() {
        #[derive(Deserialize)]
        struct PageserverConf {
            #[allow(dead_code)]
            listen_pg_addr: String,
            remote_storage: RemoteStorageConfig,
        }
        let text = "listen_pg_addr = '127.0.0.1:64000'\n[remote_storage]\nbucket_name = 'b'\nmax_backoff = '1m'\nmax_sync_errors = 3\n";
        let conf: PageserverConf = toml::from_str(text).unwrap();
        assert!(
            matches!(conf.remote_storage.kind, RemoteStorageKind::S3 { ref bucket, .. } if bucket == "b")
        );
        assert_eq!(conf.remote_storage.max_backoff, Duration::from_secs(60));
        assert_eq!(conf.remote_storage.max_sync_errors, 3);
        let bad =
            "listen_pg_addr = ''\n[remote_storage]\nlocal_path = '/x'\nmax_concurrent_sync = 0\n";
        let e = toml::from_str::<PageserverConf>(bad)
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("max_concurrent_sync 0"), "{e}");
    }
}
