//! SIGKILL of `casctl sync` in the middle of its work, uploading to the real S3 server and then
//! downloading from it: every restart converges, `verify` finds nothing wrong, and no layer file
//! is half-written under its name.
//!
//! The kill points are request counts, not times. A request-holding proxy lets a run's first
//! k-1 requests through and holds every later one, so the process is stuck waiting on its k-th
//! request when the test kills it; which kills cut a run short does not depend on how fast the
//! machine is. Requests in flight when the process dies still land (the proxy already forwarded
//! them); held ones never do.
#![cfg(feature = "s3")]
mod common;
#[allow(dead_code)]
#[path = "common/sync_harness.rs"]
mod sync_harness;

use std::path::Path;
use std::process::{Command, ExitStatus, Stdio};
use std::time::Duration;

use common::hold_proxy::{Action, HoldProxy};
use common::target::Target;
use common::*;
use layercas::testkit::sample::{SampleSpec, SampleWorkdir};
use sync_harness::tree;

/// How many kill points each direction gets, spread evenly over a whole run's requests.
const KILLS: usize = 10;

#[test]
fn killed_sync_runs_converge() {
    // A multi-threaded runtime keeps serving the proxies while this thread waits on processes.
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (_w, work) = tempdir();
    let (mut wd, _) = SampleWorkdir::create(
        &work,
        &SampleSpec {
            bytes_per_timeline: 6 << 20,
            ..SampleSpec::small()
        },
    )
    .unwrap();
    wd.step().unwrap();
    let want = tree(&work);
    let timelines = wd.timelines().len();
    let sync = |store: &Target, endpoint: &str, dir: &Path, download: bool| {
        let mut c = store.casctl_through(endpoint);
        c.args(["--json", "sync", "--workdir"]).arg(dir);
        if download {
            c.arg("--download");
        }
        c
    };

    // A whole upload and a whole download, their requests counted, on a store of their own.
    // Kills land on writes during an upload, on reads of packs during a download (most of the
    // other requests list and read manifests and indexes before anything is written).
    let probe = Target::s3();
    let (_p, scratch) = tempdir();
    let upload = Requests {
        method: "PUT",
        path: "",
    };
    let download = Requests {
        method: "GET",
        path: "/packs/",
    };
    let uploads = whole_run(&rt, upload, |url| sync(&probe, url, &work, false));
    let downloads = whole_run(&rt, download, |url| sync(&probe, url, &scratch, true));

    let store = Target::s3();
    let cut_uploads = kill_at_requests(
        &rt,
        (upload, uploads),
        |url| sync(&store, url, &work, false),
        || store.clear(),
        |_| {
            assert_verifies(&store);
            // Partial: data went in, but not every timeline's checkpoint is recorded yet.
            let (packs, manifests) = (store.keys("packs/").len(), store.keys("manifests/").len());
            packs + manifests > 0 && manifests < timelines
        },
    );
    assert!(
        cut_uploads > 0,
        "no kill interrupted an upload in progress: the kill points prove nothing"
    );
    assert!(
        succeeds(sync(&store, &server().endpoint, &work, false)),
        "upload converges"
    );

    let (_d, fresh) = tempdir();
    let empty = |dir: &Path| {
        std::fs::remove_dir_all(dir).unwrap();
        std::fs::create_dir(dir).unwrap();
    };
    let cut_downloads = kill_at_requests(
        &rt,
        (download, downloads),
        |url| sync(&store, url, &fresh, true),
        || empty(&fresh),
        |i| {
            // Whatever is under a final name is complete and correct.
            let got = tree(&fresh);
            for (name, bytes) in &got {
                if !name.contains(".layercas") {
                    assert_eq!(
                        Some(bytes),
                        want.get(name),
                        "{name} is wrong after kill {i}"
                    );
                }
            }
            // Partial: something arrived, but not yet everything.
            !got.is_empty() && got != want
        },
    );
    println!(
        "kills that cut a run short: {cut_uploads} of {KILLS} uploads, {cut_downloads} of {KILLS} downloads"
    );
    assert!(
        cut_downloads > 0,
        "no kill interrupted a download in progress: the kill points prove nothing"
    );
    assert!(
        succeeds(sync(&store, &server().endpoint, &fresh, true)),
        "download converges"
    );
    // Converged, with no temporary file left over from the killed runs.
    assert_eq!(
        tree(&fresh),
        want,
        "download converges to the uploaded workdir"
    );
    assert_verifies(&store);
}

fn server() -> &'static s3server::S3Server {
    s3server::server()
}

/// Which requests kill points count: a method and a part of the path.
#[derive(Clone, Copy)]
struct Requests {
    method: &'static str,
    path: &'static str,
}

/// Runs `command` (given the proxy's URL) to the end through a counting proxy; returns how many
/// of its requests were `which`.
fn whole_run(
    rt: &tokio::runtime::Runtime,
    which: Requests,
    command: impl Fn(&str) -> Command,
) -> usize {
    let proxy = rt.block_on(HoldProxy::start(&server().endpoint));
    assert!(succeeds(command(&proxy.url)), "the whole run succeeds");
    let n = proxy.requests(which.method, which.path);
    assert!(n > 0, "the whole run made no such request");
    n
}

/// For k spread over 1..=`total` (of the `which` requests a whole run makes), starts `command`
/// through a proxy that holds its k-th such request and every later one, SIGKILLs it once it is
/// stuck there, and runs `check(i)`, which says
/// whether the run left partial work behind. A run that finishes before its k-th request (later
/// runs have less left to do) left nothing to cut: `reset` then starts the work over. Returns
/// how many kills cut a run in the middle of its work: the process was still running when
/// killed and `check` saw partial work.
fn kill_at_requests(
    rt: &tokio::runtime::Runtime,
    (which, total): (Requests, usize),
    command: impl Fn(&str) -> Command,
    reset: impl Fn(),
    check: impl Fn(usize) -> bool,
) -> usize {
    let mut cut = 0;
    for i in 0..KILLS {
        let k = 1 + i * total / KILLS;
        let proxy = rt.block_on(HoldProxy::start(&server().endpoint));
        let held = proxy.rule_after(k - 1, which.method, which.path, usize::MAX, Action::Hold);
        let mut child = command(&proxy.url)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let (running, status) = stop_when_held(&mut child, || held.count() > 0);
        if running && !status.success() && check(i) {
            cut += 1;
        }
        if !running {
            reset();
        }
    }
    cut
}

/// Waits until `held()` (then SIGKILLs the child, which cannot finish past a held request) or
/// until the child exits; returns whether it was still running when killed, and its status.
fn stop_when_held(child: &mut std::process::Child, held: impl Fn() -> bool) -> (bool, ExitStatus) {
    loop {
        if held() {
            let running = child.try_wait().unwrap().is_none();
            let _ = child.kill();
            return (running, child.wait().unwrap());
        }
        if let Some(status) = child.try_wait().unwrap() {
            return (false, status);
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn succeeds(mut c: Command) -> bool {
    let out = c.output().unwrap();
    if !out.status.success() {
        eprintln!("{}", String::from_utf8_lossy(&out.stderr));
    }
    out.status.success()
}

/// `casctl verify` passes, unless the store has no config yet (a kill before anything landed).
fn assert_verifies(store: &Target) {
    let out = store.casctl().arg("verify").output().unwrap();
    let empty = !store.exists("config");
    assert!(
        empty || out.status.success(),
        "verify failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
