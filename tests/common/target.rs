//! A store that tests drive through `casctl` and also reach into directly (to damage objects):
//! a local directory, or a fresh bucket on the test S3 server.

use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;

use bytes::Bytes;
use layercas::backend::{BackendExt, DynBackend, Key, Payload, Prefix, PutMode};

/// Where a test's store lives.
pub enum Target {
    Local(PathBuf),
    #[cfg(feature = "s3")]
    S3 {
        url: String,
        backend: DynBackend,
    },
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

impl Target {
    /// A store in a local directory.
    pub fn local(dir: &std::path::Path) -> Target {
        Target::Local(dir.to_path_buf())
    }

    /// A store in a fresh bucket on the test S3 server (started on first use).
    #[cfg(feature = "s3")]
    pub fn s3() -> Target {
        let s3 = runtime().block_on(super::s3server::s3_backend(
            super::s3server::small_pages_and_parts,
        ));
        let url = format!(
            "s3://{}/{}",
            s3.config().bucket,
            s3.config().prefix.trim_end_matches('/')
        );
        Target::S3 {
            url,
            backend: Arc::new(s3),
        }
    }

    /// `casctl --store <this store>`, with the S3 endpoint and credentials where needed.
    pub fn casctl(&self) -> Command {
        self.casctl_at(None)
    }

    /// The same, but sending S3 requests to `endpoint` (a proxy in front of the server).
    pub fn casctl_through(&self, endpoint: &str) -> Command {
        self.casctl_at(Some(endpoint))
    }

    fn casctl_at(&self, _endpoint: Option<&str>) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_casctl"));
        c.env_remove("LAYERCAS_STORE");
        match self {
            Target::Local(dir) => {
                c.arg("--store").arg(dir);
            }
            #[cfg(feature = "s3")]
            Target::S3 { url, .. } => {
                let server = super::s3server::server();
                c.args([
                    "--store",
                    url,
                    "--endpoint",
                    _endpoint.unwrap_or(&server.endpoint),
                    "--region",
                    "us-east-1",
                ]);
                c.env("AWS_ACCESS_KEY_ID", &server.access_key)
                    .env("AWS_SECRET_ACCESS_KEY", &server.secret_key);
            }
        }
        c
    }

    /// The store's backend, for reaching into it.
    pub fn backend(&self) -> DynBackend {
        match self {
            Target::Local(dir) => super::local_backend(dir),
            #[cfg(feature = "s3")]
            Target::S3 { backend, .. } => backend.clone(),
        }
    }

    /// Keys under `prefix`, sorted.
    pub fn keys(&self, prefix: &str) -> Vec<String> {
        let b = self.backend();
        let mut keys: Vec<String> = runtime()
            .block_on(b.list_all(&Prefix::new(prefix).unwrap()))
            .unwrap()
            .into_iter()
            .map(|m| m.key.as_str().to_string())
            .collect();
        keys.sort();
        keys
    }

    /// An object's bytes.
    pub fn read(&self, key: &str) -> Vec<u8> {
        let b = self.backend();
        runtime()
            .block_on(b.get_bytes(&Key::new(key).unwrap(), 1 << 30))
            .unwrap()
            .to_vec()
    }

    /// Replaces (or creates) an object.
    pub fn write(&self, key: &str, bytes: &[u8]) {
        let b = self.backend();
        let payload = Payload::from_bytes(Bytes::copy_from_slice(bytes));
        runtime()
            .block_on(b.put(&Key::new(key).unwrap(), payload, PutMode::Overwrite))
            .unwrap();
    }

    /// Deletes every object of the store.
    pub fn clear(&self) {
        let b = self.backend();
        for key in self.keys("") {
            runtime()
                .block_on(b.delete(&Key::new(&key).unwrap()))
                .unwrap();
        }
    }

    /// Whether an object exists.
    pub fn exists(&self, key: &str) -> bool {
        let b = self.backend();
        runtime().block_on(b.head(&Key::new(key).unwrap())).is_ok()
    }
}
