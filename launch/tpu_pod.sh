#!/usr/bin/env bash
# Mu-MAE pretraining on a Cloud TPU VM pod: one process per TPU VM worker, joined by
# jax.distributed (mumae_jax/core/distributed.py detects the pod), checkpoints and metrics in a gs:// workdir.
#
#   launch/tpu_pod.sh create            # the pod
#   launch/tpu_pod.sh copy              # this checkout (git HEAD) to every worker
#   launch/tpu_pod.sh install           # Python 3.12 venv + mumae_jax[tpu] on every worker
#   launch/tpu_pod.sh run [main.py flags, e.g. --config=configs/pretrain.py:variant=B]
#   launch/tpu_pod.sh logs              # the last lines of every worker's log
#   launch/tpu_pod.sh delete            # tear the pod down (billing stops)
#
# Environment: TPU_NAME, ZONE (required); PROJECT (default: gcloud's); ACCELERATOR_TYPE (default
# v5litepod-16); RUNTIME_VERSION (default v2-alpha-tpuv5-lite); WORKDIR (gs://bucket/path, required by
# run); REMOTE_DIR (default mumae_jax, under each worker's home); DRY_RUN=1 prints the commands only.
set -euo pipefail

usage() {
  sed -n '2,16p' "$0" >&2
  exit 2
}
[[ $# -ge 1 ]] || usage
action=$1
shift
: "${TPU_NAME:?set TPU_NAME}"
: "${ZONE:?set ZONE}"
accelerator=${ACCELERATOR_TYPE:-v5litepod-16}
runtime=${RUNTIME_VERSION:-v2-alpha-tpuv5-lite}
remote=${REMOTE_DIR:-mumae_jax}
project_flag=()
if [[ -n ${PROJECT:-} ]]; then
  project_flag=(--project="$PROJECT")
fi
tpu=(gcloud compute tpus tpu-vm)

quoted() {  # one shell word, single-quoted when it needs to be
  if [[ $1 =~ ^[A-Za-z0-9_./:=@,+%-]+$ ]]; then
    printf '%s' "$1"
  else
    printf "'%s'" "${1//\'/\'\\\'\'}"
  fi
}

run() {
  if [[ ${DRY_RUN:-0} == 1 ]]; then
    local words=()
    for arg in "$@"; do
      words+=("$(quoted "$arg")")
    done
    echo "${words[*]}"
  else
    "$@"
  fi
}

on_all_workers() {
  run "${tpu[@]}" ssh "$TPU_NAME" --zone="$ZONE" "${project_flag[@]}" --worker=all --command="$1"
}

case $action in
  create)
    run "${tpu[@]}" create "$TPU_NAME" --zone="$ZONE" "${project_flag[@]}" \
      --accelerator-type="$accelerator" --version="$runtime"
    ;;
  copy)
    archive=${TMPDIR:-/tmp}/mumae_jax_$TPU_NAME.tar.gz
    run git -C "$(cd "$(dirname "$0")/.." && pwd)" archive --format=tar.gz -o "$archive" HEAD
    run "${tpu[@]}" scp "$archive" "$TPU_NAME:mumae_jax.tar.gz" --zone="$ZONE" "${project_flag[@]}" --worker=all
    on_all_workers "rm -rf ~/$remote && mkdir -p ~/$remote && tar -xzf ~/mumae_jax.tar.gz -C ~/$remote"
    ;;
  install)
    # TPU VM images ship an older Python; uv brings 3.12 (mumae_jax needs >= 3.11)
    on_all_workers "python3 -m pip install -q --user uv && ~/.local/bin/uv venv -q --python 3.12 ~/mumae_venv \
&& ~/.local/bin/uv pip install -q --python ~/mumae_venv/bin/python -e \"\$HOME/${remote}[tpu]\" \
&& ~/mumae_venv/bin/python -c 'import jax; print(jax.local_device_count(), jax.devices()[0].device_kind)'"
    ;;
  run)
    : "${WORKDIR:?set WORKDIR=gs://bucket/path (every worker writes checkpoints there)}"
    if [[ $WORKDIR != gs://* ]]; then
      echo "WORKDIR=$WORKDIR: use a gs:// path; a worker's local disk is not shared with the others" >&2
      exit 2
    fi
    flags=""
    for arg in "$@"; do
      flags+=" $(printf '%q' "$arg")"
    done
    on_all_workers "cd ~/$remote && MUMAE_JAX_DISTRIBUTED=1 nohup ~/mumae_venv/bin/python main.py$flags \
--workdir=$WORKDIR > ~/mumae_jax.log 2>&1 &"
    ;;
  logs)
    on_all_workers "tail -n 5 ~/mumae_jax.log"
    ;;
  delete)
    run "${tpu[@]}" delete "$TPU_NAME" --zone="$ZONE" "${project_flag[@]}" --quiet
    ;;
  *)
    usage
    ;;
esac
