//! The S3 client: building it from an [`S3Config`], bucket creation, incomplete-upload cleanup,
//! and the helpers the trait methods share (full keys, object metadata, range errors).
//!
//! Owns [`S3Backend`] and [`IncompleteUpload`]. Must not map errors itself (that is `errors`) or
//! adapt bodies (that is `body`).

use std::ops::Range;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use aws_sdk_s3::Client;
use aws_sdk_s3::config::retry::RetryConfig;
use aws_sdk_s3::config::timeout::TimeoutConfig;
use aws_sdk_s3::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_s3::error::ProvideErrorMetadata;
use aws_sdk_s3::primitives::DateTime;
use futures::stream::{self, BoxStream, StreamExt, TryStreamExt};

use super::config::{DEFAULT_REGION, S3Config};
use super::errors::sdk_error;
use crate::backend::{Backend, BackendError, Key, ObjectMeta};

/// An S3 bucket (or a prefix in one) as a [`Backend`].
#[derive(Clone)]
pub struct S3Backend {
    pub(super) client: Client,
    pub(super) bucket: String,
    /// Prepended to every key; empty or ending with `/`.
    pub(super) root: String,
    pub(super) config: Arc<S3Config>,
}

impl std::fmt::Debug for S3Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "S3Backend(s3://{}/{})", self.bucket, self.root)
    }
}

/// An upload that was started but neither completed nor aborted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IncompleteUpload {
    /// Full key inside the bucket (including the store's prefix).
    pub key: String,
    /// The id S3 needs to abort the upload.
    pub upload_id: String,
    /// When it started, if the server says (old ones are leftovers of killed writers).
    pub initiated: Option<SystemTime>,
}

impl S3Backend {
    /// Builds the client. Does not contact the server.
    pub async fn new(config: S3Config) -> Result<S3Backend, BackendError> {
        use aws_smithy_http_client::tls::{Provider, rustls_provider::CryptoMode};
        let root = config.checked_prefix()?;
        config.check_limits()?;

        // hyper + rustls with ring; plain http:// endpoints work with the same client.
        let http = aws_smithy_http_client::Builder::new()
            .tls_provider(Provider::Rustls(CryptoMode::Ring))
            .build_https();
        let mut loader = aws_config::defaults(BehaviorVersion::latest())
            .http_client(http)
            .retry_config(RetryConfig::disabled())
            .timeout_config(
                TimeoutConfig::builder()
                    .connect_timeout(config.connect_timeout)
                    .build(),
            );
        if let Some(region) = &config.region {
            loader = loader.region(Region::new(region.clone()));
        }
        if let Some(endpoint) = &config.endpoint {
            loader = loader.endpoint_url(endpoint.clone());
        }
        if let Some(c) = &config.credentials {
            loader = loader.credentials_provider(Credentials::new(
                c.access_key_id.clone(),
                c.secret_access_key.clone(),
                c.session_token.clone(),
                None,
                "layercas-static",
            ));
        }
        let sdk = loader.load().await;
        let mut builder = aws_sdk_s3::config::Builder::from(&sdk)
            .force_path_style(config.path_style)
            // Our retry wrapper is the only one: one SDK attempt per call.
            .retry_config(RetryConfig::disabled());
        if sdk.region().is_none() {
            builder = builder.region(Region::new(DEFAULT_REGION));
        }
        Ok(S3Backend {
            client: Client::from_conf(builder.build()),
            bucket: config.bucket.clone(),
            root,
            config: Arc::new(config),
        })
    }

    /// The configuration this backend was built from.
    pub fn config(&self) -> &S3Config {
        &self.config
    }

    /// Creates the bucket; succeeds if it already exists and is ours.
    pub async fn create_bucket_if_missing(&self) -> Result<(), BackendError> {
        use aws_sdk_s3::types::{BucketLocationConstraint, CreateBucketConfiguration};
        let mut req = self.client.create_bucket().bucket(&self.bucket);
        let region = self.client.config().region().map(|r| r.to_string());
        if let Some(region) = region.filter(|r| r != DEFAULT_REGION) {
            req = req.create_bucket_configuration(
                CreateBucketConfiguration::builder()
                    .location_constraint(BucketLocationConstraint::from(region.as_str()))
                    .build(),
            );
        }
        match req.send().await {
            Ok(_) => Ok(()),
            Err(e) if matches!(e.code(), Some("BucketAlreadyOwnedByYou")) => Ok(()),
            // Some servers answer 409 BucketAlreadyExists to the owner too.
            Err(e) if matches!(e.code(), Some("BucketAlreadyExists")) => Ok(()),
            Err(e) => Err(sdk_error("create bucket", &self.bucket, e)),
        }
    }

    /// Multipart uploads under this store's prefix that were started but never completed or
    /// aborted (a crashed writer's leftovers, or uploads in progress right now).
    pub async fn list_incomplete_uploads(&self) -> Result<Vec<IncompleteUpload>, BackendError> {
        let mut out = Vec::new();
        let (mut key_marker, mut id_marker) = (None::<String>, None::<String>);
        loop {
            let page = self
                .client
                .list_multipart_uploads()
                .bucket(&self.bucket)
                .prefix(&self.root)
                .set_key_marker(key_marker.take())
                .set_upload_id_marker(id_marker.take())
                .send()
                .await
                .map_err(|e| sdk_error("list uploads", &self.root, e))?;
            for u in page.uploads() {
                let (Some(key), Some(id)) = (u.key(), u.upload_id()) else {
                    continue;
                };
                out.push(IncompleteUpload {
                    key: key.to_string(),
                    upload_id: id.to_string(),
                    initiated: u.initiated().and_then(to_system_time),
                });
            }
            if page.is_truncated() != Some(true) {
                return Ok(out);
            }
            key_marker = page.next_key_marker().map(str::to_string);
            id_marker = page.next_upload_id_marker().map(str::to_string);
            if key_marker.is_none() && id_marker.is_none() {
                return Err(BackendError::other(
                    "list uploads",
                    &self.root,
                    "truncated upload listing without a marker",
                ));
            }
        }
    }

