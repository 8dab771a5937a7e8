#!/usr/bin/env bash
# A one-node Slurm cluster on this machine, for tests and for trying the Slurm executor
# (docs/cluster.md). Root on Debian/Ubuntu; no systemd needed (the daemons are started
# directly).
#
#   scripts/slurm.sh install   apt-get install slurm-wlm and munge (once; quiet)
#   scripts/slurm.sh start     write the config, start munged, slurmctld, slurmd; wait
#                              until the node is idle (idempotent)
#   scripts/slurm.sh stop      cancel every job, stop the daemons it started; no process
#                              is left behind (idempotent)
#   scripts/slurm.sh status    what runs; exit 0 when the node is up, 3 when stopped,
#                              4 when Slurm is not installed (changes nothing)
#
# One partition, "debug", with this machine as its node (cores and memory from `slurmd -C`).
# No accounting database: every finished job is a line of $ALCSP_SLURM_DIR/jobcomp.log
# (jobcomp/filetxt; JobId, JobName, JobState, NodeList, ...), the record tests read instead
# of sacct. State, logs and pid files live in $ALCSP_SLURM_DIR (/var/spool/alcsp-slurm).
# It writes /etc/slurm/slurm.conf only if that file is absent or was written by this script:
# a machine with a real Slurm configuration is left alone.
set -euo pipefail

DIR=${ALCSP_SLURM_DIR:-/var/spool/alcsp-slurm}
CONF=/etc/slurm/slurm.conf
MARK="# Written by alcsp scripts/slurm.sh (one-node test cluster)."
PARTITION=debug
MUNGE_PID=/run/munge/munged.pid
WAIT=${ALCSP_SLURM_WAIT:-60}  # seconds to wait for a daemon or the node

say() { echo "slurm.sh: $*"; }
die() { echo "slurm.sh: error: $*" >&2; exit 1; }
need_root() { [ "$(id -u)" = 0 ] || die "$1 needs root"; }
installed() {
    command -v slurmctld >/dev/null && command -v slurmd >/dev/null \
        && command -v sbatch >/dev/null && command -v munged >/dev/null
}
ours() { [ -f "$CONF" ] && head -n 1 "$CONF" | grep -qxF "$MARK"; }

# pid_of NAME PIDFILE: the pid in PIDFILE if that process runs and is NAME, else nothing.
pid_of() {
    local pid
    [ -r "$2" ] || return 0
    pid=$(tr -dc 0-9 < "$2")
    [ -n "$pid" ] && [ -r "/proc/$pid/comm" ] && [ "$(cat "/proc/$pid/comm")" = "$1" ] \
        && echo "$pid"
    return 0
}
munge_ok() { munge -n 2>/dev/null | unmunge >/dev/null 2>&1; }
node_name() { slurmd -C | sed -n 's/^NodeName=\([^ ]*\).*/\1/p'; }
node_state() { sinfo -h -N -n "$1" -o %T 2>/dev/null | head -n 1; }

do_install() {
    if installed; then
        say "slurm-wlm and munge are installed"
        return 0
    fi
    need_root install
    command -v apt-get >/dev/null || die "install needs apt-get (Debian/Ubuntu)"
    export DEBIAN_FRONTEND=noninteractive
    # Keep the packages' init scripts from starting daemons (munged) during installation:
    # `start` starts them, `stop` stops them. Docker images have such a policy already.
    local policy=/usr/sbin/policy-rc.d made_policy=""
    if [ ! -e "$policy" ]; then
        printf '#!/bin/sh\nexit 101\n' > "$policy"
        chmod 755 "$policy"
        made_policy=1
    fi
    local log rc=0
    log=$(mktemp)
    # Try the cached package lists first; fresh images often have none: update and retry.
    apt-get install -y -q --no-install-recommends slurm-wlm munge > "$log" 2>&1 || {
        apt-get update -q >> "$log" 2>&1 \
            && apt-get install -y -q --no-install-recommends slurm-wlm munge >> "$log" 2>&1
    } || rc=$?
    [ -n "$made_policy" ] && rm -f "$policy"
    if [ "$rc" != 0 ] || ! installed; then
        tail -n 30 "$log" >&2
        rm -f "$log"
        die "apt-get install slurm-wlm munge failed"
    fi
    rm -f "$log"
    say "installed $(slurmctld -V)"
}

