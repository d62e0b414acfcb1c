//! A fresh bucket on an S3 server for a benchmark: the one `LAYERCAS_S3_ENDPOINT` names (with the
//! `AWS_*` credentials), or a SeaweedFS started by scripts/s3-server.sh for this process (killed
//! when it exits); in the standard stack, so its metrics count every request sent.

use std::sync::Arc;

use layercas::backend::open::{Opened, StackConfig, standard_stack};
use layercas::backend::s3::{S3Backend, S3Config, S3Credentials};

/// Creates bucket `bucket` (starting a server first if none is named) and opens it.
pub fn bucket(rt: &tokio::runtime::Runtime, bucket: &str) -> Opened {
    if std::env::var_os("LAYERCAS_S3_ENDPOINT").is_none() {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/s3-server.sh");
        let out = std::process::Command::new(script)
            .args(["start", "--watch", &std::process::id().to_string()])
            .output()
            .expect("scripts/s3-server.sh runs");
        assert!(
            out.status.success(),
            "S3 server: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            if let Some((k, v)) = line.strip_prefix("export ").and_then(|l| l.split_once('=')) {
                // SAFETY: called from main before other threads read the environment.
                unsafe { std::env::set_var(k, v.trim_matches(['\'', '"'])) };
            }
        }
    }
    let var = |k: &str| std::env::var(k).unwrap_or_default();
    let mut config = S3Config::new(bucket.to_string()).with_endpoint(var("LAYERCAS_S3_ENDPOINT"));
    config.region = Some("us-east-1".into());
    config.credentials = Some(S3Credentials {
        access_key_id: var("AWS_ACCESS_KEY_ID"),
        secret_access_key: var("AWS_SECRET_ACCESS_KEY"),
        session_token: None,
    });
    let s3 = rt.block_on(async {
        let b = S3Backend::new(config).await.unwrap();
        b.create_bucket_if_missing().await.unwrap();
        b
    });
    standard_stack(Arc::new(s3), &StackConfig::default())
}
