#!/usr/bin/env bash
# Runs every cargo-fuzz target for SECONDS each (default 30), seeded with the format-spec test
# vectors. A crash fails the script. Uses the stable toolchain: RUSTC_BOOTSTRAP=1 lets cargo-fuzz
# pass its nightly-only flags (sanitizers).
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-30}
export RUSTC_BOOTSTRAP=1
if ! cargo fuzz --version 2>/dev/null | grep -q '0.13.2'; then
  cargo install cargo-fuzz --version 0.13.2 --locked
fi

# Seed corpora from the hex test vectors.
seed() { # target vector...
  local dir="fuzz/corpus/$1"; shift
  mkdir -p "$dir"
  for v in "$@"; do
    python3 -c 'import sys,re; t=open(sys.argv[1]).read(); h="".join(re.sub(r"#.*","",l) for l in t.splitlines()); sys.stdout.buffer.write(bytes.fromhex("".join(h.split())))' \
      "format-spec/vectors/$v.hex" > "$dir/vector-$v"
  done
}
seed manifest_decode manifest config metadata
seed pack_table_decode pack
seed index_decode index
seed gc_objects_decode intent gc_state manifest_cache gc_seal
seed dict_decode dict pack_dict

for target in manifest_decode pack_table_decode index_decode gc_objects_decode dict_decode; do
  echo "fuzzing $target for ${seconds}s"
  cargo fuzz run "$target" "fuzz/corpus/$target" -- -max_total_time="$seconds" -rss_limit_mb=2048 -print_final_stats=1 2>&1 | tail -n 12
  test "${PIPESTATUS[0]}" -eq 0
done
