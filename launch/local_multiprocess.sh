#!/usr/bin/env bash
# Runs main.py as one JAX job of N processes on this machine (coordinator 127.0.0.1:$PORT), the way a
# cluster would run it on N hosts: each process reads its own share of every batch, process 0 writes
# metrics and config.json, all processes write the checkpoints together.
#
#   launch/local_multiprocess.sh N --config=configs/pretrain.py:runlocal --workdir=DIR [--config.x=y ...]
#
# Environment: PORT (default 12355), LOG_DIR (default DIR/logs; one process_<i>.log each),
# PYTHON (default python3), MUMAE_JAX_INIT_TIMEOUT (default 300 s). On CPU each process has one device
# unless XLA_FLAGS=--xla_force_host_platform_device_count=K is set. Its first line names the processes'
# pids in process order: `kill -TERM` to any one of them makes all save the same step and stop.
set -euo pipefail

if [[ $# -lt 2 || ! $1 =~ ^[1-9][0-9]*$ ]]; then
  echo "usage: $0 NUM_PROCESSES --config=... --workdir=DIR [main.py flags]" >&2
  exit 2
fi
num=$1
shift
workdir=""
for arg in "$@"; do
  [[ $arg == --workdir=* ]] && workdir=${arg#--workdir=}
done
if [[ -z $workdir ]]; then
  echo "$0: pass --workdir=DIR (one directory shared by all processes)" >&2
  exit 2
fi
port=${PORT:-12355}
python=${PYTHON:-python3}
log_dir=${LOG_DIR:-$workdir/logs}
mkdir -p "$log_dir"
cd "$(dirname "$0")/.."

pids=()
for ((i = 0; i < num; i++)); do
  MUMAE_JAX_COORDINATOR="127.0.0.1:$port" MUMAE_JAX_NUM_PROCESSES="$num" MUMAE_JAX_PROCESS_ID="$i" \
    "$python" main.py "$@" >"$log_dir/process_$i.log" 2>&1 &
  pids+=("$!")
done
echo "started $num processes (pids ${pids[*]}; coordinator 127.0.0.1:$port); logs in $log_dir"

status=0
for i in "${!pids[@]}"; do
  if ! wait "${pids[$i]}"; then
    echo "process $i failed; the end of $log_dir/process_$i.log:" >&2
    tail -n 20 "$log_dir/process_$i.log" >&2
    status=1
  fi
done
if [[ $status -eq 0 ]]; then
  tail -n 1 "$log_dir/process_0.log"
fi
exit "$status"
