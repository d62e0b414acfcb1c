//! S3 backend: objects in one bucket, optionally under a key prefix, through `aws-sdk-s3`.
//!
//! Owns the S3 wire protocol: configuration (bucket, region, endpoint, path-style addressing, key
//! prefix, credentials), paginated listing, ranged reads, streamed and multipart uploads,
//! conditional writes, the one table that maps S3 answers to [`BackendError`] kinds, and cleanup
//! of incomplete multipart uploads. Must not retry, time out, limit, count or inject faults:
//! those are wrappers. The SDK's own retries are switched off so that they do not multiply with
//! the retry wrapper's.
//!
//! # Rules
//! - Bodies are streamed both ways: a payload is read piecewise while it is sent, and a download
//!   is handed out as it arrives. Payloads above [`S3Config::multipart_threshold`] go up as a
//!   multipart upload of [`S3Config::part_size`] parts (at least 5 MiB, S3's minimum), at most
//!   [`S3Config::upload_concurrency`] parts at once. A failed multipart upload is aborted.
//! - A multipart upload whose process dies (or whose `put` future is dropped) leaves an incomplete
//!   upload that no listing shows as an object; [`S3Backend::abort_incomplete_uploads`] lists and
//!   aborts them.
//! - `PutMode::Create` sends `If-None-Match: *`; a 412 or 304 answer is `AlreadyExists`. A 409
//!   (`ConditionalRequestConflict`: a concurrent conditional write) is `Transient`, so the retry
//!   wrapper tries again and then sees the winner's object. `PutMode::Update(etag)` sends
//!   `If-Match`.
//! - Keys found in the bucket that are not valid [`Key`]s (written by something else) are skipped
//!   by listings, with a warning.

use std::ops::Range;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use aws_sdk_s3::Client;
use aws_sdk_s3::config::retry::RetryConfig;
use aws_sdk_s3::config::timeout::TimeoutConfig;
use aws_sdk_s3::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::DateTime;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use bytes::Bytes;
use futures::stream::{self, BoxStream, StreamExt, TryStreamExt};

use crate::backend::{
    Backend, BackendError, BoxError, ByteStream, GetResult, Key, ObjectMeta, Payload, Prefix,
    PutMode, collect_stream,
};

/// S3's smallest allowed multipart part (all but the last part).
pub const MIN_PART_SIZE: u64 = 5 << 20;
/// S3's largest allowed part.
pub const MAX_PART_SIZE: u64 = 5 << 30;
/// S3's largest number of parts in one upload.
pub const MAX_PARTS: u64 = 10_000;
/// Region used when neither the configuration nor the AWS environment names one.
pub const DEFAULT_REGION: &str = "us-east-1";

/// Access keys given directly (tests, or stores that carry their own); otherwise the standard
/// AWS chain (environment, profile files, container and instance metadata) is used.
#[derive(Clone)]
pub struct S3Credentials {
    pub access_key_id: String,
    pub secret_access_key: String,
    pub session_token: Option<String>,
}

impl std::fmt::Debug for S3Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Credentials")
            .field("access_key_id", &self.access_key_id)
            .finish_non_exhaustive()
    }
}

/// Where and how to reach the bucket.
#[derive(Clone, Debug)]
pub struct S3Config {
    pub bucket: String,
    /// Key prefix inside the bucket: empty, or ending with `/` (added if missing).
    pub prefix: String,
    /// `None`: the AWS environment's region (`AWS_REGION`, profile), else [`DEFAULT_REGION`].
    pub region: Option<String>,
    /// `None`: AWS itself (or `AWS_ENDPOINT_URL` through the standard configuration).
    pub endpoint: Option<String>,
    /// `bucket` in the path rather than the host name; most non-AWS servers need it.
    pub path_style: bool,
    /// `None`: the standard AWS credential chain.
    pub credentials: Option<S3Credentials>,
    /// Keys per ListObjectsV2 page (1..=1000); small values force pagination in tests.
    pub list_page_size: u16,
    /// Payloads longer than this go up as multipart uploads.
    pub multipart_threshold: u64,
    /// Size of each multipart part but the last; at least [`MIN_PART_SIZE`].
    pub part_size: u64,
    /// Parts of one upload in flight at once.
    pub upload_concurrency: usize,
    /// TCP connect timeout of the HTTP client (request timeouts are the timeout wrapper's).
    pub connect_timeout: Duration,
}

