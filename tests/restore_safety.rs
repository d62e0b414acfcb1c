//! Restores that cannot be silently wrong, driven through casctl as a user runs it: a gap in a
//! timeline's manifest chain fails restore and verify; planted symlinks never lead a restore
//! outside its destination; a non-empty destination is refused unless `--overwrite`, which gives
//! exactly the requested state, even after an interrupted restore.
#[path = "common/casctl_json.rs"]
mod casctl_json;
mod common;

use std::path::Path;

use casctl_json::*;
use common::target::Target;
use common::*;

/// Writes layer `i` into `work` (distinct content per layer).
fn add_layer(work: &Path, i: u64) {
    std::fs::write(
        work.join(format!("layer_{i}")),
        noise(60_000 + i as usize, i),
    )
    .unwrap();
}

fn manifest_key(lsn: u64) -> String {
    format!("manifests/{T}/{TL}/{lsn:016X}")
}

/// A deleted middle or first delta manifest: restore fails naming the missing LSN, and verify
/// reports it as an error and exits 1.
#[test]
fn a_gap_in_the_manifest_chain_fails_restore_and_verify() {
    let (_s, store) = tempdir();
    let t = Target::local(&store);
    let (_w, work) = tempdir();
    for (i, lsn) in [(0, "0/10"), (1, "0/20"), (2, "0/30")] {
        add_layer(&work, i);
        json(&checkpoint(&t, &work, lsn));
    }
    assert!(verify(&t).0);
    for (missing, text) in [(0x20, "0/20"), (0x10, "0/10")] {
        let key = manifest_key(missing);
        let saved = t.read(&key);
        std::fs::remove_file(store.join(&key)).unwrap();

        let (_o, out) = tempdir();
        let r = restore(&t, &out, None);
        assert_eq!(r.status.code(), Some(3), "restore must fail");
        let stderr = String::from_utf8_lossy(&r.stderr);
        assert!(stderr.contains(text), "{stderr}");
        assert!(read_tree(&out).is_empty(), "nothing restored");

        let out = run(t.casctl().args(["--json", "verify"]));
        assert_eq!(out.status.code(), Some(1), "verify exits 1");
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let errors = error_messages(&v);
        assert!(
            errors.iter().any(|e| e.contains(&format!("LSN {text}"))),
            "{errors:?}"
        );
        t.write(&key, &saved);
        assert!(verify(&t).0);
    }
}
