#!/usr/bin/env bash
# Start a real, local Slurm cluster on this machine, without systemd:
# munged + MariaDB + slurmdbd (accounting, so `sacct` works) + slurmctld + 1 or 2 slurmd.
#
#   cluster/slurm/start.sh [--nodes 1|2] [--cpus N] [--dir DIR] [--fresh] [--keep-jobs] [--timeout S]
#   source DIR/env.sh          # exports SLURM_CONF (and DETLAUNCH_SLURM_DIR)
#   cluster/slurm/stop.sh [--dir DIR]
#
# Everything (configs, munge key and socket, MariaDB datadir, Slurm state, spool,
# pid and log files) lives under DIR (default ${DETLAUNCH_SLURM_DIR:-/tmp/detlaunch-slurm}),
# created 0755 and owned by the caller; a DIR that is a symlink, another user's, or writable by
# others is refused (see dir_check.sh).
# Needs root and the packages from cluster/slurm/install.sh.
#
# Nodes are named n1 (and n2), all on this machine (NodeAddr=127.0.0.1, one slurmd
# per node started as `slurmd -N nX`, ports 17001-17002). /etc/hosts gets a
# "127.0.0.1 n1 n2" line if those names do not resolve (torch rendezvous on
# MASTER_ADDR=n1 would hang otherwise). CPUs and memory are *declared* (with
# SlurmdParameters=config_overrides), so CPUs=4 per node on a 2-core machine is fine:
# tasks simply oversubscribe the real cores, nothing is pinned (task/none).
#
# Idempotent: if the cluster in DIR already runs with the same config, it only
# checks that the nodes are up. If the config differs (e.g. --nodes 2 while a 1-node
# cluster runs), it stops the old one first. Slurm state and the accounting database
# are kept across restarts (job ids keep increasing, so sacct never sees a job id
# twice); --fresh wipes DIR first. Jobs left in the queue by an unclean stop
# (stop.sh cancels them normally) are cancelled on (re)start unless --keep-jobs.
#
# Requeue note: after `scontrol requeue` (which is what submitit does on USR2 /
# preemption / timeout) Slurm sets the job's BeginTime to now + cred_expire (+1 s)
# before it becomes eligible again; by default cred_expire is 120 s, which looks
# like a ~2-2.5 min "hold" (squeue reason "BeginTime"). We lower cred_expire to 30 s
# (DETLAUNCH_SLURM_CRED_EXPIRE; AuthInfo below), and
#   scontrol update JobId=N StartTime=now
# makes a requeued job eligible immediately (tests use it).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
DIR="${DETLAUNCH_SLURM_DIR:-/tmp/detlaunch-slurm}"
NODES=1
CPUS=4
FRESH=0
KEEP_JOBS=0
TIMEOUT=60
CLUSTER=detlaunch
CTLD_PORT="${DETLAUNCH_SLURMCTLD_PORT:-16817}"
DBD_PORT="${DETLAUNCH_SLURMDBD_PORT:-16819}"
MYSQL_PORT="${DETLAUNCH_SLURM_MYSQL_PORT:-16306}"
SLURMD_PORT0="${DETLAUNCH_SLURMD_PORT:-17001}"
# seconds a requeued job waits before it is eligible again (Slurm default 120)
CRED_EXPIRE="${DETLAUNCH_SLURM_CRED_EXPIRE:-30}"

usage() { sed -n '2,/^set -euo/p' "$0" | grep '^#' | sed 's/^# \{0,1\}//'; }
while [[ $# -gt 0 ]]; do
    case "$1" in
        --nodes) NODES="$2"; shift 2 ;;
        --nodes=*) NODES="${1#*=}"; shift ;;
        --cpus) CPUS="$2"; shift 2 ;;
        --cpus=*) CPUS="${1#*=}"; shift ;;
        --dir) DIR="$2"; shift 2 ;;
        --dir=*) DIR="${1#*=}"; shift ;;
        --timeout) TIMEOUT="$2"; shift 2 ;;
        --timeout=*) TIMEOUT="${1#*=}"; shift ;;
        --fresh) FRESH=1; shift ;;
        --keep-jobs) KEEP_JOBS=1; shift ;;
        -h|--help) usage; exit 0 ;;
        *) echo "start.sh: unknown argument: $1" >&2; usage >&2; exit 2 ;;
    esac