write_conf() {
    local line node
    line=$(slurmd -C | head -n 1)  # NodeName=... CPUs=... RealMemory=...
    node=$(node_name)
    [ -n "$node" ] || die "slurmd -C gave no node line"
    mkdir -p /etc/slurm "$DIR/ctld" "$DIR/d"
    cat > "$CONF.tmp" <<EOF
$MARK
# Remove this file (and $DIR) to forget the cluster; \`scripts/slurm.sh start\` rewrites it.
ClusterName=alcsp
SlurmctldHost=$node(127.0.0.1)
SlurmUser=root
AuthType=auth/munge
CredType=cred/munge
MpiDefault=none
MailProg=/bin/true
SwitchType=switch/none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
KillWait=5
InactiveLimit=0
MinJobAge=600
StateSaveLocation=$DIR/ctld
SlurmdSpoolDir=$DIR/d
SlurmctldPidFile=$DIR/slurmctld.pid
SlurmdPidFile=$DIR/slurmd.pid
SlurmctldLogFile=$DIR/slurmctld.log
SlurmdLogFile=$DIR/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
JobAcctGatherType=jobacct_gather/linux
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/filetxt
JobCompLoc=$DIR/jobcomp.log
$line NodeAddr=127.0.0.1 State=UNKNOWN
PartitionName=$PARTITION Nodes=$node Default=YES MaxTime=INFINITE State=UP
EOF
    mv "$CONF.tmp" "$CONF"
}

start_munged() {
    if munge_ok; then
        return 0
    fi
    if [ ! -s /etc/munge/munge.key ]; then
        mungekey --create --keyfile=/etc/munge/munge.key 2>/dev/null \
            || dd if=/dev/urandom of=/etc/munge/munge.key bs=1 count=1024 2>/dev/null
    fi
    chown munge:munge /etc/munge/munge.key
    chmod 400 /etc/munge/munge.key
    install -d -o munge -g munge -m 0755 /run/munge
    runuser -u munge -- /usr/sbin/munged
    touch "$DIR/munged.ours"  # started here: `stop` stops it
    local i
    for ((i = 0; i < WAIT * 5; i++)); do
        munge_ok && return 0
        sleep 0.2
    done
    die "munged did not answer (see /var/log/munge/munged.log)"
}

do_start() {
    need_root start
    installed || die "Slurm is not installed: run scripts/slurm.sh install"
    if [ -f "$CONF" ] && ! ours; then
        die "$CONF exists and was not written by this script: not touching a real cluster"
    fi
    mkdir -p "$DIR"
    write_conf
    start_munged
    local node state i
    node=$(node_name)
    if [ -z "$(pid_of slurmctld "$DIR/slurmctld.pid")" ]; then
        /usr/sbin/slurmctld -f "$CONF" || die "slurmctld did not start (see $DIR/slurmctld.log)"
    fi
    for ((i = 0; i < WAIT * 5; i++)); do
        scontrol ping 2>/dev/null | grep -q UP && break
        sleep 0.2
    done
    scontrol ping 2>/dev/null | grep -q UP \
        || die "slurmctld does not answer (see $DIR/slurmctld.log)"
    if [ -z "$(pid_of slurmd "$DIR/slurmd.pid")" ]; then
        /usr/sbin/slurmd -f "$CONF" -N "$node" || die "slurmd did not start (see $DIR/slurmd.log)"
    fi
    for ((i = 0; i < WAIT * 5; i++)); do
        state=$(node_state "$node")
        case "$state" in
            idle | mixed | allocated) break ;;
            down | drained | draining)  # a stale state from an earlier run
                scontrol update nodename="$node" state=resume 2>/dev/null || true ;;
        esac
        sleep 0.2
    done
    state=$(node_state "$node")
    case "$state" in
        idle | mixed | allocated) ;;
        *) tail -n 20 "$DIR/slurmd.log" >&2 || true
           die "node $node is '$state', not idle, after ${WAIT}s" ;;
    esac
    say "up: node $node ($state) in partition $PARTITION; jobs recorded in $DIR/jobcomp.log"
}

