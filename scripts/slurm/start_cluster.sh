#!/usr/bin/env bash
# Start a throwaway one-node Slurm cluster on localhost, with accounting, for testing the
# workflow's Slurm profile:  munged -> MariaDB -> slurmdbd -> slurmctld -> slurmd.
#
#   scripts/slurm/start_cluster.sh STATE_DIR     (as root; stop it with stop_cluster.sh STATE_DIR)
#
# Everything the daemons write (state, spool, database, logs, PID files) lives in STATE_DIR.
# The only file outside it is /etc/slurm/slurm.conf (and slurmdbd.conf beside it): the nested
# `srun` inside each Snakemake job runs with every SLURM_* variable stripped, SLURM_CONF included,
# so it only finds the compiled-in default path. Existing files there are backed up into
# STATE_DIR and put back by stop_cluster.sh. If any step fails, what was started is stopped again.
#
# Debian's slurm-wlm, munge, slurmdbd and mariadb-server are installed with apt-get when missing.
# The settings, and the traps behind them: docs/cluster.md.
set -euo pipefail

if [[ $# -ne 1 ]]; then
    echo "usage: $0 STATE_DIR" >&2
    exit 2
fi
if [[ $EUID -ne 0 ]]; then
    echo "$0: must run as root (it starts daemons and writes /etc/slurm/slurm.conf)" >&2
    exit 2
fi

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
state=$(realpath -m "$1")
mariadb_port=6820  # not 3306, so that a system MariaDB may keep running
# First line of the files put into /etc/slurm: tells stop_cluster.sh (and a second start) whose they are.
marker_prefix="# written by adaloss scripts/slurm/start_cluster.sh for "
marker=$marker_prefix$state

log() { echo "[start_cluster $(date +%T)] $*" >&2; }

# Poll until a command succeeds: daemons fork before they are ready (and before their PID file
# exists), so neither "the command returned" nor "the PID file is there" means "serving".
wait_for() {
    local what=$1 seconds=$2 logfile=$3
    shift 3
    local deadline=$((SECONDS + seconds))
    until "$@" >"$state/log/last-check.out" 2>&1; do
        if ((SECONDS >= deadline)); then
            log "$what not ready after ${seconds}s; the check ($*) said:"
            cat "$state/log/last-check.out" >&2
            log "last lines of $logfile:"
            tail -n 20 "$logfile" >&2 || true
            return 1
        fi
        sleep 0.2
    done
}

# Record a daemon's PID (from its PID file once it exists) so that stop_cluster.sh stops exactly it.
record_pid() {
    local name=$1 pidfile=$2 logfile=$3
    wait_for "$name PID file" 30 "$logfile" test -s "$pidfile"
    cp "$pidfile" "$state/pids/$name"
}

install_packages() {
    local missing=()
    command -v munged >/dev/null || missing+=(munge)
    command -v slurmctld >/dev/null || missing+=(slurm-wlm)
    command -v slurmdbd >/dev/null || missing+=(slurmdbd)
    command -v mariadbd >/dev/null || missing+=(mariadb-server)
    if ((${#missing[@]})); then
        log "installing ${missing[*]} with apt-get"
        apt-get update -qq
        # No service starts on its own here: Debian's policy-rc.d (exit 101) blocks it in containers.
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    fi
}

# Put a file into /etc/slurm, keeping whatever was there for stop_cluster.sh to restore.
install_etc_file() {
    local name=$1 mode=$2 target=/etc/slurm/$1
    if [[ -e $target ]]; then
        cp -p "$target" "$state/etc-backup/$name"
    fi
    install -m "$mode" "$state/etc/$name" "$target"
}

if [[ -d $state/pids ]] && [[ -n $(ls -A "$state/pids") ]]; then
    echo "$0: $state already holds a cluster; stop it with $here/stop_cluster.sh $state" >&2
    exit 2
fi
# Another test cluster's config in /etc/slurm: its daemons hold the ports, and its backup of the
# original file would be lost if this one's backup replaced it.
for name in slurm.conf slurmdbd.conf; do
    first=$(head -n 1 "/etc/slurm/$name" 2>/dev/null || true)
    if [[ $first == "$marker_prefix"* ]]; then
        echo "$0: /etc/slurm/$name belongs to another test cluster: stop it with" \
            "$here/stop_cluster.sh ${first#"$marker_prefix"} (or delete the file if that cluster is gone)" >&2
        exit 2
    fi
done

mkdir -p "$state"/{pids,etc,etc-backup,log,munge,mysql,ctld,spool}
# On any failure (set -e exits), stop what was started and put /etc/slurm back.
trap 'if (($?)); then log "start failed; stopping what was started"; "$here/stop_cluster.sh" "$state"; fi' EXIT

install_packages

# Every daemon runs as root inside STATE_DIR, so STATE_DIR may be any root-only folder (pytest's
# tmp folders are 0700): a service user could not reach its files there.

# --- munge: authentication between all Slurm parts; its own socket leaves a system munged alone.
munge_socket=$state/munge/munge.socket
# --force: munged refuses to run as root (it checks the key's owner) unless forced.
munged --force --socket="$munge_socket" --pid-file="$state/munge/munged.pid" \
    --log-file="$state/log/munged.log" --seed-file="$state/munge/munged.seed"
record_pid munged "$state/munge/munged.pid" "$state/log/munged.log"
wait_for munged 10 "$state/log/munged.log" \
    bash -c "munge --socket='$munge_socket' -n | unmunge --socket='$munge_socket'"

# --- MariaDB: the accounting database behind slurmdbd, so that `sacct` lists the jobs.
mariadb-install-db --no-defaults --user=root --datadir="$state/mysql/data" \
    --auth-root-authentication-method=socket --skip-test-db >"$state/log/mariadb-install.log" 2>&1
# mariadbd does not daemonize: setsid detaches it from the caller's session and signals.
setsid nohup mariadbd --no-defaults --user=root --datadir="$state/mysql/data" \
    --socket="$state/mysql/mysqld.sock" --pid-file="$state/mysql/mysqld.pid" \
    --log-error="$state/log/mariadb.log" --bind-address=127.0.0.1 --port="$mariadb_port" \
    --skip-name-resolve </dev/null >>"$state/log/mariadb.log" 2>&1 &
echo $! >"$state/pids/mariadbd"
wait_for mariadbd 30 "$state/log/mariadb.log" \
    mariadb-admin --no-defaults --socket="$state/mysql/mysqld.sock" -u root ping
mariadb --no-defaults --socket="$state/mysql/mysqld.sock" -u root -e "
    CREATE USER 'slurm'@'127.0.0.1' IDENTIFIED BY 'slurm';
    GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';"

# --- Slurm's configuration: one node, as many CPUs as this machine, 90% of its memory (slurmd
# refuses a RealMemory above what it measures; the plugin sends --mem, so memory is scheduled).
node=$(hostname -s)
cpus=$(nproc)
real_memory=$(slurmd -C | sed -n 's/.*RealMemory=\([0-9]*\).*/\1/p')
real_memory=$((real_memory * 9 / 10))

cat >"$state/etc/slurm.conf" <<EOF
$marker
ClusterName=adaloss
SlurmctldHost=$node(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket=$munge_socket
CredType=cred/munge
MpiDefault=none
# No cgroups in a container: track processes by their parent PID, bind no tasks.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
ReturnToService=2
# scancel: SIGKILL 5 s after SIGTERM (default 30 s) keeps tests and teardown short.
KillWait=5
StateSaveLocation=$state/ctld
SlurmdSpoolDir=$state/spool
SlurmctldPidFile=$state/slurmctld.pid
SlurmdPidFile=$state/slurmd.pid
SlurmctldLogFile=$state/log/slurmctld.log
SlurmdLogFile=$state/log/slurmd.log
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
# For connections to slurmdbd, Slurm takes the munge socket from here, not from AuthInfo.
AccountingStoragePass=$munge_socket
# Keep sbatch --comment, where the Snakemake plugin names each job's rule, for sacct to show.
AccountingStoreFlags=job_comment
NodeName=$node NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$real_memory State=UNKNOWN
# Two partitions on the one node, so that a test can tell a rule's slurm_partition from the default.
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
PartitionName=batch Nodes=ALL MaxTime=INFINITE State=UP
EOF

cat >"$state/etc/slurmdbd.conf" <<EOF
$marker
AuthType=auth/munge
AuthInfo=socket=$munge_socket
DbdHost=localhost
SlurmUser=root
PidFile=$state/slurmdbd.pid
LogFile=$state/log/slurmdbd.log
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=$mariadb_port
StorageUser=slurm
StoragePass=slurm
StorageLoc=slurm_acct_db
EOF

mkdir -p /etc/slurm
install_etc_file slurm.conf 644
install_etc_file slurmdbd.conf 600  # slurmdbd refuses a readable file: it holds the DB password

# --- slurmdbd first: slurmctld registers the cluster with it when it starts.
slurmdbd
record_pid slurmdbd "$state/slurmdbd.pid" "$state/log/slurmdbd.log"
wait_for slurmdbd 30 "$state/log/slurmdbd.log" sacctmgr --noheader list cluster

# -c: start from an empty job state, whatever StateSaveLocation holds.
slurmctld -c
record_pid slurmctld "$state/slurmctld.pid" "$state/log/slurmctld.log"
slurmd
record_pid slurmd "$state/slurmd.pid" "$state/log/slurmd.log"
wait_for "node $node idle" 60 "$state/log/slurmd.log" \
    bash -c "sinfo --noheader --nodes='$node' --format=%t | grep -qx idle"
wait_for "cluster registration" 30 "$state/log/slurmctld.log" \
    bash -c "sacctmgr --noheader --parsable2 list cluster format=cluster | grep -qx adaloss"

trap - EXIT
log "up: partitions debug (default) and batch, node $node ($cpus CPUs, ${real_memory} MB); state and logs in $state"
