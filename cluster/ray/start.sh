#!/usr/bin/env bash
# Start a local, single-node Ray head on this machine, bound to 127.0.0.1 only.
#
#   cluster/ray/start.sh [--num-cpus N] [--port P] [--dashboard] [--temp-dir D] [--timeout S] [--dry-run]
#   export RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0    # in every client (see below)
#   python -c 'import ray; ray.init(address="127.0.0.1:6379")'
#   cluster/ray/stop.sh [--port P] [--temp-dir D]      # stops this head only
#
# Prints the cluster address (127.0.0.1:P) on stdout and nothing else; progress and
# errors go to stderr. Idempotent: if a Ray head already answers on 127.0.0.1:P it
# says so and exits 0 (whatever --num-cpus it was started with). Exits non-zero with
# the reason (ray start output, tail of the Ray logs) when the head cannot start.
#
# Defaults: N=4 (over-subscribing a 2-core machine is fine for tests that run several
# workers), P=6379, no dashboard. --dashboard starts it on 127.0.0.1:8265
# (DETLAUNCH_RAY_DASHBOARD_PORT), which is also what the Ray job-submission API needs.
# --temp-dir D is Ray's root temp dir (default /tmp/ray); keep it short, Ray puts unix
# sockets under D/session_*/sockets/ and those paths must stay below 108 bytes.
#
# Loopback: `ray start --node-ip-address=127.0.0.1` alone is NOT enough on Linux; Ray
# (services.resolve_ip_for_localhost) silently rewrites 127.0.0.1/localhost to the
# machine's routable IP, so GCS/raylet listen on all interfaces and Ray Train sets
# MASTER_ADDR to that IP. RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 switches Ray to its
# single-node mode (what it does on macOS/Windows): the node IP stays 127.0.0.1, every
# Ray socket binds 127.0.0.1, and workers inherit the variable from the raylet. Clients
# (ray.init, `ray status --address`, drivers) need the same variable in their
# environment BEFORE `import ray`, otherwise they rewrite "127.0.0.1:P" to
# "<routable ip>:P", where nothing listens: `ray status` fails after ~40 s and
# ray.init() hangs for up to ~10 min (20 retries x 30 s).
# Consequence: this head cannot accept other nodes (use cluster.yaml for that).
#
# Ports: GCS on P; Ray Client server (ray://127.0.0.1:10001) on DETLAUNCH_RAY_CLIENT_PORT;
# the rest are picked free by Ray. Worker ports come from launcher/resources/ports.py (`python3 -m
# launcher.resources.ports ray-workers`: 10002-15999, clear of the Slurm backend's MASTER_PORT range
# 20000-31999, of the local Slurm cluster's daemons 16306-17002 and of Linux's ephemeral ports);
# DETLAUNCH_RAY_MIN_WORKER_PORT / DETLAUNCH_RAY_MAX_WORKER_PORT override them.
# --dry-run prints the `ray start` command line on stdout and starts nothing.
#
# No dashboard means no HTTP server: the job-submission API, the state API (`ray list
# actors`, ray.util.state) and the Ray Train dashboard are unavailable, and Ray Train V2's
# detached PlacementGroupCleaner actor cannot tell that a run's controller died, so a
# driver killed with SIGTERM/SIGKILL leaves one idle PlacementGroupCleaner process
# behind (0 CPU; SIGINT = graceful abort leaves nothing). --dashboard needs
# `pip install 'ray[default]'` (aiohttp, ...; the project's `ray` extra brings it).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=common.sh
source "$HERE/common.sh"
NUM_CPUS=4
PORT=6379
DASHBOARD=0
TEMP_DIR=""
TIMEOUT=120
DRY_RUN=0
DASHBOARD_PORT="${DETLAUNCH_RAY_DASHBOARD_PORT:-8265}"
REPO="$(cd "$HERE/../.." && pwd)"
RAY_PORTS="$(PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}" "${PYTHON:-python3}" -m launcher.resources.ports ray-workers)" \
    || { echo "start.sh: cannot read the Ray worker ports from $REPO/launcher/ports.py" >&2; exit 1; }
read -r RAY_MIN_PORT RAY_MAX_PORT <<<"$RAY_PORTS"
MIN_WORKER_PORT="${DETLAUNCH_RAY_MIN_WORKER_PORT:-$RAY_MIN_PORT}"
MAX_WORKER_PORT="${DETLAUNCH_RAY_MAX_WORKER_PORT:-$RAY_MAX_PORT}"
CLIENT_PORT="${DETLAUNCH_RAY_CLIENT_PORT:-10001}"