impl S3Config {
    /// Defaults for `bucket`: AWS, virtual-hosted addressing, 1000-key pages, 16 MiB parts above
    /// 32 MiB, 4 parts at once.
    pub fn new(bucket: impl Into<String>) -> S3Config {
        S3Config {
            bucket: bucket.into(),
            prefix: String::new(),
            region: None,
            endpoint: None,
            path_style: false,
            credentials: None,
            list_page_size: 1000,
            multipart_threshold: 32 << 20,
            part_size: 16 << 20,
            upload_concurrency: 4,
            connect_timeout: Duration::from_secs(10),
        }
    }

    /// Parses a store URL `s3://bucket[/prefix]`.
    pub fn from_url(url: &str) -> Result<S3Config, BackendError> {
        let bad = |reason: &'static str| BackendError::InvalidKey {
            key: url.to_string(),
            reason,
        };
        let rest = url
            .strip_prefix("s3://")
            .ok_or(bad("store URL must start with s3://"))?;
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return Err(bad("store URL has no bucket"));
        }
        let mut config = S3Config::new(bucket);
        config.prefix = prefix.to_string();
        Ok(config)
    }

    /// A store URL `s3://bucket[/prefix]` with an endpoint and region given as arguments (e.g.
    /// `casctl --endpoint`), each falling back to `AWS_ENDPOINT_URL` / `AWS_REGION` when `None`.
    pub fn from_store_url(
        url: &str,
        endpoint: Option<String>,
        region: Option<String>,
    ) -> Result<S3Config, BackendError> {
        let mut config = S3Config::from_url(url)?;
        if let Some(endpoint) = endpoint {
            config = config.with_endpoint(endpoint);
        }
        config.region = region;
        Ok(config.with_env())
    }

    /// Sets the endpoint (and path-style addressing, which custom endpoints almost always need).
    pub fn with_endpoint(mut self, endpoint: impl Into<String>) -> S3Config {
        self.endpoint = Some(endpoint.into());
        self.path_style = true;
        self
    }

    /// Fills the endpoint and region from `AWS_ENDPOINT_URL` and `AWS_REGION` where this
    /// configuration leaves them unset.
    pub fn with_env(mut self) -> S3Config {
        if let (None, Some(endpoint)) = (&self.endpoint, env_var("AWS_ENDPOINT_URL")) {
            self = self.with_endpoint(endpoint);
        }
        if self.region.is_none() {
            self.region = env_var("AWS_REGION");
        }
        self
    }

    /// The prefix normalised to end with `/`, checked to be a valid key prefix.
    fn checked_prefix(&self) -> Result<String, BackendError> {
        let bad = |reason: &'static str| BackendError::InvalidKey {
            key: self.prefix.clone(),
            reason,
        };
        if self.bucket.is_empty() {
            return Err(bad("bucket name is empty"));
        }
        if self.prefix.is_empty() {
            return Ok(String::new());
        }
        let with_slash = if self.prefix.ends_with('/') {
            self.prefix.clone()
        } else {
            format!("{}/", self.prefix)
        };
        Key::new(with_slash.trim_end_matches('/'))?;
        Ok(with_slash)
    }

    fn check_limits(&self) -> Result<(), BackendError> {
        let bad = |what: &'static str| {
            BackendError::other(
                "configure",
                &self.bucket,
                format!("invalid S3 configuration: {what}"),
            )
        };
        if !(1..=1000).contains(&self.list_page_size) {
            return Err(bad("list_page_size must be 1..=1000"));
        }
        if !(MIN_PART_SIZE..=MAX_PART_SIZE).contains(&self.part_size) {
            return Err(bad("part_size must be 5 MiB..=5 GiB"));
        }
        if self.upload_concurrency == 0 {
            return Err(bad("upload_concurrency must be at least 1"));
        }
        Ok(())
    }
}