# stop_pid NAME PIDFILE: SIGTERM, then SIGKILL after $WAIT seconds.
stop_pid() {
    local pid i
    pid=$(pid_of "$1" "$2")
    [ -n "$pid" ] || return 0
    kill "$pid" 2>/dev/null || true
    for ((i = 0; i < WAIT * 5; i++)); do
        [ -d "/proc/$pid" ] && [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$1" ] || return 0
        sleep 0.2
    done
    say "$1 ($pid) ignored SIGTERM for ${WAIT}s: SIGKILL"
    kill -9 "$pid" 2>/dev/null || true
}

# Job step daemons of this node (slurmstepd), as pids.
stepds() {
    local p comm
    for p in /proc/[0-9]*; do
        comm=""
        read -r comm 2>/dev/null < "$p/comm" || true
        [ "$comm" = slurmstepd ] && echo "${p#/proc/}"
    done
    return 0
}

do_stop() {
    need_root stop
    if [ -f "$CONF" ] && ! ours; then
        die "$CONF was not written by this script: not stopping a real cluster"
    fi
    local i left
    if [ -n "$(pid_of slurmctld "$DIR/slurmctld.pid")" ]; then
        # Cancel every job and let slurmd end their processes (KillWait=5).
        squeue -h -o %A 2>/dev/null | xargs -r scancel --quiet 2>/dev/null || true
        for ((i = 0; i < WAIT * 5; i++)); do
            [ -z "$(squeue -h -o %A 2>/dev/null)" ] && [ -z "$(stepds)" ] && break
            sleep 0.2
        done
    fi
    stop_pid slurmd "$DIR/slurmd.pid"
    stop_pid slurmctld "$DIR/slurmctld.pid"
    left=$(stepds)
    if [ -n "$left" ]; then
        say "killing job step daemons left behind: $left"
        kill -9 $left 2>/dev/null || true
    fi
    if [ -f "$DIR/munged.ours" ]; then
        stop_pid munged "$MUNGE_PID"
        rm -f "$DIR/munged.ours"
    elif [ -n "$(pid_of munged "$MUNGE_PID")" ]; then
        say "munged was running before start: left running"
    fi
    say "stopped"
}

do_status() {
    if ! installed; then
        say "Slurm is not installed (scripts/slurm.sh install)"
        return 4
    fi
    local ctld d m up=1 state node
    ctld=$(pid_of slurmctld "$DIR/slurmctld.pid")
    d=$(pid_of slurmd "$DIR/slurmd.pid")
    m=$(pid_of munged "$MUNGE_PID")
    echo "config:     $CONF $(ours && echo '(this script)' || { [ -f "$CONF" ] && echo '(foreign)' || echo '(absent)'; })"
    echo "munged:     ${m:-not running}"
    echo "slurmctld:  ${ctld:-not running}"
    echo "slurmd:     ${d:-not running}"
    echo "jobcomp:    $DIR/jobcomp.log"
    { [ -n "$ctld" ] && [ -n "$d" ] && [ -n "$m" ]; } || up=0
    if [ "$up" = 1 ]; then
        node=$(node_name)
        state=$(node_state "$node")
        echo "node:       $node ${state:-?} (partition $PARTITION)"
        case "$state" in idle | mixed | allocated) return 0 ;; esac
        return 1
    fi
    return 3
}

case "${1:-}" in
    install) do_install ;;
    start) do_start ;;
    stop) do_stop ;;
    status) do_status ;;
    *) echo "usage: $0 {install|start|stop|status}" >&2; exit 2 ;;
esac