done

T0=${EPOCHREALTIME/[.,]/}
elapsed() { local us=$(( ${EPOCHREALTIME/[.,]/} - T0 )); printf '%d.%d' $((us / 1000000)) $((us / 100000 % 10)); }
log() { echo "[slurm/start $(elapsed)s] $*" >&2; }
LOGS_SHOWN=0
show_logs() {
    [[ $LOGS_SHOWN -eq 0 ]] || return 0
    LOGS_SHOWN=1
    local f
    for f in "$DIR"/log/*.log "$DIR"/munge/munged.log "$DIR"/mysql/mysqld.err; do
        [[ -s "$f" ]] || continue
        echo "----- tail -n 40 $f -----" >&2
        tail -n 40 "$f" >&2 || true
    done
    if [[ -n "${SLURM_CONF:-}" ]] && pid_alive "$DIR/run/slurmctld.pid"; then
        echo "----- sinfo -N -l; sinfo -R -----" >&2
        timeout 10 sinfo -N -l >&2 2>&1 || true
        timeout 10 sinfo -R >&2 2>&1 || true
    fi
}
die() {
    echo "[slurm/start] ERROR: $*" >&2
    show_logs
    echo "[slurm/start] ERROR: $* (logs above; files under $DIR; stop with $HERE/stop.sh --dir $DIR)" >&2
    exit 1
}
# shellcheck disable=SC2154
trap 'rc=$?; if [[ $rc -ne 0 ]]; then echo "[slurm/start] FAILED (exit $rc)" >&2; show_logs; fi' EXIT

# wait_for SECONDS DESCRIPTION PID|PIDFILE|- CMD...: poll CMD every 0.2 s; fail fast
# when the daemon (pid, or the pid in PIDFILE) has exited
wait_for() {
    local secs=$1 what=$2 pid=$3; shift 3
    local start now p
    start=$(date +%s)
    until "$@" >/dev/null 2>&1; do
        now=$(date +%s)
        if [[ "$pid" =~ ^[0-9]+$ ]]; then
            kill -0 "$pid" 2>/dev/null || die "$what exited during startup"
        elif [[ "$pid" != - ]]; then
            if [[ -s "$pid" ]]; then
                p=$(cat "$pid" 2>/dev/null)
                kill -0 "$p" 2>/dev/null || die "$what (pid $p) exited during startup"
            elif (( now - start >= 15 )); then
                die "$what did not write its pid file $pid within 15s"
            fi
        fi
        if (( now - start >= secs )); then die "$what did not come up within ${secs}s"; fi
        sleep 0.2
    done
}
pid_alive() { [[ -s "$1" ]] && kill -0 "$(cat "$1" 2>/dev/null)" 2>/dev/null; }

# ---------------------------------------------------------------- checks
[[ "$NODES" =~ ^[12]$ ]] || { echo "start.sh: --nodes must be 1 or 2 (got '$NODES')" >&2; exit 2; }
[[ "$CPUS" =~ ^[1-9][0-9]*$ ]] || { echo "start.sh: --cpus must be a positive integer" >&2; exit 2; }
[[ $(id -u) -eq 0 ]] || { echo "start.sh: must run as root (daemons run as root/munge/mysql)" >&2; exit 1; }
for b in munged slurmctld slurmd slurmdbd sacctmgr sinfo scontrol mariadbd mariadb-install-db mariadb mariadb-admin runuser; do
    command -v "$b" >/dev/null 2>&1 || [[ -x /usr/sbin/$b ]] || {
        echo "start.sh: '$b' not found; run $HERE/install.sh first" >&2; exit 1; }
done
getent passwd munge >/dev/null || { echo "start.sh: no 'munge' user (munge package broken?)" >&2; exit 1; }
getent passwd mysql >/dev/null || { echo "start.sh: no 'mysql' user (mariadb-server package broken?)" >&2; exit 1; }
# shellcheck source=dir_check.sh
source "$HERE/dir_check.sh"
make_private_dir "$DIR"   # the caller's own, 0755; refused when someone else made it
DIR="$(cd "$DIR" && pwd -P)"
export SLURM_CONF="$DIR/etc/slurm.conf"
export DETLAUNCH_SLURM_DIR="$DIR"

HOST="$(hostname -s)"
NODELIST=n1; [[ $NODES -eq 2 ]] && NODELIST="n[1-2]"
NODENAMES=(); for ((i = 1; i <= NODES; i++)); do NODENAMES+=("n$i"); done
PORTS="$SLURMD_PORT0"; [[ $NODES -eq 2 ]] && PORTS="$SLURMD_PORT0-$((SLURMD_PORT0 + 1))"

mem_total_mb=$(awk '/^MemTotal:/ {print int($2/1024)}' /proc/meminfo)
REALMEM=$(( mem_total_mb * 8 / 10 / NODES )); (( REALMEM >= 512 )) || REALMEM=512
DEFMEM=$(( REALMEM / CPUS )); (( DEFMEM <= 1024 )) || DEFMEM=1024

# ---------------------------------------------------------------- config
gen_slurm_conf() {
cat <<EOF
# Generated by cluster/slurm/start.sh -- local test cluster, do not edit (regenerated).
ClusterName=$CLUSTER
SlurmctldHost=$HOST(127.0.0.1)
SlurmctldPort=$CTLD_PORT
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
# cred_expire also sets how long a requeued job waits before it is eligible again
# (BeginTime = requeue time + cred_expire + 1); default 120. To skip the wait:
#   scontrol update JobId=N StartTime=now
AuthInfo=socket=$DIR/munge/munge.socket,cred_expire=$CRED_EXPIRE
StateSaveLocation=$DIR/state/ctld
SlurmdSpoolDir=$DIR/spool/%n
SlurmctldPidFile=$DIR/run/slurmctld.pid
SlurmdPidFile=$DIR/run/slurmd-%n.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd-%n.log
SlurmctldDebug=info
SlurmdDebug=info
SlurmctldParameters=preempt_send_user_signal
# trust the CPUs/RealMemory declared below instead of the probed hardware
SlurmdParameters=config_overrides
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SwitchType=switch/none
MpiDefault=none
JobAcctGatherType=jobacct_gather/linux
JobAcctGatherFrequency=30
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=127.0.0.1
AccountingStoragePort=$DBD_PORT
# with slurmdbd this is the munge socket used for talking to slurmdbd (sacct, sacctmgr,
# slurmctld): AuthInfo=socket= alone is not used for those connections
AccountingStoragePass=$DIR/munge/munge.socket
JobCompType=jobcomp/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU_Memory
DefMemPerCPU=$DEFMEM
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=2,bf_interval=2,sched_min_interval=100000
JobRequeue=1
ReturnToService=2
# squeue/scontrol forget finished jobs after MinJobAge s; sacct keeps them (slurmdbd)
MinJobAge=120
# SIGTERM -> SIGKILL grace at cancel/timeout/requeue. submitit ignores SIGTERM, so non-zero
# ranks of a requeued job linger this long before the job is PENDING again.
KillWait=5
InactiveLimit=0
SlurmctldTimeout=30
SlurmdTimeout=30
MessageTimeout=10
NodeName=$NODELIST NodeHostname=$HOST NodeAddr=127.0.0.1 Port=$PORTS CPUs=$CPUS RealMemory=$REALMEM State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF
}

gen_slurmdbd_conf() {
cat <<EOF
# Generated by cluster/slurm/start.sh
DbdHost=localhost
DbdAddr=127.0.0.1
DbdPort=$DBD_PORT
SlurmUser=root
AuthType=auth/munge
AuthInfo=socket=$DIR/munge/munge.socket
PidFile=$DIR/run/slurmdbd.pid
LogFile=$DIR/log/slurmdbd.log
DebugLevel=info
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=$MYSQL_PORT
StorageUser=slurm
StoragePass=$DBPASS
StorageLoc=slurm_acct_db
EOF
}

all_running() {
    pid_alive "$DIR/munge/munged.pid" && pid_alive "$DIR/mysql/mysqld.pid" &&
    pid_alive "$DIR/run/slurmdbd.pid" && pid_alive "$DIR/run/slurmctld.pid" || return 1
    local n; for n in "${NODENAMES[@]}"; do pid_alive "$DIR/run/slurmd-$n.pid" || return 1; done
    # and no extra slurmd (e.g. n2 of a previous 2-node cluster)
    local f; for f in "$DIR"/run/slurmd-*.pid; do
        [[ -e "$f" ]] || continue
        n=$(basename "$f" .pid); n=${n#slurmd-}
        [[ " ${NODENAMES[*]} " == *" $n "* ]] || return 1
    done
}

if [[ $FRESH -eq 1 ]]; then
    log "--fresh: stopping and wiping $DIR"
    "$HERE/stop.sh" --dir "$DIR" --quiet
    find "$DIR" -mindepth 1 -delete
fi
mkdir -p "$DIR"/{etc,run,log,state/ctld,spool,mysql}
chmod 755 "$DIR"
for n in "${NODENAMES[@]}"; do mkdir -p "$DIR/spool/$n"; done
if [[ ! -s "$DIR/mysql/slurm.pass" ]]; then
    (umask 077; head -c 18 /dev/urandom | base64 | tr -dc 'A-Za-z0-9' > "$DIR/mysql/slurm.pass")
fi
DBPASS=$(cat "$DIR/mysql/slurm.pass")

new_conf=$(gen_slurm_conf)
if [[ -f "$SLURM_CONF" && "$(cat "$SLURM_CONF")" == "$new_conf" ]] && all_running; then
    log "cluster in $DIR already running ($NODES node(s)); checking nodes"
    ALREADY=1
else
    ALREADY=0
    if [[ -f "$SLURM_CONF" ]] || ls "$DIR"/run/*.pid "$DIR"/munge/*.pid "$DIR"/mysql/*.pid >/dev/null 2>&1; then
        log "(re)starting: stopping whatever runs from $DIR first"
        "$HERE/stop.sh" --dir "$DIR" --quiet
    fi
    printf '%s\n' "$new_conf" > "$SLURM_CONF"
    chmod 644 "$SLURM_CONF"
    (umask 077; gen_slurmdbd_conf > "$DIR/etc/slurmdbd.conf")
    chmod 600 "$DIR/etc/slurmdbd.conf"
fi

cat > "$DIR/env.sh" <<EOF
# source me: use the local Slurm cluster started by cluster/slurm/start.sh
export SLURM_CONF=$SLURM_CONF
export DETLAUNCH_SLURM_DIR=$DIR
EOF
chmod 644 "$DIR/env.sh"

# ---------------------------------------------------------------- /etc/hosts
# node names must resolve to this machine: torch rendezvous uses MASTER_ADDR=n1
for n in "${NODENAMES[@]}"; do
    if ! getent hosts "$n" >/dev/null 2>&1; then
        if [[ -w /etc/hosts ]] && { echo "127.0.0.1 $n  # detlaunch slurm" >> /etc/hosts; } 2>/dev/null; then
            log "added '127.0.0.1 $n' to /etc/hosts"
        else
            die "node name '$n' does not resolve and /etc/hosts is not writable; add '127.0.0.1 $n' to /etc/hosts"
        fi
    fi
    addr=$(getent hosts "$n" | awk '{print $1; exit}')
    [[ "$addr" == 127.* || "$addr" == "::1" ]] || \
        die "node name '$n' resolves to $addr, not to this machine; add '127.0.0.1 $n' at the top of /etc/hosts"
done

if [[ $ALREADY -eq 0 ]]; then
# ---------------------------------------------------------------- ports
port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
for p in "$MYSQL_PORT" "$DBD_PORT" "$CTLD_PORT" $(seq "$SLURMD_PORT0" $((SLURMD_PORT0 + NODES - 1))); do
    port_busy "$p" && die "port 127.0.0.1:$p is already in use (another cluster from a different --dir? \
stop it, or set DETLAUNCH_SLURM_MYSQL_PORT / DETLAUNCH_SLURMDBD_PORT / DETLAUNCH_SLURMCTLD_PORT / DETLAUNCH_SLURMD_PORT)"
done

# ---------------------------------------------------------------- munge
log "starting munged"
mkdir -p "$DIR/munge"
# munged wants the socket dir world-executable, the key private to munge
chown munge:munge "$DIR/munge"; chmod 755 "$DIR/munge"
if [[ ! -s "$DIR/munge/munge.key" ]]; then
    if command -v mungekey >/dev/null 2>&1; then
        runuser -u munge -- mungekey -c -k "$DIR/munge/munge.key" || die "mungekey -c failed"
    else
        dd if=/dev/urandom of="$DIR/munge/munge.key" bs=1 count=1024 status=none
    fi
fi
chown munge:munge "$DIR/munge/munge.key"; chmod 400 "$DIR/munge/munge.key"
rm -f "$DIR/munge/munge.socket" "$DIR/munge/munge.socket.lock" "$DIR/munge/munged.pid"
runuser -u munge -- munged --key-file="$DIR/munge/munge.key" --socket="$DIR/munge/munge.socket" \
    --pid-file="$DIR/munge/munged.pid" --log-file="$DIR/munge/munged.log" \
    --seed-file="$DIR/munge/munged.seed" </dev/null >>"$DIR/log/munged.out" 2>&1 \
    || die "munged failed to start"
wait_for 15 "munged" "$DIR/munge/munged.pid" bash -c "munge -n -S '$DIR/munge/munge.socket' | unmunge -S '$DIR/munge/munge.socket'"

# ---------------------------------------------------------------- mariadb
log "starting mariadb (127.0.0.1:$MYSQL_PORT, datadir $DIR/mysql/data)"
M="$DIR/mysql"
mkdir -p "$M/data" "$M/tmp"
chown -R mysql:mysql "$M/data" "$M/tmp"
chown mysql:mysql "$M"; chmod 755 "$M"
chmod 600 "$M/slurm.pass"; chown root:root "$M/slurm.pass"
if [[ ! -d "$M/data/mysql" ]]; then
    mariadb-install-db --no-defaults --user=mysql --datadir="$M/data" --tmpdir="$M/tmp" \
        --auth-root-authentication-method=socket --skip-test-db \
        >"$DIR/log/mariadb-install-db.log" 2>&1 \
        || { cat "$DIR/log/mariadb-install-db.log" >&2; die "mariadb-install-db failed"; }
fi
MYSQL_SOCK="$M/mysqld.sock"
rm -f "$M/mysqld.pid"
setsid mariadbd --no-defaults --user=mysql --datadir="$M/data" --tmpdir="$M/tmp" \
    --socket="$MYSQL_SOCK" --pid-file="$M/mysqld.pid" --log-error="$M/mysqld.err" \
    --bind-address=127.0.0.1 --port="$MYSQL_PORT" --skip-name-resolve \
    --performance-schema=OFF --innodb-buffer-pool-size=128M --innodb-log-file-size=64M \
    --innodb-lock-wait-timeout=900 --innodb-flush-log-at-trx-commit=2 \
    --max-connections=64 </dev/null >>"$DIR/log/mariadbd.out" 2>&1 &
wait_for 60 "mariadb" $! mariadb-admin --no-defaults --socket="$MYSQL_SOCK" -uroot ping
mariadb --no-defaults --socket="$MYSQL_SOCK" -uroot <<EOF || die "creating the slurm MariaDB user failed"
CREATE DATABASE IF NOT EXISTS slurm_acct_db;
CREATE OR REPLACE USER 'slurm'@'127.0.0.1' IDENTIFIED BY '$DBPASS';
CREATE OR REPLACE USER 'slurm'@'localhost' IDENTIFIED BY '$DBPASS';
GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';
GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost';
FLUSH PRIVILEGES;
EOF

# ---------------------------------------------------------------- slurmdbd
log "starting slurmdbd (127.0.0.1:$DBD_PORT)"
rm -f "$DIR/run/slurmdbd.pid"
slurmdbd </dev/null >>"$DIR/log/slurmdbd.out" 2>&1 || die "slurmdbd failed to start"
# first start creates the schema (a few seconds)
wait_for 60 "slurmdbd" "$DIR/run/slurmdbd.pid" sacctmgr -n -P list cluster
if ! sacctmgr -n -P list cluster format=cluster | grep -qx "$CLUSTER"; then
    sacctmgr -i add cluster "$CLUSTER" >/dev/null || die "sacctmgr add cluster $CLUSTER failed"
fi
# an account for --account tests; root (and the sudo user) can use it
if ! sacctmgr -n -P list account format=account | grep -qx "$CLUSTER"; then
    sacctmgr -i add account "$CLUSTER" Cluster="$CLUSTER" Description="detlaunch tests" Organization=detlaunch >/dev/null \
        || die "sacctmgr add account failed"
fi
for u in root ${SUDO_USER:-}; do
    if ! sacctmgr -n -P list assoc user="$u" account="$CLUSTER" format=user | grep -qx "$u"; then
        sacctmgr -i add user "$u" Account="$CLUSTER" Cluster="$CLUSTER" >/dev/null || die "sacctmgr add user $u failed"
    fi
done

# ---------------------------------------------------------------- slurmctld
log "starting slurmctld (127.0.0.1:$CTLD_PORT)"
rm -f "$DIR/run/slurmctld.pid"
slurmctld -i </dev/null >>"$DIR/log/slurmctld.out" 2>&1 || die "slurmctld failed to start"
wait_for 30 "slurmctld" "$DIR/run/slurmctld.pid" bash -c "scontrol ping | grep -q 'is UP'"

# ---------------------------------------------------------------- slurmd
for n in "${NODENAMES[@]}"; do
    log "starting slurmd -N $n"
    rm -f "$DIR/run/slurmd-$n.pid"
    slurmd -N "$n" </dev/null >>"$DIR/log/slurmd-$n.out" 2>&1 || die "slurmd -N $n failed to start"
done
fi  # ALREADY

# ---------------------------------------------------------------- wait for nodes
log "waiting for node(s) $NODELIST to be idle (timeout ${TIMEOUT}s)"
end=$(( $(date +%s) + TIMEOUT ))
declare -A resumed=()
while true; do
    states=$(sinfo -h -N -p debug -o '%N %t' 2>/dev/null || true)
    ok=1
    for n in "${NODENAMES[@]}"; do
        st=$(awk -v n="$n" '$1 == n {print $2}' <<<"$states")
        case "$st" in
            idle|mix|alloc|comp) ;;
            drain|drng|down|fail)   # registered but marked down, e.g. after an unclean stop
                ok=0
                if [[ -z "${resumed[$n]:-}" ]]; then
                    resumed[$n]=1
                    log "node $n is $st ($(sinfo -h -N -n "$n" -o '%E')); resuming it"
                    scontrol update NodeName="$n" State=RESUME || true
                fi ;;
            *) ok=0 ;;
        esac
    done
    [[ $ok -eq 1 ]] && break
    for n in "${NODENAMES[@]}"; do
        f="$DIR/run/slurmd-$n.pid"
        if [[ -s "$f" ]] && ! kill -0 "$(cat "$f")" 2>/dev/null; then die "slurmd -N $n exited"; fi
    done
    if (( $(date +%s) >= end )); then
        die "node(s) not idle after ${TIMEOUT}s: $(tr '\n' ';' <<<"$states")"
    fi
    sleep 0.5
done
sacct -n -X -S now-1minutes >/dev/null 2>&1 || die "sacct does not work (slurmdbd/accounting)"
if [[ $ALREADY -eq 0 && $KEEP_JOBS -eq 0 ]]; then
    stale=$(squeue -h -o %A | sort -u)
    if [[ -n "$stale" ]]; then
        log "cancelling jobs left over from a previous run: $(echo $stale)"
        scancel $stale || true
    fi
fi
log "cluster up: $(sinfo -h -o '%P %a %D %t %N' | tr '\n' ' ')"
echo "[slurm/start] ready. Use it with:  source $DIR/env.sh" >&2
