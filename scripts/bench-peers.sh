#!/usr/bin/env bash
# casctl beside borg and restic on the same data (benches/peers.rs): installs the peers and
# PostgreSQL when missing, then runs the benchmark with the release build. Settings are the
# LAYERCAS_PEERS_* variables documented at the top of benches/peers.rs; arguments are passed on
# (`--json PATH` writes the results as JSON).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-peers.sh || echo "bench-peers: install-peers.sh failed; the bench says what it skips" >&2
exec cargo bench --locked --bench peers -- "$@"
