# shellcheck shell=bash
# Sourced by start.sh and stop.sh: the cluster folder must be this user's own.
#
# The cluster runs as root from DIR (default /tmp/detlaunch-slurm, in a folder every user can write),
# and users `source DIR/env.sh`. A DIR another user made first (or a symlink they planted) would let
# them swap in their own slurm.conf, pid files or env.sh. So DIR is created here 0755 and owned by
# the caller: slurmctld and slurmd run as root, munged and mariadbd as munge and mysql (they enter DIR
# to reach their own subfolders), and every user's sbatch/squeue reads DIR/etc/slurm.conf and the
# munge socket, so others may enter and read, never write. An existing DIR must be a real folder
# (not a symlink) of the caller that no one else can write, in a parent that others cannot write
# either unless it has the sticky bit (as /tmp has), so it cannot be renamed away.

# dir_problem DIR: why DIR cannot be used (empty output: it can)
dir_problem() {
    local dir=$1 parent owner mode pmode puid me
    me=$(id -u)
    parent=$(dirname -- "$dir")
    if [[ -L "$dir" ]]; then echo "is a symlink"; return; fi
    if [[ ! -d "$dir" ]]; then echo "is not a folder"; return; fi
    owner=$(stat -c %u -- "$dir") mode=$(stat -c %a -- "$dir")
    if [[ "$owner" != "$me" ]]; then
        echo "belongs to uid $owner, not to you (uid $me): another user may have made it first"; return
    fi
    if (( (8#$mode & 8#022) != 0 )); then echo "can be written by others (mode $mode)"; return; fi
    puid=$(stat -L -c %u -- "$parent") pmode=$(stat -L -c %a -- "$parent")
    if [[ "$puid" != "$me" && "$puid" != 0 ]] || { (( (8#$pmode & 8#022) != 0 )) && (( (8#$pmode & 8#1000) == 0 )); }; then
        echo "is in $parent, which others can write without the sticky bit (uid $puid, mode $pmode)"; return
    fi
}

# make_private_dir DIR: create DIR (0755, the caller's) unless it exists, then check it; exits on a problem
make_private_dir() {
    local dir=$1 why
    if [[ ! -e "$dir" && ! -L "$dir" ]]; then
        mkdir -p -- "$(dirname -- "$dir")" || { echo "cannot create the parent of $dir" >&2; exit 1; }
        mkdir -m 0755 -- "$dir" 2>/dev/null || true   # made by someone else meanwhile: checked below
    fi
    why=$(dir_problem "$dir")
    if [[ -n "$why" ]]; then
        echo "$(basename -- "$0"): refusing cluster folder $dir: it $why; remove it, or pass --dir with a folder of your own" >&2
        exit 1
    fi
}
