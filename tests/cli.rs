//! casctl as a user runs it: real processes, real files. Covers the demo, listing and stats
//! output, clear errors for bad input, corruption detection, crash safety under SIGKILL, and a
//! multi-GiB file streamed with bounded memory.
mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

const T: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
const TL: &str = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";

fn casctl(store: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_casctl"));
    c.arg("--store").arg(store).env_remove("LAYERCAS_STORE");
    c
}

fn run(cmd: &mut Command) -> Output {
    let out = cmd.output().expect("casctl runs");
    out
}

fn json(out: &Output) -> Value {
    assert!(
        out.status.success(),
        "casctl failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("bad JSON ({e}): {}", String::from_utf8_lossy(&out.stdout)))
}

fn checkpoint(store: &Path, dir: &Path, lsn: &str) -> Output {
    run(casctl(store)
        .args([
            "--json",
            "checkpoint",
            "--tenant",
            T,
            "--timeline",
            TL,
            "--lsn",
            lsn,
        ])
        .arg(dir))
}

fn restore(store: &Path, to: &Path, lsn: Option<&str>) -> Output {
    let mut c = casctl(store);
    c.args(["--json", "restore", "--tenant", T, "--timeline", TL, "--to"])
        .arg(to);
    if let Some(l) = lsn {
        c.args(["--lsn", l]);
    }
    run(&mut c)
}

fn verify(store: &Path) -> (bool, Value) {
    let out = run(casctl(store).args(["--json", "verify", "--read-data"]));
    let v: Value = serde_json::from_slice(&out.stdout).expect("verify prints JSON");
    (out.status.success(), v)
}

fn error_messages(v: &Value) -> Vec<String> {
    v["problems"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["severity"] == "error")
        .map(|p| {
            format!(
                "{}: {}",
                p["key"].as_str().unwrap(),
                p["message"].as_str().unwrap()
            )
        })
        .collect()
}

/// A work directory of varied files.
fn sample_files(dir: &Path, seed: u64) -> BTreeMap<String, Vec<u8>> {
    let mut files = BTreeMap::new();
    for i in 0..30u64 {
        files.insert(
            format!("layer_{i:02}"),
            noise(((i * 37_000) % 400_000) as usize, seed + i),
        );
    }
    files.insert("big".into(), noise(6 << 20, seed + 99));
    write_files(dir, &files);
    files
}

/// `casctl demo` runs the main job end to end and reports success in JSON.
#[test]
fn demo_passes() {
    let (_d, dir) = tempdir();
    let out = run(Command::new(env!("CARGO_BIN_EXE_casctl"))
        .args(["--json", "demo", "--steps", "2", "--dir"])
        .arg(&dir));
    let v = json(&out);
    assert_eq!(v["ok"], true, "{v}");
    assert!(v["dedup_ratio"].as_f64().unwrap() > 2.0, "{v}");
    assert_eq!(v["verify_errors"], 0);
}

/// ls and stats describe what was stored, in text and JSON.
#[test]
fn ls_and_stats_report_the_store() {
    let (_s, store) = tempdir();
    let (_w, work) = tempdir();
    let files = sample_files(&work, 1);
    json(&checkpoint(&store, &work, "0/100"));
    json(&checkpoint(&store, &work, "1/0"));
    let ls = json(&run(casctl(&store).args(["--json", "ls"])));
    assert_eq!(ls[0]["tenant"], T);
    assert_eq!(ls[0]["checkpoints"], serde_json::json!(["0/100", "1/0"]));
    let text = String::from_utf8(run(casctl(&store).arg("ls")).stdout).unwrap();
    assert!(text.contains(&format!("{T}/{TL}: 0/100 1/0")), "{text}");
    let files_json = json(&run(casctl(&store).args([
        "--json",
        "ls",
        "--tenant",
        T,
        "--timeline",
        TL,
    ])));
    assert_eq!(files_json.as_array().unwrap().len(), files.len());

    let s = json(&run(casctl(&store).args(["--json", "stats"])));
    let logical: u64 = files.values().map(|f| f.len() as u64).sum::<u64>() * 2;
    assert_eq!(s["logical_bytes"], logical);
    assert_eq!(s["manifests"], 2);
    for field in ["stored_bytes", "chunks", "packs"] {
        assert!(s[field].as_u64().unwrap() > 0, "{field}: {s}");
    }
    assert!(
        s["stored_bytes"].as_u64().unwrap() < logical / 2 + 1024 * 1024,
        "second checkpoint must dedup: {s}"
    );
}

/// Bad arguments fail with a message naming what was wrong, and change nothing.
#[test]
fn bad_input_gets_clear_errors() {
    let (_s, store) = tempdir();
    let (_w, work) = tempdir();
    sample_files(&work, 2);
    let bad_lsn = run(casctl(&store)
        .args([
            "checkpoint",
            "--tenant",
            T,
            "--timeline",
            TL,
            "--lsn",
            "12345",
        ])
        .arg(&work));
    assert!(!bad_lsn.status.success());
    assert!(
        String::from_utf8_lossy(&bad_lsn.stderr).contains("12345"),
        "{}",
        String::from_utf8_lossy(&bad_lsn.stderr)
    );
    let bad_tenant = run(casctl(&store)
        .args([
            "checkpoint",
            "--tenant",
            "xyz",
            "--timeline",
            TL,
            "--lsn",
            "0/1",
        ])
        .arg(&work));
    assert!(String::from_utf8_lossy(&bad_tenant.stderr).contains("tenant id"));
    let no_lsn = run(casctl(&store)
        .args(["checkpoint", "--tenant", T, "--timeline", TL])
        .arg(&work));
    assert!(String::from_utf8_lossy(&no_lsn.stderr).contains("--lsn"));
    let missing = run(casctl(&store)
        .args(["restore", "--tenant", T, "--timeline", TL, "--to"])
        .arg(work.join("out")));
    assert!(!missing.status.success());
    json(&checkpoint(&store, &work, "0/10"));
    let older = checkpoint(&store, &work, "0/5");
    assert!(
        String::from_utf8_lossy(&older.stderr).contains("older than"),
        "{}",
        String::from_utf8_lossy(&older.stderr)
    );
}

/// A flipped byte in a pack makes `verify --read-data` and `restore` fail naming the chunk; damaged
/// manifests and index objects are reported by key; a manifest naming `../x` is rejected.
#[test]
fn corruption_is_detected_and_named() {
    let (_s, store) = tempdir();
    let (_w, work) = tempdir();
    sample_files(&work, 3);
    json(&checkpoint(&store, &work, "0/10"));
    assert!(verify(&store).0);

    let packs = objects(&store.join("packs"));
    let pack = &packs[0];
    let mut bytes = std::fs::read(pack).unwrap();
    bytes[100] ^= 0x20;
    overwrite(pack, &bytes);
    let (ok, v) = verify(&store);
    assert!(!ok);
    let errors = error_messages(&v);
    assert!(errors.iter().any(|e| e.contains("chunk ")), "{errors:?}");
    let (_o, out) = tempdir();
    let r = restore(&store, &out, None);
    assert!(!r.status.success());
    let msg = String::from_utf8_lossy(&r.stderr);
    assert!(
        msg.contains("chunk ") && msg.contains("pack ") && msg.contains("file "),
        "{msg}"
    );
    assert!(
        read_tree(&out).keys().all(|k| !k.contains("layercas")),
        "no temporary file stays"
    );
    bytes[100] ^= 0x20;
    overwrite(pack, &bytes);
    assert!(verify(&store).0);

    let manifest = &objects(&store.join("manifests"))[0];
    let good = std::fs::read(manifest).unwrap();
    for damage in [
        good[..good.len() / 2].to_vec(),
        b"garbage".to_vec(),
        flip(&good, 40),
    ] {
        overwrite(manifest, &damage);
        let (ok, v) = verify(&store);
        assert!(!ok);
        assert!(
            error_messages(&v)
                .iter()
                .any(|e| e.starts_with("manifests/")),
            "{v}"
        );
    }
    overwrite(manifest, &good);

    let index = &objects(&store.join("index"))[0];
    let good_index = std::fs::read(index).unwrap();
    overwrite(index, &good_index[..good_index.len() - 3]);
    let (ok, v) = verify(&store);
    assert!(
        !ok && error_messages(&v).iter().any(|e| e.starts_with("index/")),
        "{v}"
    );
    overwrite(index, &good_index);
    assert!(verify(&store).0);
}

/// A well-formed manifest (valid checksum) naming `../x` or `/etc/x` is refused by verify and
/// restore, and nothing is written outside the target.
#[test]
fn escaping_names_are_refused() {
    use layercas::id::{FileHash, Lsn, TenantId, TimelineId};
    use layercas::manifest::{FileEntry, Manifest};
    for bad in ["../x", "/etc/x"] {
        let (_s, store) = tempdir();
        let (_w, work) = tempdir();
        sample_files(&work, 4);
        json(&checkpoint(&store, &work, "0/10"));
        let m = Manifest {
            tenant: T.parse::<TenantId>().unwrap(),
            timeline: TL.parse::<TimelineId>().unwrap(),
            lsn: Lsn(0x20),
            prev_lsn: Some(Lsn(0x10)),
            metadata: layercas::metadata::TimelineMetadata::at(Lsn(0x20)),
            added: vec![FileEntry {
                name: bad.into(),
                size: 0,
                hash: FileHash(*blake3::hash(b"").as_bytes()),
                chunks: vec![],
            }],
            removed: vec![],
            base: false,
        };
        std::fs::write(
            store.join(format!("manifests/{T}/{TL}/0000000000000020")),
            m.encode(),
        )
        .unwrap();
        let (ok, v) = verify(&store);
        assert!(
            !ok && error_messages(&v).iter().any(|e| e.contains(bad)),
            "{v}"
        );
        let (_o, out) = tempdir();
        let r = restore(&store, &out.join("t"), None);
        assert!(!r.status.success());
        assert!(String::from_utf8_lossy(&r.stderr).contains(bad));
        assert!(!out.join("x").exists());
    }
}

/// SIGKILL of `casctl checkpoint` at many points: afterwards `verify --read-data` finds no error,
/// and a checkpoint whose manifest exists restores byte-identically (so no manifest exists for an
/// incomplete checkpoint).
#[test]
fn killed_checkpoints_leave_a_consistent_store() {
    let (_s, store) = tempdir();
    let (_w, work) = tempdir();
    let (_p, probe_store) = tempdir();
    // Time one full run to spread the kills over it.
    let mut files = sample_files(&work, 5);
    let started = Instant::now();
    json(&checkpoint(&probe_store, &work, "0/1"));
    let full = started.elapsed();
    json(&run(casctl(&store).args(["--json", "init"])));
    let kills = 16;
    let mut completed = 0;
    for i in 0..kills {
        // New content each round, so every run has real work to do.
        files.insert(format!("round_{i}"), noise(3 << 20, 1000 + i as u64));
        write_files(&work, &files);
        let lsn = format!("1/{:X}", i + 1);
        let mut child = casctl(&store)
            .args(["checkpoint", "--tenant", T, "--timeline", TL, "--lsn", &lsn])
            .arg(&work)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(full.mul_f64(i as f64 / kills as f64 * 1.2));
        let _ = child.kill();
        let status = child.wait().unwrap();
        completed += status.success() as usize;

        let (ok, v) = verify(&store);
        assert!(ok, "after kill {i}: {:?}", error_messages(&v));
        let manifest = store.join(format!(
            "manifests/{T}/{TL}/{:016X}",
            (1u64 << 32) + i as u64 + 1
        ));
        if manifest.exists() {
            let (_o, out) = tempdir();
            json(&restore(&store, &out, Some(&lsn)));
            assert_eq!(
                read_tree(&out),
                files,
                "checkpoint {lsn} exists but is incomplete"
            );
        } else {
            assert!(
                !status.success(),
                "a successful checkpoint must have its manifest"
            );
        }
    }
    assert!(
        completed < kills,
        "no run was interrupted: the kill points did not cover the work"
    );
}

/// A multi-GiB file round-trips through casctl with peak memory far below its size.
#[test]
fn multi_gib_file_streams_with_bounded_memory() {
    let (_s, store) = tempdir();
    let (_w, work) = tempdir();
    let size: usize = 2 << 30;
    {
        use std::io::Write;
        let mut f = std::io::BufWriter::new(std::fs::File::create(work.join("huge")).unwrap());
        let block = 64 << 20;
        for i in 0..size / block {
            f.write_all(&noise(block, 77 + i as u64)).unwrap();
        }
    }
    let (status, rss) = run_measured(
        casctl(&store)
            .args([
                "checkpoint",
                "--tenant",
                T,
                "--timeline",
                TL,
                "--lsn",
                "0/1",
            ])
            .arg(&work),
    );
    assert!(status, "checkpoint failed");
    assert!(
        rss < 400 << 20,
        "checkpoint peak RSS {} MiB for a 2 GiB file",
        rss >> 20
    );
    let (_o, out) = tempdir();
    let (status, rss) = run_measured(
        casctl(&store)
            .args(["restore", "--tenant", T, "--timeline", TL, "--to"])
            .arg(&out),
    );
    assert!(status, "restore failed");
    assert!(
        rss < 400 << 20,
        "restore peak RSS {} MiB for a 2 GiB file",
        rss >> 20
    );
    assert!(same_file(&work.join("huge"), &out.join("huge")));
}

/// Runs a command to completion; returns success and its peak RSS in bytes (from wait4).
fn run_measured(cmd: &mut Command) -> (bool, u64) {
    let child = cmd.stdout(Stdio::null()).spawn().unwrap();
    let pid = child.id() as libc::pid_t;
    let mut status = 0;
    // SAFETY: plain FFI call with valid out-pointers; the child is ours and not waited elsewhere.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let r = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    assert_eq!(r, pid);
    std::mem::forget(child);
    (
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        usage.ru_maxrss as u64 * 1024,
    )
}

fn same_file(a: &Path, b: &Path) -> bool {
    use std::io::Read;
    let (mut fa, mut fb) = (
        std::fs::File::open(a).unwrap(),
        std::fs::File::open(b).unwrap(),
    );
    let (mut ba, mut bb) = (vec![0u8; 1 << 20], vec![0u8; 1 << 20]);
    loop {
        let na = fa.read(&mut ba).unwrap();
        let mut nb = 0;
        while nb < na {
            let n = fb.read(&mut bb[nb..na]).unwrap();
            if n == 0 {
                return false;
            }
            nb += n;
        }
        if ba[..na] != bb[..na] {
            return false;
        }
        if na == 0 {
            return fb.read(&mut bb).unwrap() == 0;
        }
    }
}

fn objects(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            if e.file_type().unwrap().is_dir() {
                stack.push(e.path());
            } else {
                out.push(e.path());
            }
        }
    }
    out.sort();
    out
}

/// Replaces a stored object's bytes in place (objects are read-only hard links; write a new file).
fn overwrite(path: &Path, bytes: &[u8]) {
    std::fs::remove_file(path).unwrap();
    std::fs::write(path, bytes).unwrap();
}

fn flip(b: &[u8], at: usize) -> Vec<u8> {
    let mut v = b.to_vec();
    v[at] ^= 1;
    v
}

#[allow(dead_code)]
fn wait_for(mut f: impl FnMut() -> bool, limit: Duration) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    false
}
