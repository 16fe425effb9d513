#!/usr/bin/env bash
# Install the packages for the local test Slurm cluster (Debian/Ubuntu, needs root).
#
#   cluster/slurm/install.sh
#
# Idempotent: does nothing when everything is already installed; runs
# `apt-get update` only when the package lists are missing or stale for these
# packages. Daemons are NOT started by the package scripts (a temporary
# policy-rc.d denies it); cluster/slurm/start.sh starts them with its own config.
set -euo pipefail

PKGS=(slurm-wlm slurmdbd munge mariadb-server)
# binaries start.sh needs; if all are present we are done
BINS=(slurmctld slurmd slurmdbd sinfo sacct sacctmgr scontrol sbatch munged mungekey mariadbd mariadb-install-db mariadb)

log() { echo "[slurm/install] $*" >&2; }
die() { echo "[slurm/install] ERROR: $*" >&2; exit 1; }

missing_pkgs() {
    local p st
    for p in "${PKGS[@]}"; do
        st=$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)
        [[ "$st" == "install ok installed" ]] || echo "$p"
    done
}

missing_bins() {
    local b
    for b in "${BINS[@]}"; do
        command -v "$b" >/dev/null 2>&1 || [[ -x "/usr/sbin/$b" ]] || echo "$b"
    done
}

t0=$(date +%s)
todo=$(missing_pkgs)
if [[ -z "$todo" && -z "$(missing_bins)" ]]; then
    log "already installed: ${PKGS[*]} (slurm $(dpkg-query -W -f='${Version}' slurm-wlm))"
    exit 0
fi
[[ $(id -u) -eq 0 ]] || die "must run as root (apt-get install ${todo//$'\n'/ })"
command -v apt-get >/dev/null || die "apt-get not found: only Debian/Ubuntu are supported"

export DEBIAN_FRONTEND=noninteractive

# update the package lists only when some package has no install candidate
need_update=0
for p in $todo; do
    cand=$(apt-cache policy "$p" 2>/dev/null | awk '/Candidate:/ {print $2}')
    if [[ -z "$cand" || "$cand" == "(none)" ]]; then need_update=1; fi
done
if [[ $need_update -eq 1 ]]; then
    log "apt-get update"
    apt-get update -q || die "apt-get update failed"
fi

# Keep the packages' init scripts from starting daemons with the system config
# (no systemd here; invoke-rc.d would try /etc/init.d/* and may fail or leave
# stray daemons). Only add policy-rc.d if none exists, and always remove ours.
POLICY=/usr/sbin/policy-rc.d
own_policy=0
if [[ ! -e $POLICY ]]; then
    printf '#!/bin/sh\nexit 101\n' > "$POLICY" && chmod +x "$POLICY" && own_policy=1
fi
cleanup() { if [[ $own_policy -eq 1 ]]; then rm -f "$POLICY"; fi; }
trap cleanup EXIT

install_pkgs() {
    apt-get install -y -q --no-install-recommends "${PKGS[@]}"
}
log "apt-get install ${PKGS[*]}"
if ! install_pkgs; then
    if [[ $need_update -eq 0 ]]; then
        # stale lists (e.g. 404 on a superseded .deb): refresh once and retry
        log "install failed; retrying after apt-get update"
        apt-get update -q || die "apt-get update failed"
        install_pkgs || die "apt-get install ${PKGS[*]} failed"
    else
        die "apt-get install ${PKGS[*]} failed"
    fi
fi

mb=$(missing_bins)
[[ -z "$mb" ]] || die "installed, but these binaries are still missing: $mb"
log "installed slurm $(dpkg-query -W -f='${Version}' slurm-wlm) in $(( $(date +%s) - t0 )) s"
