//! casctl as a user runs it: real processes, real files. Covers the demo, listing and stats
//! output, clear errors for bad input, corruption detection, crash safety under SIGKILL, and a
//! multi-GiB file streamed with bounded memory.
#[path = "common/casctl_json.rs"]
mod casctl_json;
mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Instant;

use casctl_json::*;
use common::target::Target;
use common::*;

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

/// ls and stats describe what was stored, in text and JSON. On local fs.
#[test]
fn ls_and_stats_report_the_store() {
    let (_s, store) = tempdir();
    ls_and_stats(&Target::local(&store));
}

/// The same on the real S3 server.
#[test]
fn ls_and_stats_report_the_store_on_s3() {
    ls_and_stats(&Target::s3());
}

fn ls_and_stats(t: &Target) {
    let (_w, work) = tempdir();
    let files = sample_files(&work, 1);
    json(&checkpoint(t, &work, "0/100"));
    json(&checkpoint(t, &work, "1/0"));
    let ls = json(&run(t.casctl().args(["--json", "ls"])));
    assert_eq!(ls[0]["tenant"], T);
    assert_eq!(ls[0]["checkpoints"], serde_json::json!(["0/100", "1/0"]));
    let text = String::from_utf8(run(t.casctl().arg("ls")).stdout).unwrap();
    assert!(text.contains(&format!("{T}/{TL}: 0/100 1/0")), "{text}");
    let files_json = json(&run(t.casctl().args([
        "--json",
        "ls",
        "--tenant",
        T,
        "--timeline",
        TL,
    ])));
    assert_eq!(files_json.as_array().unwrap().len(), files.len());

    let s = json(&run(t.casctl().args(["--json", "stats"])));
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
    assert!(
        s["requests"]["ops"]["list"]["requests"].as_u64().unwrap() > 0,
        "stats reports its own requests: {s}"
    );
}

