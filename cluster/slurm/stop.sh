#!/usr/bin/env bash
# Stop the local Slurm cluster started by cluster/slurm/start.sh.
#
#   cluster/slurm/stop.sh [--dir DIR] [--quiet]
#
# Cancels the jobs still in the queue, then stops slurmd(s), slurmctld, slurmdbd,
# MariaDB and munged -- only the daemons started from DIR (matched by pid file and
# process name, or by DIR in their command line / SLURM_CONF in their environment),
# never a system-wide instance. Leftover job steps (slurmstepd and their tasks)
# are killed too. Idempotent: nothing running is not an error. Keeps DIR (state,
# accounting database, logs); `rm -rf DIR` afterwards, or `start.sh --fresh`, to reset.
set -uo pipefail

DIR="${DETLAUNCH_SLURM_DIR:-/tmp/detlaunch-slurm}"
QUIET=0
while [[ $# -gt 0 ]]; do
    case "$1" in
        --dir) DIR="$2"; shift 2 ;;
        --dir=*) DIR="${1#*=}"; shift ;;
        --quiet|-q) QUIET=1; shift ;;
        -h|--help) sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "stop.sh: unknown argument: $1" >&2; exit 2 ;;
    esac
done
T0=${EPOCHREALTIME/[.,]/}
elapsed() { local us=$(( ${EPOCHREALTIME/[.,]/} - T0 )); printf '%d.%d' $((us / 1000000)) $((us / 100000 % 10)); }
log() { [[ $QUIET -eq 1 ]] || echo "[slurm/stop $(elapsed)s] $*" >&2; }

if [[ ! -e "$DIR" && ! -L "$DIR" ]]; then
    log "nothing to stop ($DIR does not exist)"
    exit 0
fi
# shellcheck source=dir_check.sh
source "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/dir_check.sh"
why=$(dir_problem "$DIR")
if [[ -n "$why" ]]; then  # its pid files would choose which root processes get killed
    echo "stop.sh: refusing cluster folder $DIR: it $why" >&2
    exit 1
fi
DIR="$(cd "$DIR" && pwd -P)"
CONF="$DIR/etc/slurm.conf"
export SLURM_CONF="$CONF"
FAILED=0

# is_ours PID COMM: process PID is COMM and belongs to this DIR
is_ours() {
    local pid=$1 comm=$2 c
    [[ -r /proc/$pid/comm ]] || return 1
    c=$(cat "/proc/$pid/comm" 2>/dev/null) || return 1
    [[ "$c" == "$comm" ]] || return 1
    tr '\0' '\n' 2>/dev/null <"/proc/$pid/cmdline" | grep -qF -- "$DIR/" && return 0
    tr '\0' '\n' 2>/dev/null <"/proc/$pid/environ" | grep -qxF -- "SLURM_CONF=$CONF" && return 0
    return 1
}

# pids_of COMM [PIDFILE...]: our processes named COMM
pids_of() {
    local comm=$1; shift
    local f pid out=()
    for f in "$@"; do
        [[ -s "$f" ]] || continue
        pid=$(cat "$f" 2>/dev/null)
        [[ "$pid" =~ ^[0-9]+$ ]] || continue
        c=$(cat "/proc/$pid/comm" 2>/dev/null) || continue
        [[ "$c" == "$comm" ]] && out+=("$pid")
    done
    for pid in $(pgrep -x "$comm" 2>/dev/null); do
        is_ours "$pid" "$comm" && out+=("$pid")
    done
    [[ ${#out[@]} -gt 0 ]] && printf '%s\n' "${out[@]}" | sort -un
}

# descendants PID: all child processes, recursively
descendants() {
    local kid
    for kid in $(pgrep -P "$1" 2>/dev/null); do
        echo "$kid"
        descendants "$kid"
    done
}

# stop_pids TIMEOUT PID...: SIGTERM, wait up to TIMEOUT s, then SIGKILL
stop_pids() {
    local secs=$1; shift
    local pids="$*" pid i alive
    [[ -n "${pids// /}" ]] || return 0
    kill -TERM $pids 2>/dev/null
    for ((i = 0; i < secs * 10; i++)); do
        alive=0
        for pid in $pids; do kill -0 "$pid" 2>/dev/null && alive=1; done
        [[ $alive -eq 0 ]] && return 0
        sleep 0.1
    done
    for pid in $pids; do
        if kill -0 "$pid" 2>/dev/null; then
            log "$(cat /proc/$pid/comm 2>/dev/null) (pid $pid) ignored SIGTERM for ${secs}s; sending SIGKILL"
            kill -KILL "$pid" 2>/dev/null
            sleep 0.2
            if kill -0 "$pid" 2>/dev/null; then
                echo "[slurm/stop] ERROR: could not stop $(cat /proc/$pid/comm 2>/dev/null) (pid $pid)" >&2
                FAILED=1
            fi
        fi
    done
}

# stop TIMEOUT COMM[:PIDFILE...] ...: stop these daemons together (in parallel)
stop() {
    local secs=$1; shift
    local spec comm files pids="" names=()
    for spec in "$@"; do
        comm=${spec%%:*}; files=${spec#*:}; [[ "$spec" == *:* ]] || files=""
        local p; p=$(pids_of "$comm" $files)
        [[ -n "$p" ]] && { pids+=" $p"; names+=("$comm ($(echo $p))"); }
    done
    if [[ -n "$pids" ]]; then
        log "stopping ${names[*]}"
        stop_pids "$secs" $pids
    fi
    for spec in "$@"; do [[ "$spec" == *:* ]] && rm -f ${spec#*:}; done
    return 0
}

# 1. cancel queued/running jobs so that the steps end cleanly (and get accounted)
if [[ -f "$CONF" ]] && [[ -n "$(pids_of slurmctld "$DIR/run/slurmctld.pid")" ]] \
        && timeout 5 scontrol ping 2>/dev/null | grep -q 'is UP'; then
    jobs=$(timeout 10 squeue -h -o %A 2>/dev/null | sort -u)
    if [[ -n "$jobs" ]]; then
        log "cancelling jobs: $(echo $jobs)"
        timeout 10 scancel $jobs 2>/dev/null
        for ((i = 0; i < 50; i++)); do
            [[ -z "$(timeout 5 squeue -h -t R,CG,S -o %A 2>/dev/null)" ]] && break
            sleep 0.2
        done
    fi
fi

# 2. daemons, in dependency order
stop 15 "slurmd:$(echo "$DIR"/run/slurmd-*.pid)"
# job steps outlive slurmd: kill leftover slurmstepd of this cluster and their tasks
for pid in $(pids_of slurmstepd); do
    kids=$(descendants "$pid")
    log "killing leftover slurmstepd $pid and its tasks ($(echo $kids))"
    kill -KILL $kids "$pid" 2>/dev/null
done
# slurmctld keeps unsent accounting records in its state dir (dbd.messages) and sends
# them on its next start, so it can stop in parallel with slurmdbd
stop 15 "slurmctld:$DIR/run/slurmctld.pid" "slurmdbd:$DIR/run/slurmdbd.pid"
stop 30 "mariadbd:$DIR/mysql/mysqld.pid" "munged:$DIR/munge/munged.pid"
rm -f "$DIR/munge/munge.socket" "$DIR/munge/munge.socket.lock" "$DIR/mysql/mysqld.sock"

if [[ $FAILED -ne 0 ]]; then
    echo "[slurm/stop] ERROR: some daemons of $DIR are still running" >&2
    exit 1
fi
log "stopped (state and logs kept in $DIR)"
