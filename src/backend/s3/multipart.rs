//! Uploads: single `PutObject` requests and multipart uploads (bounded parts in flight, aborted
//! on failure), both with the conditional headers a [`PutMode`] asks for.
//!
//! Owns the upload request sequence. Must not decide between the two paths (the trait's `put`
//! does) or retry a part (that is the retry wrapper's job, over the whole `put`).

use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use futures::stream::{self, StreamExt, TryStreamExt};

use super::body::{take_failure, upload_body};
use super::client::S3Backend;
use super::config::MAX_PARTS;
use super::errors::sdk_error;
use crate::backend::{BackendError, Key, Payload, PutMode};

impl S3Backend {
    pub(super) async fn put_single(
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

    pub(super) async fn put_multipart(
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
}
