#!/usr/bin/env bash
# Stop every Ray process of this user on this machine (`ray stop --force`). Idempotent:
# exits 0 when nothing runs. Also stops heads started without cluster/ray/start.sh.
#
#   cluster/ray/stop.sh
set -euo pipefail

case "${1:-}" in
    -h|--help) sed -n '2,/^set -euo/p' "$0" | grep '^#' | sed 's/^# \{0,1\}//'; exit 0 ;;
    "") ;;
    *) echo "stop.sh: unknown argument: $1" >&2; exit 2 ;;
esac
command -v ray >/dev/null 2>&1 || { echo "[ray/stop] 'ray' not found on PATH; nothing to stop" >&2; exit 0; }

export RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0
if ! out="$(ray stop --force 2>&1)"; then
    echo "$out" >&2
    echo "[ray/stop] ERROR: 'ray stop --force' failed" >&2
    exit 1
fi
if grep -q "Did not find any active Ray processes" <<<"$out"; then
    echo "[ray/stop] no Ray processes were running" >&2
else
    echo "[ray/stop] $(grep -o 'Stopped all [0-9]* Ray processes' <<<"$out" || echo 'Ray stopped')" >&2
fi
