#!/usr/bin/env bash
# start-local-slurm.sh - idempotently install, configure and start a single-node
# Slurm cluster (Debian 12: Slurm 22.05, munge, optional slurmdbd+MariaDB) on this
# machine, with fake GPUs as generic resources. Run as root. Safe to re-run.
#
# mlrunner uses it to test `run --backend slurm` against a real scheduler:
#   sudo scripts/start-local-slurm.sh && pytest -m slurm && sudo scripts/stop-local-slurm.sh
# Up in about 20 s from nothing (package install aside), about 2 s when installed.
#
# Environment knobs:
#   LOCAL_SLURM_DIR   state/log/pid directory        (default /tmp/local-slurm)
#   SLURM_FAKE_GPUS   number of fake GPUs, 0 = none   (default 4)
#   SLURM_ACCOUNTING  1 = slurmdbd+MariaDB so sacct works (submitit needs sacct
#                     to detect jobs that die without a result), 0 = none (default 1)
#   SLURM_START_TIMEOUT seconds to wait for the node to become idle (default 60)
#   SLURM_NODE_CPUS   CPUs the node advertises (default: the real count, at least 8).
#                     More than the hardware has lets small test jobs (1 CPU each) run
#                     side by side on a 2-core CI machine; TaskPlugin=task/none binds
#                     nothing, so over-subscribing is harmless (config_overrides).
set -euo pipefail

DIR=${LOCAL_SLURM_DIR:-/tmp/local-slurm}
NGPU=${SLURM_FAKE_GPUS:-4}
ACCT=${SLURM_ACCOUNTING:-1}
TIMEOUT=${SLURM_START_TIMEOUT:-60}
NODE=localhost
CLUSTER=localcluster
RUN=$DIR/run LOG=$DIR/log
export DEBIAN_FRONTEND=noninteractive

log() { echo "[local-slurm] $*" >&2; }
die() { log "ERROR: $*"; exit 1; }
[ "$(id -u)" = 0 ] || die "must run as root"

# alive NAME PIDFILE: true if the pid in PIDFILE is a live process called NAME
alive() { local p; p=$(cat "$2" 2>/dev/null) || return 1
          [ -n "$p" ] && kill -0 "$p" 2>/dev/null && [ "$(cat "/proc/$p/comm" 2>/dev/null)" = "$1" ]; }
waitfor() { local t=$1; shift; local end=$((SECONDS + t))
            until "$@" >/dev/null 2>&1; do [ $SECONDS -ge $end ] && return 1; sleep 0.2; done; }

# ---------------------------------------------------------------- 1. install
pkgs=()
for b in slurmctld:slurmctld slurmd:slurmd sinfo:slurm-client munged:munge; do
  command -v "${b%%:*}" >/dev/null || pkgs+=("${b##*:}")
done
if [ "$ACCT" = 1 ]; then
  command -v slurmdbd >/dev/null || pkgs+=(slurmdbd)
  command -v mariadbd >/dev/null || pkgs+=(mariadb-server)
