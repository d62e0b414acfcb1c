//! How `tests/cli.rs` drives casctl: run a command, parse its `--json` output, and checkpoint,
//! restore and verify the one tenant/timeline those tests use.

use std::path::Path;
use std::process::{Command, Output};

use serde_json::Value;

use crate::common::target::Target;

pub const T: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
pub const TL: &str = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";

pub fn run(cmd: &mut Command) -> Output {
    cmd.output().expect("casctl runs")
}

pub fn json(out: &Output) -> Value {
    assert!(
        out.status.success(),
        "casctl failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("bad JSON ({e}): {}", String::from_utf8_lossy(&out.stdout)))
}

pub fn checkpoint(t: &Target, dir: &Path, lsn: &str) -> Output {
    run(t
        .casctl()
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

pub fn restore(t: &Target, to: &Path, lsn: Option<&str>) -> Output {
    let mut c = t.casctl();
    c.args(["--json", "restore", "--tenant", T, "--timeline", TL, "--to"])
        .arg(to);
    if let Some(l) = lsn {
        c.args(["--lsn", l]);
    }
    run(&mut c)
}

pub fn verify(t: &Target) -> (bool, Value) {
    let out = run(t.casctl().args(["--json", "verify", "--read-data"]));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|_| {
        panic!(
            "verify prints JSON; stderr: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.success(), v)
}

pub fn error_messages(v: &Value) -> Vec<String> {
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
