//! The backends the scale benchmark runs on (local disk, an S3 server), each in the standard
//! stack with the counters of every request it sends.
//!
//! Owns setting them up; measures nothing.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use layercas::backend::DynBackend;
use layercas::backend::layers::metrics::Metrics;
use layercas::backend::local::LocalBackend;
use layercas::backend::open::{StackConfig, standard_stack};

/// One backend under test, with the counters of every request it sends.
pub struct Under {
    pub name: &'static str,
    pub backend: DynBackend,
    pub metrics: Arc<Metrics>,
    pub scratch: PathBuf,
}

impl Under {
    pub fn requests(&self) -> u64 {
        self.metrics.snapshot().total_requests()
    }
}

pub fn local_under(scratch: &Path) -> Under {
    let base: DynBackend = Arc::new(LocalBackend::new(scratch.join("store")).unwrap());
    let opened = standard_stack(base, &StackConfig::default());
    Under {
        name: "local",
        backend: opened.backend,
        metrics: opened.metrics,
        scratch: scratch.to_path_buf(),
    }
}

/// A fresh bucket on the S3 server (started here unless `LAYERCAS_S3_ENDPOINT` is set), named
/// by `tag` and this process.
pub fn s3_under(rt: &tokio::runtime::Runtime, scratch: &Path, tag: &str) -> Under {
    let opened = crate::s3::bucket(rt, &format!("scale-{tag}-{}", std::process::id()));
    Under {
        name: "s3",
        backend: opened.backend,
        metrics: opened.metrics,
        scratch: scratch.to_path_buf(),
    }
}
