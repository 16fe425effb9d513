#!/usr/bin/env bash
# Stop the Ray head that start.sh started on 127.0.0.1:P, and only that one: its GCS server,
# raylet, monitors and client server, and every process under them (the Ray workers). Other
# Ray heads on this machine keep running. Idempotent: exits 0 when that head is not running.
#
#   cluster/ray/stop.sh [--port P] [--temp-dir D] [--all]
#
# Give the same --port (default 6379) and --temp-dir as to start.sh. --all stops every Ray
# process of this user instead (`ray stop --force`), heads started without start.sh included.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=common.sh
source "$HERE/common.sh"
PORT=6379
TEMP_DIR=""
ALL=0
usage() { sed -n '2,/^set -euo/p' "$0" | grep '^#' | sed 's/^# \{0,1\}//'; }
while [[ $# -gt 0 ]]; do
    case "$1" in
        --port) PORT="${2:?--port needs a value}"; shift 2 ;;
        --port=*) PORT="${1#*=}"; shift ;;
        --temp-dir) TEMP_DIR="${2:?--temp-dir needs a value}"; shift 2 ;;
        --temp-dir=*) TEMP_DIR="${1#*=}"; shift ;;
        --all) ALL=1; shift ;;
        -h|--help) usage; exit 0 ;;
        *) echo "stop.sh: unknown argument: $1" >&2; usage >&2; exit 2 ;;
    esac
done
log() { echo "[ray/stop] $*" >&2; }

if [[ $ALL -eq 1 ]]; then
    command -v ray >/dev/null 2>&1 || { log "'ray' not found on PATH; nothing to stop"; exit 0; }
    export RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0
    if ! out="$(ray stop --force 2>&1)"; then
        echo "$out" >&2
        log "ERROR: 'ray stop --force' failed"
        exit 1
    fi
    if grep -q "Did not find any active Ray processes" <<<"$out"; then
        log "no Ray processes were running"
    else
        log "$(grep -o 'Stopped all [0-9]* Ray processes' <<<"$out" || echo 'Ray stopped')"
    fi
    exit 0
fi

{ [[ "$PORT" =~ ^[1-9][0-9]*$ ]] && (( PORT < 65536 )); } || { echo "stop.sh: --port must be a TCP port (got '$PORT')" >&2; exit 2; }
[[ -z "$TEMP_DIR" || ! -d "$TEMP_DIR" ]] || TEMP_DIR="$(cd "$TEMP_DIR" && pwd -P)"   # as start.sh resolves it
ADDR="127.0.0.1:$PORT"
mapfile -t pids < <(head_pids "$ADDR" "$PORT" "$TEMP_DIR")
if (( ${#pids[@]} == 0 )); then
    log "no Ray head at $ADDR is running (other heads: cluster/ray/stop.sh --port P, or --all)"
    exit 0
fi
stop_pids "${pids[@]}"
log "stopped the Ray head at $ADDR (${#pids[@]} processes)"