/// Bad arguments fail with a message naming what was wrong, and change nothing.
#[test]
fn bad_input_gets_clear_errors() {
    let (_s, store) = tempdir();
    let t = Target::local(&store);
    let (_w, work) = tempdir();
    sample_files(&work, 2);
    let stderr = |o: Output| String::from_utf8_lossy(&o.stderr).to_string();
    let bad_lsn = run(t
        .casctl()
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
    assert!(stderr(bad_lsn).contains("12345"));
    let bad_tenant = run(t
        .casctl()
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
    assert!(stderr(bad_tenant).contains("tenant id"));
    let no_lsn = run(t
        .casctl()
        .args(["checkpoint", "--tenant", T, "--timeline", TL])
        .arg(&work));
    assert!(stderr(no_lsn).contains("--lsn"));
    let missing = run(t
        .casctl()
        .args(["restore", "--tenant", T, "--timeline", TL, "--to"])
        .arg(work.join("out")));
    assert!(!missing.status.success());
    assert!(stderr(missing).contains("not found"));
    json(&checkpoint(&t, &work, "0/10"));
    let older = checkpoint(&t, &work, "0/5");
    assert!(stderr(older).contains("older than"));
    let no_store = run(Command::new(env!("CARGO_BIN_EXE_casctl"))
        .env_remove("LAYERCAS_STORE")
        .arg("stats"));
    assert!(stderr(no_store).contains("--store"));
}

/// A flipped byte in a pack makes `verify --read-data` and `restore` fail naming the chunk;
/// damaged manifests and index objects are reported by key. On local fs.
#[test]
fn corruption_is_detected_and_named() {
    let (_s, store) = tempdir();
    corruption(&Target::local(&store));
}

/// The same on the real S3 server.
#[test]
fn corruption_is_detected_and_named_on_s3() {
    corruption(&Target::s3());
}

fn corruption(t: &Target) {
    let (_w, work) = tempdir();
    sample_files(&work, 3);
    json(&checkpoint(t, &work, "0/10"));
    assert!(verify(t).0);

    let pack = &t.keys("packs/")[0];
    let mut bytes = t.read(pack);
    bytes[100] ^= 0x20;
    t.write(pack, &bytes);
    let (ok, v) = verify(t);
    assert!(!ok);
    let errors = error_messages(&v);
    assert!(errors.iter().any(|e| e.contains("chunk ")), "{errors:?}");
    let (_o, out) = tempdir();
    let r = restore(t, &out, None);
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
    t.write(pack, &bytes);
    assert!(verify(t).0);

    let manifest = &t.keys("manifests/")[0];
    let good = t.read(manifest);
    for damage in [
        good[..good.len() / 2].to_vec(),
        b"garbage".to_vec(),
        flip(&good, 40),
    ] {
        t.write(manifest, &damage);
        let (ok, v) = verify(t);
        assert!(!ok);
        assert!(
            error_messages(&v).iter().any(|e| e.contains("manifests/")),
            "{v}"
        );
    }
    t.write(manifest, &good);

    let index = &t.keys("index/")[0];
    let good_index = t.read(index);
    t.write(index, &good_index[..good_index.len() - 3]);
    let (ok, v) = verify(t);
    assert!(
        !ok && error_messages(&v).iter().any(|e| e.contains("index/")),
        "{v}"
    );
    t.write(index, &good_index);
    assert!(verify(t).0);
}

/// A well-formed manifest (valid checksum) naming `../x` or `/etc/x` is refused by verify and
/// restore, and nothing is written outside the target.
#[test]
fn escaping_names_are_refused() {
    use layercas::format::manifest::{FileEntry, Manifest};
    use layercas::id::{FileHash, Lsn, TenantId, TimelineId};
    // Where each name would land if restore followed it out of the target `out/t`; the check
    // means something only if nothing is there beforehand.
    let (_o, out) = tempdir();
    let escapes = [("../x", out.join("x")), ("/etc/x", PathBuf::from("/etc/x"))];
    for (_, landing) in &escapes {
        assert!(
            !landing.exists(),
            "{} exists before the test",
            landing.display()
        );
    }
    for (bad, landing) in escapes {
        let (_s, store) = tempdir();
        let t = Target::local(&store);
        let (_w, work) = tempdir();
        sample_files(&work, 4);
        json(&checkpoint(&t, &work, "0/10"));
        let m = Manifest {
            tenant: T.parse::<TenantId>().unwrap(),
            timeline: TL.parse::<TimelineId>().unwrap(),
            lsn: Lsn(0x20),
            prev_lsn: Some(Lsn(0x10)),
            metadata: layercas::format::metadata::TimelineMetadata::at(Lsn(0x20)),
            added: vec![FileEntry {
                name: bad.into(),
                size: 0,
                hash: FileHash(*blake3::hash(b"").as_bytes()),
                chunks: vec![],
            }],
            removed: vec![],
            base: false,
            dropped_from: None,
        };
        t.write(&format!("manifests/{T}/{TL}/0000000000000020"), &m.encode());
        let (ok, v) = verify(&t);
        assert!(
            !ok && error_messages(&v).iter().any(|e| e.contains(bad)),
            "{v}"
        );
        let r = restore(&t, &out.join("t"), None);
        assert!(!r.status.success());
        assert!(String::from_utf8_lossy(&r.stderr).contains(bad));
        assert!(!landing.exists(), "restore wrote {}", landing.display());
        // Nothing at all was written beside the target, whatever the name resolved to.
        let beside: Vec<_> = std::fs::read_dir(&out)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .filter(|n| n != "t")
            .collect();
        assert!(beside.is_empty(), "{beside:?}");
    }
}

/// SIGKILL of `casctl checkpoint` at many points: afterwards `verify --read-data` finds no error,
/// and a checkpoint whose manifest exists restores byte-identically (so no manifest exists for an
/// incomplete checkpoint). On local fs.
#[test]
fn killed_checkpoints_leave_a_consistent_store() {
    let (_s, store) = tempdir();
    let (_p, probe) = tempdir();
    killed_checkpoints(&Target::local(&store), &Target::local(&probe));
}

/// The same on the real S3 server.
#[test]
fn killed_checkpoints_leave_a_consistent_store_on_s3() {
    killed_checkpoints(&Target::s3(), &Target::s3());
}

fn killed_checkpoints(t: &Target, probe: &Target) {
    let (_w, work) = tempdir();
    // Time one full run to spread the kills over it.
    let mut files = sample_files(&work, 5);
    let started = Instant::now();
    json(&checkpoint(probe, &work, "0/1"));
    let full = started.elapsed();
    json(&run(t.casctl().args(["--json", "init"])));
    let kills = 16;
    let mut completed = 0;
    for i in 0..kills {
        // New content each round, so every run has real work to do.
        files.insert(format!("round_{i}"), noise(3 << 20, 1000 + i as u64));
        write_files(&work, &files);
        let lsn = format!("1/{:X}", i + 1);
        let mut child = t
            .casctl()
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

        let (ok, v) = verify(t);
        assert!(ok, "after kill {i}: {:?}", error_messages(&v));
        if t.exists(&format!(
            "manifests/{T}/{TL}/{:016X}",
            (1u64 << 32) + i as u64 + 1
        )) {
            let (_o, out) = tempdir();
            json(&restore(t, &out, Some(&lsn)));
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
        Target::local(&store)
            .casctl()
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
    eprintln!("checkpoint of a 2 GiB file: peak RSS {} MiB", rss >> 20);
    assert!(
        rss < 256 << 20,
        "checkpoint peak RSS {} MiB for a 2 GiB file",
        rss >> 20
    );
    let (_o, out) = tempdir();
    let (status, rss) = run_measured(
        Target::local(&store)
            .casctl()
            .args(["restore", "--tenant", T, "--timeline", TL, "--to"])
            .arg(&out),
    );
    assert!(status, "restore failed");
    eprintln!("restore of a 2 GiB file: peak RSS {} MiB", rss >> 20);
    assert!(
        rss < 256 << 20,
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

fn flip(b: &[u8], at: usize) -> Vec<u8> {
    let mut v = b.to_vec();
    v[at] ^= 1;
    v
}