    /// Aborts every incomplete upload under the prefix started at least `older_than` ago (pass a
    /// margin longer than any live upload, or zero when no writer runs); returns those aborted.
    pub async fn abort_incomplete_uploads(
        &self,
        older_than: Duration,
    ) -> Result<Vec<IncompleteUpload>, BackendError> {
        let cutoff = SystemTime::now()
            .checked_sub(older_than)
            .unwrap_or(SystemTime::UNIX_EPOCH);
        let mut aborted = Vec::new();
        for upload in self.list_incomplete_uploads().await? {
            if upload.initiated.is_some_and(|t| t > cutoff) {
                continue;
            }
            self.abort_upload(&upload.key, &upload.upload_id).await?;
            aborted.push(upload);
        }
        Ok(aborted)
    }

    pub(super) async fn abort_upload(
        &self,
        full_key: &str,
        upload_id: &str,
    ) -> Result<(), BackendError> {
        match self
            .client
            .abort_multipart_upload()
            .bucket(&self.bucket)
            .key(full_key)
            .upload_id(upload_id)
            .send()
            .await
        {
            Ok(_) => Ok(()),
            // Already gone (aborted or completed by someone else): nothing left to clean.
            Err(e) if matches!(e.code(), Some("NoSuchUpload")) => Ok(()),
            Err(e) => Err(sdk_error("abort upload", full_key, e)),
        }
    }

    pub(super) fn full_key(&self, key: &Key) -> String {
        format!("{}{}", self.root, key.as_str())
    }
    pub(super) async fn size_for_range_error(&self, key: &Key, range: &Range<u64>) -> BackendError {
        match self.head(key).await {
            Ok(meta) => BackendError::InvalidRange {
                key: key.to_string(),
                start: range.start,
                end: range.end,
                size: meta.size,
            },
            Err(e) => e,
        }
    }
}

impl S3Backend {
    /// Metadata of a listed object, or `None` for keys outside our key syntax (with a warning).
    pub(super) fn listed_meta(&self, o: &aws_sdk_s3::types::Object) -> Option<ObjectMeta> {
        let full = o.key()?;
        let rel = full.strip_prefix(&self.root)?;
        let key = match Key::new(rel) {
            Ok(key) => key,
            Err(e) => {
                tracing::warn!(key = full, error = %e, "skipping a foreign object in the listing");
                return None;
            }
        };
        let size = length(o.size()).unwrap_or(0);
        Some(object_meta(key, size, o.last_modified(), o.e_tag()))
    }

    /// Every object under `full_prefix` (already including the store's root), one ListObjectsV2
    /// page after another.
    pub(super) fn list_pages(
        &self,
        full_prefix: String,
    ) -> BoxStream<'static, Result<ObjectMeta, BackendError>> {
        let this = self.clone();
        // `None`: listing done; `Some(token)`: the next page (no token: the first).
        stream::try_unfold(Some(None), move |page: Option<Option<String>>| {
            let (this, full_prefix) = (this.clone(), full_prefix.clone());
            async move {
                let Some(token) = page else {
                    return Ok(None);
                };
                let (items, next) = this.list_page(&full_prefix, token).await?;
                Ok(Some((
                    stream::iter(items.into_iter().map(Ok)),
                    next.map(Some),
                )))
            }
        })
        .try_flatten()
        .boxed()
    }

    /// One listing page and the continuation token of the next, if any.
    async fn list_page(
        &self,
        full_prefix: &str,
        token: Option<String>,
    ) -> Result<(Vec<ObjectMeta>, Option<String>), BackendError> {
        let out = self
            .client
            .list_objects_v2()
            .bucket(&self.bucket)
            .prefix(full_prefix)
            .max_keys(i32::from(self.config.list_page_size))
            .set_continuation_token(token)
            .send()
            .await
            .map_err(|e| sdk_error("list", full_prefix, e))?;
        let items = out
            .contents()
            .iter()
            .filter_map(|o| self.listed_meta(o))
            .collect();
        match (out.is_truncated(), out.next_continuation_token()) {
            (Some(true), Some(token)) => Ok((items, Some(token.to_string()))),
            (Some(true), None) => Err(BackendError::other(
                "list",
                full_prefix,
                "truncated listing without a continuation token",
            )),
            _ => Ok((items, None)),
        }
    }
}

/// A length S3 reports as a signed number, if it is one.
pub(super) fn length(n: Option<i64>) -> Option<u64> {
    n.and_then(|n| u64::try_from(n).ok())
}

/// Object metadata from the fields a listing, `HeadObject` or `GetObject` answer carries.
pub(super) fn object_meta(
    key: Key,
    size: u64,
    last_modified: Option<&DateTime>,
    etag: Option<&str>,
) -> ObjectMeta {
    ObjectMeta {
        key,
        size,
        last_modified: last_modified
            .and_then(to_system_time)
            .unwrap_or(SystemTime::UNIX_EPOCH),
        etag: etag.map(str::to_string),
    }
}

pub(super) fn to_system_time(t: &DateTime) -> Option<SystemTime> {
    SystemTime::try_from(*t).ok()
}