/// A non-empty environment variable.
fn env_var(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

/// An S3 bucket (or a prefix in one) as a [`Backend`].
#[derive(Clone)]
pub struct S3Backend {
    client: Client,
    bucket: String,
    /// Prepended to every key; empty or ending with `/`.
    root: String,
    config: Arc<S3Config>,
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
    pub upload_id: String,
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

    async fn abort_upload(&self, full_key: &str, upload_id: &str) -> Result<(), BackendError> {
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

    fn full_key(&self, key: &Key) -> String {
        format!("{}{}", self.root, key.as_str())
    }

    async fn put_single(
        &self,
        key: &Key,
        payload: &Payload,
        mode: &PutMode,
    ) -> Result<(), BackendError> {
        let (body, failure) = upload_body(payload);
        let mut req = self
            .client
            .put_object()
            .bucket(&self.bucket)
            .key(self.full_key(key))
            .content_length(payload.len() as i64)
            .body(body);
        match mode {
            PutMode::Overwrite => {}
            PutMode::Create => req = req.if_none_match("*"),
            PutMode::Update(etag) => req = req.if_match(etag),
        }
        let sent = req.send().await;
        take_failure(&failure)?;
        sent.map(drop).map_err(|e| sdk_error("put", key, e))
    }

    async fn put_multipart(
        &self,
        key: &Key,
        payload: &Payload,
        mode: &PutMode,
    ) -> Result<(), BackendError> {
        let full = self.full_key(key);
        let created = self
            .client
            .create_multipart_upload()
            .bucket(&self.bucket)
            .key(&full)
            .send()
            .await
            .map_err(|e| sdk_error("put", key, e))?;
        let upload_id = created
            .upload_id()
            .ok_or_else(|| BackendError::other("put", key, "no upload id in the answer"))?
            .to_string();
        let result = self
            .finish_multipart(key, &full, &upload_id, payload, mode)
            .await;
        if result.is_err()
            && let Err(e) = self.abort_upload(&full, &upload_id).await
        {
            tracing::warn!(key = %key, upload_id, error = %e,
                "could not abort a failed multipart upload; abort_incomplete_uploads will");
        }
        result
    }

    async fn finish_multipart(
        &self,
        key: &Key,
        full: &str,
        upload_id: &str,
        payload: &Payload,
        mode: &PutMode,
    ) -> Result<(), BackendError> {
        let part_size = self.config.part_size;
        let count = payload.len().div_ceil(part_size);
        if count > MAX_PARTS {
            return Err(BackendError::TooLarge {
                limit: MAX_PARTS * part_size,
            });
        }
        // `buffered` keeps part order, runs a bounded number at once, and cancels the rest on
        // the first error.
        let parts: Vec<CompletedPart> = stream::iter(0..count)
            .map(|i| {
                let range = i * part_size..((i + 1) * part_size).min(payload.len());
                self.upload_part(key, full, upload_id, i as i32 + 1, payload.slice(range))
            })
            .buffered(self.config.upload_concurrency)
            .try_collect()
            .await?;
        let mut req = self
            .client
            .complete_multipart_upload()
            .bucket(&self.bucket)
            .key(full)
            .upload_id(upload_id)
            .multipart_upload(
                CompletedMultipartUpload::builder()
                    .set_parts(Some(parts))
                    .build(),
            );
        match mode {
            PutMode::Overwrite => {}
            PutMode::Create => req = req.if_none_match("*"),
            PutMode::Update(etag) => req = req.if_match(etag),
        }
        req.send()
            .await
            .map(drop)
            .map_err(|e| sdk_error("put", key, e))
    }

    async fn upload_part(
        &self,
        key: &Key,
        full: &str,
        upload_id: &str,
        number: i32,
        part: Payload,
    ) -> Result<CompletedPart, BackendError> {
        let (body, failure) = upload_body(&part);
        let sent = self
            .client
            .upload_part()
            .bucket(&self.bucket)
            .key(full)
            .upload_id(upload_id)
            .part_number(number)
            .content_length(part.len() as i64)
            .body(body)
            .send()
            .await;
        take_failure(&failure)?;
        let done = sent.map_err(|e| sdk_error("put", key, e))?;
        Ok(CompletedPart::builder()
            .part_number(number)
            .set_e_tag(done.e_tag().map(str::to_string))
            .build())
    }

    async fn size_for_range_error(&self, key: &Key, range: &Range<u64>) -> BackendError {
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

#[async_trait]
impl Backend for S3Backend {
    fn list(&self, prefix: &Prefix) -> BoxStream<'static, Result<ObjectMeta, BackendError>> {
        enum Page {
            First,
            After(String),
            Done,
        }
        let this = self.clone();
        let full_prefix = format!("{}{}", self.root, prefix.as_str());
        stream::try_unfold(Page::First, move |page| {
            let (this, full_prefix) = (this.clone(), full_prefix.clone());
            async move {
                let token = match page {
                    Page::First => None,
                    Page::After(token) => Some(token),
                    Page::Done => return Ok(None),
                };
                let out = this
                    .client
                    .list_objects_v2()
                    .bucket(&this.bucket)
                    .prefix(&full_prefix)
                    .max_keys(i32::from(this.config.list_page_size))
                    .set_continuation_token(token)
                    .send()
                    .await
                    .map_err(|e| sdk_error("list", &full_prefix, e))?;
                let items: Vec<_> = out
                    .contents()
                    .iter()
                    .filter_map(|o| this.listed_meta(o))
                    .map(Ok)
                    .collect();
                let next = match (out.is_truncated(), out.next_continuation_token()) {
                    (Some(true), Some(token)) => Page::After(token.to_string()),
                    (Some(true), None) => {
                        return Err(BackendError::other(
                            "list",
                            &full_prefix,
                            "truncated listing without a continuation token",
                        ));
                    }
                    _ => Page::Done,
                };
                Ok(Some((stream::iter(items), next)))
            }
        })
        .try_flatten()
        .boxed()
    }

    async fn put(&self, key: &Key, payload: Payload, mode: PutMode) -> Result<(), BackendError> {
        let result = if payload.len() > self.config.multipart_threshold {
            self.put_multipart(key, &payload, &mode).await
        } else {
            self.put_single(key, &payload, &mode).await
        };
        match (result, &mode) {
            (Err(BackendError::PreconditionFailed { key }), PutMode::Create) => {
                Err(BackendError::AlreadyExists { key })
            }
            (result, _) => result,
        }
    }

    async fn get(&self, key: &Key) -> Result<GetResult, BackendError> {
        let out = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(self.full_key(key))
            .send()
            .await
            .map_err(|e| sdk_error("get", key, e))?;
        let size = out.content_length().and_then(|n| u64::try_from(n).ok());
        let size = size.ok_or_else(|| BackendError::other("get", key, "no content length"))?;
        let meta = ObjectMeta {
            key: key.clone(),
            size,
            last_modified: out
                .last_modified()
                .and_then(to_system_time)
                .unwrap_or(SystemTime::UNIX_EPOCH),
            etag: out.e_tag().map(str::to_string),
        };
        let body = download_stream(out.body, key.to_string(), size);
        Ok(GetResult { meta, body })
    }

    async fn get_range(&self, key: &Key, range: Range<u64>) -> Result<Bytes, BackendError> {
        if range.start >= range.end {
            // An empty range: S3 has no way to ask for zero bytes; check the bounds with a head.
            let meta = self.head(key).await?;
            if range.start > range.end || range.start > meta.size {
                return Err(self.size_for_range_error(key, &range).await);
            }
            return Ok(Bytes::new());
        }
        let sent = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(self.full_key(key))
            .range(format!("bytes={}-{}", range.start, range.end - 1))
            .send()
            .await;
        let out = match sent.map_err(|e| sdk_error("get_range", key, e)) {
            Ok(out) => out,
            Err(BackendError::InvalidRange { .. }) => {
                return Err(self.size_for_range_error(key, &range).await);
            }
            Err(e) => return Err(e),
        };
        let len = out.content_length().and_then(|n| u64::try_from(n).ok());
        let len = len.ok_or_else(|| BackendError::other("get_range", key, "no content length"))?;
        if len > range.end - range.start {
            // The server ignored the range (some do for objects it thinks too small).
            return Err(BackendError::other(
                "get_range",
                key,
                format!(
                    "asked for {} bytes, server sent {len}",
                    range.end - range.start
                ),
            ));
        }
        collect_stream(download_stream(out.body, key.to_string(), len), len).await
    }

    async fn head(&self, key: &Key) -> Result<ObjectMeta, BackendError> {
        let out = self
            .client
            .head_object()
            .bucket(&self.bucket)
            .key(self.full_key(key))
            .send()
            .await
            .map_err(|e| sdk_error("head", key, e))?;
        Ok(ObjectMeta {
            key: key.clone(),
            size: out
                .content_length()
                .and_then(|n| u64::try_from(n).ok())
                .unwrap_or(0),
            last_modified: out
                .last_modified()
                .and_then(to_system_time)
                .unwrap_or(SystemTime::UNIX_EPOCH),
            etag: out.e_tag().map(str::to_string),
        })
    }

    async fn delete(&self, key: &Key) -> Result<(), BackendError> {
        let sent = self
            .client
            .delete_object()
            .bucket(&self.bucket)
            .key(self.full_key(key))
            .send()
            .await;
        match sent.map_err(|e| sdk_error("delete", key, e)) {
            Ok(_) | Err(BackendError::NotFound { .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }
}

impl S3Backend {
    /// Metadata of a listed object, or `None` for keys outside our key syntax (with a warning).
    fn listed_meta(&self, o: &aws_sdk_s3::types::Object) -> Option<ObjectMeta> {
        let full = o.key()?;
        let rel = full.strip_prefix(&self.root)?;
        let key = match Key::new(rel) {
            Ok(key) => key,
            Err(e) => {
                tracing::warn!(key = full, error = %e, "skipping a foreign object in the listing");
                return None;
            }
        };
        Some(ObjectMeta {
            key,
            size: o.size().and_then(|n| u64::try_from(n).ok()).unwrap_or(0),
            last_modified: o
                .last_modified()
                .and_then(to_system_time)
                .unwrap_or(SystemTime::UNIX_EPOCH),
            etag: o.e_tag().map(str::to_string),
        })
    }
}

fn to_system_time(t: &DateTime) -> Option<SystemTime> {
    SystemTime::try_from(*t).ok()
}

/// What an S3 answer means to a caller: the one table from S3 status codes and error codes to
/// [`BackendError`] kinds.
fn classify(status: Option<u16>, code: Option<&str>) -> Class {
    match (status, code) {
        // Codes first: some servers send throttling or internal errors with odd statuses.
        (_, Some("SlowDown" | "Throttling" | "ThrottlingException" | "RequestLimitExceeded")) => {
            Class::Transient
        }
        (_, Some("InternalError" | "ServiceUnavailable" | "RequestTimeout")) => Class::Transient,
        // A concurrent conditional write on the same key: try again.
        (_, Some("ConditionalRequestConflict" | "OperationAborted")) => Class::Transient,
        // A missing bucket or upload is a configuration or logic problem, not a missing key.
        (_, Some("NoSuchBucket" | "NoSuchUpload")) => Class::Other,
        (_, Some("NoSuchKey" | "NotFound")) | (Some(404), _) => Class::NotFound,
        (Some(304 | 412), _) | (_, Some("PreconditionFailed")) => Class::Precondition,
        (Some(416), _) | (_, Some("InvalidRange")) => Class::InvalidRange,
        (Some(409), _) => Class::Transient,
        (Some(408 | 429), _) => Class::Transient,
        (Some(501), _) | (_, Some("NotImplemented")) => Class::NotImplemented,
        (Some(500..=599), _) => Class::Transient,
        _ => Class::Other,
    }
}

#[derive(Debug, PartialEq, Eq)]
enum Class {
    NotFound,
    Precondition,
    InvalidRange,
    NotImplemented,
    Transient,
    Other,
}

/// Converts an SDK error on `key` into a [`BackendError`], keeping it as the source.
fn sdk_error<E>(op: &'static str, key: impl std::fmt::Display, err: SdkError<E>) -> BackendError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let key = key.to_string();
    let class = match &err {
        SdkError::ConstructionFailure(_) => Class::Other,
        SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) | SdkError::ResponseError(_) => {
            Class::Transient
        }
        SdkError::ServiceError(service) => {
            classify(Some(service.raw().status().as_u16()), service.err().code())
        }
        _ => Class::Other,
    };
    // The full context (service code and message, or the transport cause) as text: the SDK
    // error's own `Display` says little.
    let source: BoxError = aws_sdk_s3::error::DisplayErrorContext(&err)
        .to_string()
        .into();
    match class {
        Class::NotFound => BackendError::NotFound { key },
        Class::Precondition => BackendError::PreconditionFailed { key },
        Class::InvalidRange => BackendError::InvalidRange {
            key,
            start: 0,
            end: 0,
            size: 0,
        },
        Class::NotImplemented => BackendError::NotImplemented { what: op },
        Class::Transient => BackendError::Transient { op, key, source },
        Class::Other => BackendError::Other { op, key, source },
    }
}

/// Slot where an upload body parks the payload's own error (a short or unreadable file), so that
/// the caller reports it rather than the transport error it caused.
type FailureSlot = Arc<Mutex<Option<BackendError>>>;

fn take_failure(slot: &FailureSlot) -> Result<(), BackendError> {
    match slot.lock().expect("failure slot").take() {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

fn upload_body(payload: &Payload) -> (aws_sdk_s3::primitives::ByteStream, FailureSlot) {
    let failure = FailureSlot::default();
    let body = UploadBody {
        stream: Mutex::new(payload.stream()),
        remaining: payload.len(),
        failure: failure.clone(),
    };
    (
        aws_sdk_s3::primitives::ByteStream::from_body_1_x(body),
        failure,
    )
}

/// A payload as an HTTP body of exactly its length, read as it is sent.
struct UploadBody {
    /// In a mutex only to be `Sync` as the SDK requires; never contended (`get_mut`).
    stream: Mutex<ByteStream>,
    remaining: u64,
    failure: FailureSlot,
}

impl http_body::Body for UploadBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        let stream = this.stream.get_mut().expect("upload body stream");
        let fail = |this: &mut UploadBody, e: BackendError| {
            let message = e.to_string();
            *this.failure.lock().expect("failure slot") = Some(e);
            Poll::Ready(Some(Err(message.into())))
        };
        match stream.poll_next_unpin(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Some(Ok(piece))) => {
                if piece.len() as u64 > this.remaining {
                    let e = BackendError::other("put", "", "payload is longer than its length");
                    return fail(this, e);
                }
                this.remaining -= piece.len() as u64;
                Poll::Ready(Some(Ok(http_body::Frame::data(piece))))
            }
            Poll::Ready(Some(Err(e))) => fail(this, e),
            Poll::Ready(None) if this.remaining > 0 => {
                let e = BackendError::other("put", "", "payload is shorter than its length");
                fail(this, e)
            }
            Poll::Ready(None) => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.remaining == 0
    }

    fn size_hint(&self) -> http_body::SizeHint {
        http_body::SizeHint::with_exact(self.remaining)
    }
}

/// A response body as a [`ByteStream`]; transport errors are transient, and a body that ends
/// short of `len` bytes is an error rather than a silently truncated object.
fn download_stream(body: aws_sdk_s3::primitives::ByteStream, key: String, len: u64) -> ByteStream {
    stream::try_unfold((body, 0u64), move |(mut body, got)| {
        let key = key.clone();
        async move {
            match body.next().await {
                Some(Ok(piece)) => {
                    let got = got + piece.len() as u64;
                    Ok(Some((piece, (body, got))))
                }
                Some(Err(e)) => Err(BackendError::transient("get", key, e)),
                None if got != len => Err(BackendError::transient(
                    "get",
                    key,
                    format!("body ended after {got} of {len} bytes"),
                )),
                None => Ok(None),
            }
        }
    })
    .boxed()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The mapping table: every status and code the backend branches on.
    #[test]
    fn classify_table() {
        let cases: &[(Option<u16>, Option<&str>, Class)] = &[
            (Some(404), Some("NoSuchKey"), Class::NotFound),
            (Some(404), None, Class::NotFound),
            (Some(404), Some("NoSuchBucket"), Class::Other),
            (Some(404), Some("NoSuchUpload"), Class::Other),
            (Some(412), Some("PreconditionFailed"), Class::Precondition),
            (Some(304), None, Class::Precondition),
            (
                Some(409),
                Some("ConditionalRequestConflict"),
                Class::Transient,
            ),
            (Some(416), Some("InvalidRange"), Class::InvalidRange),
            (Some(503), Some("SlowDown"), Class::Transient),
            (Some(500), Some("InternalError"), Class::Transient),
            (Some(502), None, Class::Transient),
            (Some(429), None, Class::Transient),
            (Some(400), Some("RequestTimeout"), Class::Transient),
            (Some(501), Some("NotImplemented"), Class::NotImplemented),
            (Some(403), Some("AccessDenied"), Class::Other),
            (Some(400), Some("InvalidArgument"), Class::Other),
        ];
        for (status, code, want) in cases {
            assert_eq!(&classify(*status, *code), want, "{status:?} {code:?}");
        }
    }

    #[test]
    fn store_url() {
        let c = S3Config::from_url("s3://bucket/some/prefix").unwrap();
        assert_eq!(
            (c.bucket.as_str(), c.prefix.as_str()),
            ("bucket", "some/prefix")
        );
        assert_eq!(c.checked_prefix().unwrap(), "some/prefix/");
        let c = S3Config::from_url("s3://bucket").unwrap();
        assert_eq!(c.checked_prefix().unwrap(), "");
        assert!(S3Config::from_url("s3:///x").is_err());
        assert!(S3Config::from_url("file:///x").is_err());
        let c =
            S3Config::from_store_url("s3://b/p", Some("http://127.0.0.1:9".into()), None).unwrap();
        assert!(c.path_style);
        assert_eq!(c.endpoint.as_deref(), Some("http://127.0.0.1:9"));
        let mut c = S3Config::from_url("s3://b/a//b").unwrap();
        assert!(c.checked_prefix().is_err());
        c.prefix = "ok/".into();
        assert_eq!(c.checked_prefix().unwrap(), "ok/");
    }
}
