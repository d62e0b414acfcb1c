//! Running an external command as a measured child process: wall time, CPU time and peak RSS
//! from the kernel's own accounting of that child (`wait4`), plus the helpers every peer run
//! needs (`sync`, apparent size of a directory tree). Knows nothing about which tool it runs.

use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Command, ExitStatus, Stdio};
use std::time::Instant;

/// What one or more child processes cost.
#[derive(Clone, Copy, Debug, Default)]
pub struct Cost {
    /// Wall-clock seconds.
    pub secs: f64,
    /// User + system CPU seconds of the children.
    pub cpu: f64,
    /// Largest peak RSS of any one child, in bytes. The kernel counts the parent's resident
    /// memory at the moment of the child's exec in it: [`run_status`] shrinks that floor first.
    pub peak_rss: u64,
}

impl Cost {
    /// Two costs paid one after the other: times add, the peak is the larger.
    pub fn then(self, other: Cost) -> Cost {
        Cost {
            secs: self.secs + other.secs,
            cpu: self.cpu + other.cpu,
            peak_rss: self.peak_rss.max(other.peak_rss),
        }
    }
}

/// Runs `cmd` to completion with stdout discarded and stderr captured; panics with the command
/// line and its stderr when it fails, since a failed run makes every figure meaningless.
pub fn run(cmd: &mut Command) -> Cost {
    let (cost, status, stderr) = run_status(cmd);
    assert!(
        status.success(),
        "{cmd:?} failed ({status}): {}",
        String::from_utf8_lossy(&stderr)
    );
    cost
}

/// Runs `cmd` and returns its cost, exit status and stderr. Stderr goes to a temporary file
/// (a pipe could fill up while we wait for the child).
pub fn run_status(cmd: &mut Command) -> (Cost, ExitStatus, Vec<u8>) {
    let mut err = tempfile::tempfile().expect("temporary file for stderr");
    shrink_rss_floor();
    let started = Instant::now();
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(err.try_clone().expect("stderr handle"))
        .spawn()
        .unwrap_or_else(|e| panic!("starting {cmd:?}: {e}"));
    let (status, usage) = wait4(child.id() as libc::pid_t);
    let secs = started.elapsed().as_secs_f64();
    let t = |tv: libc::timeval| tv.tv_sec as f64 + tv.tv_usec as f64 / 1e6;
    let cost = Cost {
        secs,
        cpu: t(usage.ru_utime) + t(usage.ru_stime),
        peak_rss: usage.ru_maxrss.max(0) as u64 * 1024,
    };
    use std::io::{Read, Seek};
    let mut stderr = Vec::new();
    let _ = err.rewind();
    let _ = err.read_to_end(&mut stderr);
    (cost, status, stderr)
}

/// A child's peak RSS starts at this process's peak RSS (its memory is the child's until exec):
/// returns freed heap to the system and resets the peak to the current RSS.
fn shrink_rss_floor() {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim only releases free heap memory.
    unsafe {
        libc::malloc_trim(0);
    }
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

/// This process's resident memory now, in bytes: the floor under every child's peak RSS.
pub fn own_rss() -> u64 {
    crate::common::status_bytes("VmRSS:")
}

/// Reaps `pid` and returns its exit status with its resource usage.
fn wait4(pid: libc::pid_t) -> (ExitStatus, libc::rusage) {
    let mut raw = 0;
    // SAFETY: wait4 only writes the status and the rusage struct passed to it.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    loop {
        let r = unsafe { libc::wait4(pid, &mut raw, 0, &mut usage) };
        if r == pid {
            return (ExitStatus::from_raw(raw), usage);
        }
        let e = std::io::Error::last_os_error();
        assert_eq!(e.kind(), std::io::ErrorKind::Interrupted, "wait4: {e}");
    }
}

/// `sync`: everything written so far reaches the disk. Its cost is part of a durable restore.
pub fn sync() -> Cost {
    run(&mut Command::new("sync"))
}

/// Whether `program` runs with `arg` (such as `--version`) and exits 0.
pub fn available(program: &str, arg: &str) -> bool {
    Command::new(program)
        .arg(arg)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// The first line a command prints on stdout, or an empty string.
pub fn first_line(program: &str, args: &[&str]) -> String {
    Command::new(program)
        .args(args)
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.lines().next().map(str::to_string))
        .unwrap_or_default()
}

/// Sum of the sizes of the regular files under `dir` (as `du -sb` counts data) and their
/// number; files named `skip` are left out.
pub fn tree_bytes(dir: &Path, skip: Option<&str>) -> (u64, u64) {
    let (mut bytes, mut files) = (0, 0);
    for e in walkdir::WalkDir::new(dir).into_iter().flatten() {
        let skipped = skip.is_some_and(|s| e.file_name() == s);
        if e.file_type().is_file() && !skipped {
            bytes += e.metadata().map(|m| m.len()).unwrap_or(0);
            files += 1;
        }
    }
    (bytes, files)
}

/// The blake3 of every regular file under `dir` but those named `skip`, by relative path: two
/// trees with equal digests hold the same names with the same bytes.
pub fn tree_digest(dir: &Path, skip: Option<&str>) -> [u8; 32] {
    let mut hasher = blake3::Hasher::new();
    let walk = walkdir::WalkDir::new(dir).sort_by_file_name();
    for e in walk.into_iter().flatten() {
        if !e.file_type().is_file() || skip.is_some_and(|s| e.file_name() == s) {
            continue;
        }
        let rel = e.path().strip_prefix(dir).unwrap();
        let content = blake3::hash(&std::fs::read(e.path()).unwrap());
        hasher.update(rel.as_os_str().as_encoded_bytes());
        hasher.update(&[0]);
        hasher.update(content.as_bytes());
    }
    *hasher.finalize().as_bytes()
}

/// The median of `xs` (0 when empty).
pub fn median(xs: &[f64]) -> f64 {
    let mut v: Vec<f64> = xs.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}