usage() { sed -n '2,/^set -euo/p' "$0" | grep '^#' | sed 's/^# \{0,1\}//'; }
while [[ $# -gt 0 ]]; do
    case "$1" in
        --num-cpus) NUM_CPUS="${2:?--num-cpus needs a value}"; shift 2 ;;
        --num-cpus=*) NUM_CPUS="${1#*=}"; shift ;;
        --port) PORT="${2:?--port needs a value}"; shift 2 ;;
        --port=*) PORT="${1#*=}"; shift ;;
        --temp-dir) TEMP_DIR="${2:?--temp-dir needs a value}"; shift 2 ;;
        --temp-dir=*) TEMP_DIR="${1#*=}"; shift ;;
        --timeout) TIMEOUT="${2:?--timeout needs a value}"; shift 2 ;;
        --timeout=*) TIMEOUT="${1#*=}"; shift ;;
        --dashboard) DASHBOARD=1; shift ;;
        --dry-run) DRY_RUN=1; shift ;;
        -h|--help) usage; exit 0 ;;
        *) echo "start.sh: unknown argument: $1" >&2; usage >&2; exit 2 ;;
    esac
done

log() { echo "[ray/start] $*" >&2; }
TEMP_ROOT="${TEMP_DIR:-/tmp/ray}"
show_logs() {
    local d="$TEMP_ROOT/session_latest/logs" f
    [[ -d "$d" ]] || return 0
    for f in "$d"/gcs_server.err "$d"/gcs_server.out "$d"/raylet.err "$d"/raylet.out \
             "$d"/monitor.err "$d"/dashboard.err "$d"/dashboard.log; do
        [[ -s "$f" ]] || continue
        echo "----- tail -n 30 $f -----" >&2
        tail -n 30 "$f" >&2 || true
    done
}
die() {
    echo "[ray/start] ERROR: $*" >&2
    exit 1
}
# cleanup_partial: a failed `ray start` can leave its gcs_server / client server behind
# (they would then squat on the port). Kill only the processes of the head this run tried to
# start (their command line names its address, GCS port or the session this run created).
SESSION_BEFORE=""
cleanup_partial() {
    local session="" dir=""
    if [[ -L "$TEMP_ROOT/session_latest" ]]; then
        session="$(basename "$(readlink "$TEMP_ROOT/session_latest")")"
        [[ "$session" != "$SESSION_BEFORE" ]] && dir="$TEMP_ROOT/$session"
    fi
    local -a pids=()
    mapfile -t pids < <(head_pids "$ADDR" "$PORT" "$dir")
    (( ${#pids[@]} )) || return 0
    log "cleaning up processes left by the failed start: ${pids[*]}"
    stop_pids "${pids[@]}"
}

# ---------------------------------------------------------------- checks
[[ "$NUM_CPUS" =~ ^[1-9][0-9]*$ ]] || { echo "start.sh: --num-cpus must be a positive integer (got '$NUM_CPUS')" >&2; exit 2; }
{ [[ "$PORT" =~ ^[1-9][0-9]*$ ]] && (( PORT < 65536 )); } || { echo "start.sh: --port must be a TCP port (got '$PORT')" >&2; exit 2; }
[[ "$TIMEOUT" =~ ^[1-9][0-9]*$ ]] || { echo "start.sh: --timeout must be a positive integer (got '$TIMEOUT')" >&2; exit 2; }
[[ $DRY_RUN -eq 1 ]] || command -v ray >/dev/null 2>&1 || die "'ray' not found on PATH (pip install -e '.[ray]' from the checkout, or pip install 'detlaunch[ray]')"
if [[ -n "$TEMP_DIR" && $DRY_RUN -eq 0 ]]; then
    mkdir -p "$TEMP_DIR" || die "cannot create --temp-dir $TEMP_DIR"
    TEMP_DIR="$(cd "$TEMP_DIR" && pwd -P)"
    TEMP_ROOT="$TEMP_DIR"
    # session_YYYY-MM-DD_HH-MM-SS_ffffff_PID/sockets/plasma_store -> ~70 bytes after D
    (( ${#TEMP_DIR} <= 35 )) || die "--temp-dir '$TEMP_DIR' is too long (${#TEMP_DIR} > 35 chars): Ray's unix socket paths under it would exceed 107 bytes"
fi

export RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0   # keep node IP / all Ray sockets on 127.0.0.1
export RAY_USAGE_STATS_ENABLED=0
# bound each GCS connection attempt of the `ray status` probes below (default 30 s)
STATUS_ENV=(env RAY_py_gcs_connect_timeout_s=5)
ADDR="127.0.0.1:$PORT"

# `launcher submit --backend ray --address auto` trusts Ray's address file (TEMP_ROOT/ray_current_cluster)
# only in a folder no one else can write, or one with the sticky bit: Ray makes its temp folder
# world-writable (0777), so without the bit any user could replace the file and send the next job to
# their own cluster. The bit keeps the folder shared between users, as Ray intends.
guard_temp_root() {
    if [[ -d "$TEMP_ROOT" && ! -L "$TEMP_ROOT" && -O "$TEMP_ROOT" ]]; then
        chmod +t "$TEMP_ROOT" || log "WARNING: cannot set the sticky bit on $TEMP_ROOT; --address auto will refuse it"
    fi
}
port_open() { timeout 2 bash -c "exec 3<>/dev/tcp/127.0.0.1/$1" 2>/dev/null; }
ray_ok() { timeout 20 "${STATUS_ENV[@]}" ray status --address "$ADDR" >/dev/null 2>&1; }
# wait_ray SECONDS: poll `ray status` until it works
wait_ray() {
    local end=$(( $(date +%s) + $1 ))
    until ray_ok; do
        (( $(date +%s) < end )) || return 1
        sleep 0.5
    done
}

args=(start --head
      --num-cpus="$NUM_CPUS"
      --port="$PORT"
      --node-ip-address=127.0.0.1
      --disable-usage-stats
      --ray-client-server-port="$CLIENT_PORT"
      --min-worker-port="$MIN_WORKER_PORT" --max-worker-port="$MAX_WORKER_PORT")
if [[ $DASHBOARD -eq 1 ]]; then
    args+=(--include-dashboard=true --dashboard-host=127.0.0.1 --dashboard-port="$DASHBOARD_PORT")
else
    args+=(--include-dashboard=false)
fi
[[ -n "$TEMP_DIR" ]] && args+=(--temp-dir="$TEMP_DIR")
if [[ $DRY_RUN -eq 1 ]]; then
    echo "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 RAY_USAGE_STATS_ENABLED=0 ray ${args[*]@Q}"
    exit 0
fi

# ---------------------------------------------------------------- already running?
if port_open "$PORT"; then
    if wait_ray 15; then
        log "Ray head already running at $ADDR (not restarted; stop it with $HERE/stop.sh --port $PORT${TEMP_DIR:+ --temp-dir $TEMP_DIR})"
        guard_temp_root
        echo "$ADDR"
        exit 0
    fi
    die "127.0.0.1:$PORT is in use but no Ray head answers there: $(ss -ltnpH "sport = :$PORT" 2>/dev/null | awk '{print $NF}' | head -n1). Pick another --port or stop that process."
fi
if [[ $DASHBOARD -eq 1 ]] && port_open "$DASHBOARD_PORT"; then
    die "dashboard port 127.0.0.1:$DASHBOARD_PORT is already in use (another Ray head with --dashboard? stop it with $HERE/stop.sh --port ITS_PORT, or set DETLAUNCH_RAY_DASHBOARD_PORT)"
fi
if port_open "$CLIENT_PORT"; then
    log "WARNING: 127.0.0.1:$CLIENT_PORT is already in use (another Ray head?): this head's Ray Client server (ray://) will not work; set DETLAUNCH_RAY_CLIENT_PORT. Plain ray.init(address=\"$ADDR\") is not affected."
fi

# ---------------------------------------------------------------- start
log "ray ${args[*]}"
[[ -L "$TEMP_ROOT/session_latest" ]] && SESSION_BEFORE="$(basename "$(readlink "$TEMP_ROOT/session_latest")")"
out_file="$(mktemp -t ray-start.XXXXXX)"
trap 'rm -f "$out_file"' EXIT
if ! ray "${args[@]}" >"$out_file" 2>&1; then
    echo "----- ray start output -----" >&2
    cat "$out_file" >&2
    show_logs
    cleanup_partial
    if grep -q "Cannot include dashboard with missing packages" "$out_file"; then
        die "--dashboard needs the dashboard packages: pip install 'ray[default]==$(ray --version 2>/dev/null | grep -o '[0-9][0-9.]*' | head -n1)' (the Ray job-submission and state APIs need them too)"
    fi
    die "'ray start' failed (output above)"
fi
if grep -q "Local node IP: " "$out_file" && ! grep -q "Local node IP: 127.0.0.1" "$out_file"; then
    cat "$out_file" >&2
    cleanup_partial
    die "Ray chose a non-loopback node IP ($(grep -o 'Local node IP: [^ ]*' "$out_file")); refusing to run"
fi

if ! wait_ray "$TIMEOUT"; then
    echo "----- ray start output -----" >&2
    cat "$out_file" >&2
    show_logs
    cleanup_partial
    die "Ray head started but 'ray status --address $ADDR' did not answer within ${TIMEOUT}s"
fi
if [[ $DASHBOARD -eq 1 ]]; then
    end=$(( $(date +%s) + TIMEOUT ))
    until port_open "$DASHBOARD_PORT"; do
        if (( $(date +%s) >= end )); then show_logs; cleanup_partial; die "dashboard did not listen on 127.0.0.1:$DASHBOARD_PORT within ${TIMEOUT}s"; fi
        sleep 0.5
    done
    log "dashboard / job API: http://127.0.0.1:$DASHBOARD_PORT"
fi
guard_temp_root
log "Ray head running at $ADDR ($NUM_CPUS CPUs, logs under $TEMP_ROOT/session_latest/logs)"
log "clients need: export RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 (before 'import ray'); ray.init(address=\"$ADDR\")"
echo "$ADDR"