fi
if [ ${#pkgs[@]} -gt 0 ]; then
  command -v apt-get >/dev/null ||
    die "missing ${pkgs[*]} and no apt-get: install Slurm (slurmctld, slurmd, munge, slurmdbd) yourself"
  log "installing: ${pkgs[*]}"
  # keep package postinst scripts from starting services (we start them ourselves)
  made_policy=0
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d; chmod +x /usr/sbin/policy-rc.d; made_policy=1
  fi
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${pkgs[@]}" >/dev/null
  if [ $made_policy = 1 ]; then rm -f /usr/sbin/policy-rc.d; fi
fi

mkdir -p "$DIR/ctld" "$DIR/spool" "$RUN" "$LOG" "$DIR/fakegpu"

# ---------------------------------------------------------------- 2. munge
if [ ! -s /etc/munge/munge.key ]; then
  log "creating munge key"
  mkdir -p /etc/munge
  dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
  chown munge:munge /etc/munge/munge.key; chmod 400 /etc/munge/munge.key
fi
if ! munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
  log "starting munged"
  mkdir -p /run/munge /var/log/munge /var/lib/munge
  chown munge:munge /run/munge /var/log/munge /var/lib/munge; chmod 755 /run/munge
  runuser -u munge -- /usr/sbin/munged
  waitfor 10 bash -c 'munge -n | unmunge' || die "munged did not come up"
  cp /run/munge/munged.pid "$RUN/munged.pid"       # marks "started by this script"
fi

# ---------------------------------------------------------------- 3. fake GPUs
# Slurm only sets CUDA_VISIBLE_DEVICES for gres that have File= pointing at a
# character device; regular files are rejected and Count= without File= makes
# the node INVAL ("gres/gpu count reported lower than configured (0 < 4)").
for ((i = 0; i < NGPU; i++)); do
  f=$DIR/fakegpu/nvidia$i
  [ -c "$f" ] && continue
  rm -f "$f"
  mknod "$f" c 195 "$i" 2>/dev/null || ln -s /dev/null "$f"   # symlink fallback also works
done

# ---------------------------------------------------------------- 4. config
read -r CPUS SOCK CORES THREADS MEM < <(slurmd -C | head -1 | tr ' ' '\n' |
  awk -F= '{v[$1]=$2} END {print v["CPUs"], v["SocketsPerBoard"]*v["Boards"], v["CoresPerSocket"], v["ThreadsPerCore"], v["RealMemory"]}')
MEM=$((MEM * 95 / 100))
NCPU=${SLURM_NODE_CPUS:-$((CPUS > 8 ? CPUS : 8))}
SLURMD_PARAMS=""
if [ "$NCPU" != "$CPUS" ]; then
  # advertise NCPU single-thread cores on one socket; slurmd accepts it with config_overrides
  CPUS=$NCPU SOCK=1 CORES=$NCPU THREADS=1 SLURMD_PARAMS="SlurmdParameters=config_overrides"
fi

if [ "$NGPU" -gt 0 ]; then GRES_NODE=" Gres=gpu:$NGPU"; GRES_TYPES="GresTypes=gpu"; else GRES_NODE=""; GRES_TYPES=""; fi
if [ "$ACCT" = 1 ]; then
  ACCT_CONF="AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost"
  if [ "$NGPU" -gt 0 ]; then ACCT_CONF+=$'\nAccountingStorageTRES=gres/gpu'; fi
else
  ACCT_CONF="AccountingStorageType=accounting_storage/none"
fi

new_conf=$(cat <<EOF
# generated by start-local-slurm.sh
ClusterName=$CLUSTER
SlurmctldHost=localhost
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
MpiDefault=none
SwitchType=switch/none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
SchedulerParameters=batch_sched_delay=0,sched_min_interval=0,sched_interval=2,bf_interval=1
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
$ACCT_CONF
$GRES_TYPES
ReturnToService=2
MinJobAge=300
KillWait=5
InactiveLimit=0
$SLURMD_PARAMS
MailProg=/bin/true
StateSaveLocation=$DIR/ctld
SlurmdSpoolDir=$DIR/spool
SlurmctldPidFile=$RUN/slurmctld.pid
SlurmdPidFile=$RUN/slurmd.pid
SlurmctldLogFile=$LOG/slurmctld.log
SlurmdLogFile=$LOG/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
NodeName=$NODE CPUs=$CPUS Sockets=$SOCK CoresPerSocket=$CORES ThreadsPerCore=$THREADS RealMemory=$MEM$GRES_NODE State=UNKNOWN
PartitionName=debug Nodes=$NODE Default=YES MaxTime=INFINITE State=UP
EOF
)
new_gres=""
if [ "$NGPU" -gt 0 ]; then new_gres=$(printf 'AutoDetect=off\nName=gpu File=%s/fakegpu/nvidia[0-%d]' "$DIR" $((NGPU - 1))); fi

changed=0
mkdir -p /etc/slurm
[ "$(cat /etc/slurm/slurm.conf 2>/dev/null)" = "$new_conf" ] || { echo "$new_conf" > /etc/slurm/slurm.conf; changed=1; }
[ "$(cat /etc/slurm/gres.conf 2>/dev/null)" = "$new_gres" ] || { echo "$new_gres" > /etc/slurm/gres.conf; changed=1; }

if [ "$ACCT" = 1 ]; then
  cat > /etc/slurm/slurmdbd.conf <<EOF
AuthType=auth/munge
DbdHost=localhost
DbdPort=6819
SlurmUser=root
DebugLevel=info
LogFile=$LOG/slurmdbd.log
PidFile=$RUN/slurmdbd.pid
StorageType=accounting_storage/mysql
StorageHost=localhost
StorageUser=slurm
StoragePass=slurm
StorageLoc=slurm_acct_db
EOF
  chmod 600 /etc/slurm/slurmdbd.conf
fi

# config changed while daemons run -> restart them (gres/node changes need it)
if [ $changed = 1 ] && { alive slurmctld "$RUN/slurmctld.pid" || alive slurmd "$RUN/slurmd.pid"; }; then
  log "configuration changed: restarting slurmctld/slurmd"
  pids="$(cat "$RUN/slurmctld.pid" "$RUN/slurmd.pid" 2>/dev/null || true)"
  scontrol shutdown >/dev/null 2>&1 || true
  for p in $pids; do waitfor 15 bash -c "! kill -0 $p" || kill -TERM "$p" 2>/dev/null || true; done
fi

# ---------------------------------------------------------------- 5. accounting
if [ "$ACCT" = 1 ]; then
  if ! mariadb-admin ping >/dev/null 2>&1; then
    log "starting mariadbd"
    if [ ! -d /var/lib/mysql/mysql ]; then
      mariadb-install-db --user=mysql --datadir=/var/lib/mysql >"$LOG/mariadb-install.log" 2>&1
    fi
    mkdir -p /run/mysqld; chown mysql:root /run/mysqld
    setsid nohup /usr/sbin/mariadbd --user=mysql --innodb-buffer-pool-size=64M --skip-log-bin \
      >"$LOG/mariadbd.log" 2>&1 < /dev/null &
    echo $! > "$RUN/mariadbd.pid"
    waitfor 30 mariadb-admin ping || die "mariadbd did not come up (see $LOG/mariadbd.log)"
  fi
  mariadb -e "CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY 'slurm';
              GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost'; FLUSH PRIVILEGES;"
  if ! alive slurmdbd "$RUN/slurmdbd.pid"; then
    log "starting slurmdbd"
    slurmdbd
  fi
  waitfor 30 sacctmgr -n show cluster || die "slurmdbd not answering (see $LOG/slurmdbd.log)"
fi

# ---------------------------------------------------------------- 6. slurmctld + slurmd
if ! alive slurmctld "$RUN/slurmctld.pid"; then log "starting slurmctld"; slurmctld; fi
waitfor 30 bash -c 'scontrol ping | grep -q UP' || die "slurmctld not up (see $LOG/slurmctld.log)"
if ! alive slurmd "$RUN/slurmd.pid"; then log "starting slurmd"; slurmd -N "$NODE"; fi

# ---------------------------------------------------------------- 7. wait for idle node
end=$((SECONDS + TIMEOUT)); resumed=0
while :; do
  st=$(sinfo -h -n "$NODE" -o '%T' 2>/dev/null || true)
  case "$st" in
    idle|mixed|allocated) break ;;
    drain*|down*|inval*|fail*)      # e.g. drained in saved state by an earlier bad config
      if [ $resumed = 0 ]; then scontrol update nodename="$NODE" state=resume 2>/dev/null || true; resumed=1; fi ;;
  esac
  [ $SECONDS -ge $end ] && { scontrol show node "$NODE" >&2 || true; die "node state '$st' after ${TIMEOUT}s (see $LOG/)"; }
  sleep 0.2
done
log "cluster up: node $NODE is $st ($CPUS CPUs, ${MEM}MB, $NGPU fake GPUs, accounting=$ACCT)"
sinfo -o '%P %a %D %T %N %G'
