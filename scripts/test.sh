#!/usr/bin/env bash
# Every test, exactly as CI runs them. Tests that need S3 start their own server on 127.0.0.1
# (scripts/s3-server.sh); with CI=true a missing server is a failure, never a skip.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo fmt --all -- --check
# Layout rules (file and function sizes).
bash scripts/check-layout.sh
# A test process that crashes (a signal, not a failed assertion) leaves a core file; its threads'
# backtraces are printed before the failure is reported (scripts/core-backtraces.sh).
ulimit -c unlimited 2> /dev/null || true
cargo test --locked --lib --bins --tests "$@" || {
    rc=$?
    bash scripts/core-backtraces.sh
    exit "$rc"
}
cargo test --locked --doc
# Examples must keep compiling (tests/pageserver.rs runs examples/pageserver.rs's code).
cargo build --locked --examples
# Benchmarks must keep compiling (they run with `cargo bench`).
cargo test --locked --benches --no-run
