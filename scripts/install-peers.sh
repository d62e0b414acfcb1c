#!/usr/bin/env bash
# Installs what benches/peers.rs compares against and generates data with, from Debian packages:
# borgbackup (borg 1.2), restic, postgresql (initdb, pg_ctl, pgbench, psql). Installs only what is
# missing; needs root or passwordless sudo. Exits non-zero, saying what is missing, when it could
# not install everything.
set -euo pipefail
need=()
command -v borg >/dev/null 2>&1 || need+=(borgbackup)
command -v restic >/dev/null 2>&1 || need+=(restic)
if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || ! command -v pgbench >/dev/null 2>&1; then
    need+=(postgresql)
fi
if [ ${#need[@]} -eq 0 ]; then
    exit 0
fi
sudo=()
if [ "$(id -u)" -ne 0 ]; then
    if sudo -n true 2>/dev/null; then
        sudo=(sudo -n)
    else
        echo "install-peers: missing ${need[*]}; not root and no passwordless sudo" >&2
        exit 1
    fi
fi
export DEBIAN_FRONTEND=noninteractive
if ! "${sudo[@]}" apt-get install -y "${need[@]}"; then
    "${sudo[@]}" apt-get update
    "${sudo[@]}" apt-get install -y "${need[@]}"
fi
