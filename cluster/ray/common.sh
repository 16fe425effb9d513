# Sourced by start.sh and stop.sh: find the processes of one local Ray head.

# head_pids ADDR PORT [DIR]: the pids of the Ray head whose GCS listens on ADDR (127.0.0.1:PORT),
# and of every process under them, one per line. The head's own processes (GCS server,
# raylet, monitors, Ray Client server) name its address or GCS port on their command line, or
# DIR (its --temp-dir or session directory) when one is given; Ray workers are found as their
# descendants, since they rename themselves (ray::...). Other heads on the machine do not match.
# Reads /proc, so it needs neither ps nor psutil.
head_pids() {
    local addr="$1" port="$2" dir="${3:-}" proc pid ppid stat args
    local -a roots=() queue=()
    local -A kids=() seen=()
    for proc in /proc/[0-9]*; do
        pid="${proc#/proc/}"
        { read -r stat <"$proc/stat"; } 2>/dev/null || continue   # not $(<...): fatal under set -e when the process is gone
        read -r _ ppid _ <<<"${stat##*) }"   # the fields after "(comm) ": state, ppid, ...
        kids[$ppid]+=" $pid"
        [[ "$pid" == "$$" ]] && continue
        args="$( { tr '\0' ' ' <"$proc/cmdline"; } 2>/dev/null)" || continue
        [[ "$args" == *ray* && "$args" != *cluster/ray/* ]] || continue   # not Ray, or these scripts
        if [[ " $args" == *" --address=$addr "* || " $args" == *" --gcs-address=$addr "* ||
              " $args" == *" --gcs_server_port=$port "* ]] ||
           { [[ -n "$dir" ]] && [[ "$args" == *"$dir/"* || "$args" == *"$dir "* ]]; }; then
            roots+=("$pid")
        fi
    done
    queue=("${roots[@]}")
    while (( ${#queue[@]} )); do
        pid="${queue[0]}"
        queue=("${queue[@]:1}")
        [[ -n "${seen[$pid]:-}" ]] && continue
        seen[$pid]=1
        echo "$pid"
        for proc in ${kids[$pid]:-}; do queue+=("$proc"); done
    done
}

# stop_pids PID...: SIGTERM, then SIGKILL whatever is still alive after 5 s.
stop_pids() {
    (( $# )) || return 0
    kill "$@" 2>/dev/null || true
    local end=$(( $(date +%s) + 5 )) pid stat
    local -a alive=()
    while :; do
        alive=()
        for pid in "$@"; do
            { read -r stat <"/proc/$pid/stat"; } 2>/dev/null || continue
            [[ "${stat##*) }" == Z* ]] || alive+=("$pid")   # a zombie has exited already
        done
        (( ${#alive[@]} )) || return 0
        (( $(date +%s) < end )) || break
        sleep 0.2
    done
    kill -9 "${alive[@]}" 2>/dev/null || true
}
