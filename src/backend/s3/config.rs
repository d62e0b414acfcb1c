//! S3 configuration: bucket, key prefix, region, endpoint, credentials and upload/listing limits,
//! and parsing of `s3://bucket[/prefix]` store URLs.
//!
//! Owns [`S3Config`], [`S3Credentials`] and S3's part-size limits. Must not build a client or
//! send a request (that is `client`).

use std::time::Duration;

use crate::backend::{BackendError, Key};

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
    /// Access key id (`AWS_ACCESS_KEY_ID`).
    pub access_key_id: String,
    /// Secret access key (`AWS_SECRET_ACCESS_KEY`).
    pub secret_access_key: String,
    /// Session token of temporary credentials (`AWS_SESSION_TOKEN`).
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
    /// The bucket holding the store.
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
    pub(super) fn checked_prefix(&self) -> Result<String, BackendError> {
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

    pub(super) fn check_limits(&self) -> Result<(), BackendError> {
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

#[cfg(test)]
mod tests {
    use super::*;

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
