//! The S3 server the tests run against: started once per test binary through
//! `scripts/s3-server.sh` (SeaweedFS, or moto with `LAYERCAS_S3_SERVER=moto`), or an already
//! running one named by `LAYERCAS_S3_ENDPOINT`. It is stopped by PID when the test process exits
//! (an `atexit` hook, and the script's watchdog should the process die without one).
//!
//! A server that cannot be started fails the test, loudly, with or without `CI=true`: these
//! tests never skip silently.

use std::process::Command;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicI32, AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use layercas::backend::s3::{S3Backend, S3Config, S3Credentials};

/// A running S3 server.
#[derive(Debug)]
pub struct S3Server {
    pub endpoint: String,
    /// `seaweedfs`, `moto`, or what `LAYERCAS_S3_SERVER` says for an external one.
    pub kind: String,
    pub access_key: String,
    pub secret_key: String,
}

static SERVER: OnceLock<S3Server> = OnceLock::new();
static STARTED_PID: AtomicI32 = AtomicI32::new(0);

extern "C" fn stop_started_server() {
    let pid = STARTED_PID.swap(0, Ordering::SeqCst);
    if pid > 0 {
        // SAFETY: sends a signal to the one process this test binary started.
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

/// The server for this test binary, started on first use.
pub fn server() -> &'static S3Server {
    SERVER.get_or_init(|| {
        if let Some(endpoint) = env("LAYERCAS_S3_ENDPOINT") {
            return S3Server {
                endpoint,
                kind: env("LAYERCAS_S3_SERVER").unwrap_or_else(|| "external".into()),
                access_key: env("AWS_ACCESS_KEY_ID").unwrap_or_else(|| "layercas-test".into()),
                secret_key: env("AWS_SECRET_ACCESS_KEY")
                    .unwrap_or_else(|| "layercas-test-secret".into()),
            };
        }
        start()
    })
}

fn start() -> S3Server {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/s3-server.sh");
    let mut cmd = Command::new(script);
    cmd.args(["start", "--watch", &std::process::id().to_string()]);
    if env("LAYERCAS_S3_SERVER").as_deref() == Some("moto") {
        cmd.arg("--moto");
    }
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {script}: {e} (CI={:?})", env("CI")));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{script} start failed ({}); the S3 tests need a server and never skip.\n{}{}",
        out.status,
        stdout,
        String::from_utf8_lossy(&out.stderr)
    );
    let var = |name: &str| {
        stdout
            .lines()
            .filter_map(|l| l.strip_prefix("export ")?.split_once('='))
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.to_string())
            .unwrap_or_else(|| panic!("{script} did not print {name}:\n{stdout}"))
    };
    let pid: i32 = var("LAYERCAS_S3_PID").parse().expect("server pid");
    STARTED_PID.store(pid, Ordering::SeqCst);
    // SAFETY: registers a plain function with no captured state.
    unsafe { libc::atexit(stop_started_server) };
    S3Server {
        endpoint: var("LAYERCAS_S3_ENDPOINT"),
        kind: var("LAYERCAS_S3_SERVER"),
        access_key: var("AWS_ACCESS_KEY_ID"),
        secret_key: var("AWS_SECRET_ACCESS_KEY"),
    }
}

/// A name no other test (in this or another process) uses: pid, time and a counter.
pub fn unique(tag: &str) -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos()
        % 1_000_000_000_000;
    format!(
        "{tag}-{}-{nanos:x}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// Configuration for a fresh bucket on the test server, with a key prefix inside it; `tweak`
/// adjusts page and part sizes before the bucket is created.
pub async fn s3_backend(tweak: impl FnOnce(&mut S3Config)) -> S3Backend {
    let server = server();
    let mut config = S3Config::new(unique("lc")).with_endpoint(&server.endpoint);
    config.prefix = "store/".into();
    config.region = Some("us-east-1".into());
    config.credentials = Some(S3Credentials {
        access_key_id: server.access_key.clone(),
        secret_access_key: server.secret_key.clone(),
        session_token: None,
    });
    tweak(&mut config);
    let backend = S3Backend::new(config).await.expect("S3 backend");
    backend
        .create_bucket_if_missing()
        .await
        .unwrap_or_else(|e| {
            panic!(
                "create bucket on {} ({}): {e}",
                server.endpoint, server.kind
            )
        });
    backend
}

/// Small pages and the smallest parts, so tests exercise pagination and multipart cheaply.
pub fn small_pages_and_parts(config: &mut S3Config) {
    config.list_page_size = 7;
    config.multipart_threshold = 5 << 20;
    config.part_size = 5 << 20;
    config.upload_concurrency = 2;
}
