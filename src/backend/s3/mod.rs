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

mod batch;
mod body;
mod client;
mod config;
mod errors;
mod multipart;

pub use client::{IncompleteUpload, S3Backend};
pub use config::{
    DEFAULT_REGION, MAX_PART_SIZE, MAX_PARTS, MIN_PART_SIZE, S3Config, S3Credentials,
};

use std::ops::Range;

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;

use crate::backend::{
    Backend, BackendError, GetResult, Key, ObjectMeta, Payload, Prefix, PutMode, collect_stream,
};
use body::download_stream;
use client::{length, object_meta};
use errors::sdk_error;

/// A request builder of the SDK's `$op` on `$key` in this backend's bucket and prefix.
macro_rules! object_request {
    ($self:ident, $op:ident, $key:expr) => {
        $self
            .client
            .$op()
            .bucket(&$self.bucket)
            .key($self.full_key($key))
    };
}

#[async_trait]
impl Backend for S3Backend {
    fn list(&self, prefix: &Prefix) -> BoxStream<'static, Result<ObjectMeta, BackendError>> {
        self.list_pages(format!("{}{}", self.root, prefix.as_str()))
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
        let out = object_request!(self, get_object, key)
            .send()
            .await
            .map_err(|e| sdk_error("get", key, e))?;
        let size = length(out.content_length());
        let size = size.ok_or_else(|| BackendError::other("get", key, "no content length"))?;
        let meta = object_meta(key.clone(), size, out.last_modified(), out.e_tag());
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
        let sent = object_request!(self, get_object, key)
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
        let len = length(out.content_length());
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
        let out = object_request!(self, head_object, key)
            .send()
            .await
            .map_err(|e| sdk_error("head", key, e))?;
        let size = length(out.content_length()).unwrap_or(0);
        Ok(object_meta(
            key.clone(),
            size,
            out.last_modified(),
            out.e_tag(),
        ))
    }

    async fn delete(&self, key: &Key) -> Result<(), BackendError> {
        let sent = object_request!(self, delete_object, key).send().await;
        match sent.map_err(|e| sdk_error("delete", key, e)) {
            Ok(_) | Err(BackendError::NotFound { .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }

    async fn delete_many(&self, keys: &[Key]) -> Result<(), BackendError> {
        self.delete_objects(keys).await
    }
}
