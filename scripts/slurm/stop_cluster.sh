#!/usr/bin/env bash
# Stop the test cluster that start_cluster.sh STATE_DIR started, and put /etc/slurm back.
#
#   scripts/slurm/stop_cluster.sh STATE_DIR
#
# Safe to run on a half-started cluster and more than once: it stops only the daemons whose PIDs
# start_cluster.sh recorded in STATE_DIR/pids (and only if that PID still runs that daemon), and it
# only removes /etc/slurm files that carry this STATE_DIR's marker line. STATE_DIR (logs) is kept.
set -uo pipefail  # no -e: one step failing must not leave the later daemons running

if [[ $# -ne 1 ]]; then
    echo "usage: $0 STATE_DIR" >&2
    exit 2
fi
state=$(realpath -m "$1")
marker="# written by adaloss scripts/slurm/start_cluster.sh for $state"
status=0

log() { echo "[stop_cluster $(date +%T)] $*" >&2; }

# The recorded PID of a daemon, if that process is still that daemon (a PID can be reused).
live_pid() {
    local name=$1 pid
    pid=$(cat "$state/pids/$name" 2>/dev/null) || return 1
    [[ $(cat "/proc/$pid/comm" 2>/dev/null) == "$name" ]] && echo "$pid"
}

stop_daemon() {
    local name=$1 pid
    if pid=$(live_pid "$name"); then
        kill -TERM "$pid"
        for _ in $(seq 150); do  # 30 s: a slurmd whose controller is gone retries for ~20 s first
            [[ -e /proc/$pid ]] || break
            sleep 0.2
        done
        if [[ -e /proc/$pid ]]; then
            log "$name ($pid) ignored SIGTERM for 30 s; killing it"
            kill -KILL "$pid"
            status=1
        fi
    fi
    rm -f "$state/pids/$name"
}

# Cancel leftover jobs first (a test that failed half-way), so that no job step outlives slurmd.
if live_pid slurmctld >/dev/null; then
    mapfile -t jobs < <(squeue --noheader --format=%i 2>/dev/null)
    if ((${#jobs[@]})); then
        log "cancelling leftover jobs: ${jobs[*]}"
        scancel "${jobs[@]}"
        for _ in $(seq 75); do  # KillWait is 5 s
            [[ -z $(squeue --noheader --format=%i 2>/dev/null) ]] && break
            sleep 0.2
        done
    fi
fi

# slurmd before slurmctld (a slurmd without its controller is slow to exit), the database last.
for daemon in slurmd slurmctld slurmdbd mariadbd munged; do
    stop_daemon "$daemon"
done

for name in slurm.conf slurmdbd.conf; do
    target=/etc/slurm/$name
    if [[ -e $target ]] && [[ $(head -n 1 "$target") == "$marker" ]]; then
        if [[ -e $state/etc-backup/$name ]]; then
            mv "$state/etc-backup/$name" "$target"
        else
            rm "$target"
        fi
    fi
done

log "stopped; logs kept in $state/log"
exit "$status"
