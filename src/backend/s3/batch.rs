//! Batched deletes: one DeleteObjects request for up to 1000 keys.
//!
//! Owns the request and the mapping of its per-key errors. Must not retry or split: the caller
//! (gc, through the wrappers) decides batch sizes and repeats.

use aws_sdk_s3::types::{Delete, ObjectIdentifier};

use super::S3Backend;
use super::errors::sdk_error;
use crate::backend::{BackendError, Key, MAX_DELETE_BATCH};

impl S3Backend {
    /// Deletes `keys` in one DeleteObjects request (quiet mode: only failures are listed). A key
    /// that does not exist is not a failure; any other per-key failure fails the call, naming
    /// the first key and its code.
    pub(super) async fn delete_objects(&self, keys: &[Key]) -> Result<(), BackendError> {
        let Some(first) = keys.first() else {
            return Ok(());
        };
        if keys.len() > MAX_DELETE_BATCH {
            return Err(BackendError::other(
                "delete_many",
                first,
                format!(
                    "{} keys in one batch, at most {MAX_DELETE_BATCH}",
                    keys.len()
                ),
            ));
        }
        let objects = keys
            .iter()
            .map(|k| ObjectIdentifier::builder().key(self.full_key(k)).build())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| BackendError::other("delete_many", first, e))?;
        let delete = Delete::builder()
            .set_objects(Some(objects))
            .quiet(true)
            .build()
            .map_err(|e| BackendError::other("delete_many", first, e))?;
        let out = self
            .client
            .delete_objects()
            .bucket(&self.bucket)
            .delete(delete)
            .send()
            .await
            .map_err(|e| sdk_error("delete_many", first, e))?;
        let failed = out.errors().iter().find(|e| e.code() != Some("NoSuchKey"));
        let Some(e) = failed else { return Ok(()) };
        let (key, code) = (
            e.key().unwrap_or("?").to_string(),
            e.code().unwrap_or("no code"),
        );
        let source = format!("{code} ({})", e.message().unwrap_or("no message")).into();
        Err(match code {
            "InternalError" | "SlowDown" | "ServiceUnavailable" => BackendError::Transient {
                op: "delete_many",
                key,
                source,
            },
            _ => BackendError::Other {
                op: "delete_many",
                key,
                source,
            },
        })
    }
}
