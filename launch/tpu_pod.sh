#!/usr/bin/env bash
# Creates a Cloud TPU VM or pod slice, installs ihc_jax on every worker and runs
# one stage on all workers at once (one JAX process per worker; JAX detects
# the pod itself).
#
# Variables:
#   TPU_NAME          name of the TPU VM (required)
#   ZONE              e.g. us-central2-b (required)
#   ACCELERATOR_TYPE  e.g. v4-32 (default v4-8)
#   RUNTIME_VERSION   TPU software version (default tpu-ubuntu2204-base)
#   REPO_URL          git URL of ihc_jax to clone on the workers (required)
#   CONFIG            config file and argument, e.g. configs/ihn.py (required)
#   WORKDIR           a gs:// bucket path every worker can write (required)
#   CREATE            1 to create the TPU first (default 0)
#   PREEMPTIBLE       1 to create it as a spot/preemptible VM (default 0)
set -euo pipefail
: "${TPU_NAME:?}" "${ZONE:?}" "${REPO_URL:?}" "${CONFIG:?}" "${WORKDIR:?}"
ACCELERATOR_TYPE="${ACCELERATOR_TYPE:-v4-8}"
RUNTIME_VERSION="${RUNTIME_VERSION:-tpu-ubuntu2204-base}"

if [ "${CREATE:-0}" = 1 ]; then
  extra=()
  if [ "${PREEMPTIBLE:-0}" = 1 ]; then extra+=(--spot); fi
  gcloud compute tpus tpu-vm create "$TPU_NAME" --zone="$ZONE" \
    --accelerator-type="$ACCELERATOR_TYPE" --version="$RUNTIME_VERSION" "${extra[@]}"
fi

gcloud compute tpus tpu-vm ssh "$TPU_NAME" --zone="$ZONE" --worker=all --command "
  set -e
  if [ ! -d ihc_jax ]; then git clone '$REPO_URL' ihc_jax; fi
  cd ihc_jax && git pull --ff-only
  pip install -q -e . 'jax[tpu]'
"

# A preempted run is resumed by running this script again: every stage
# resumes from the newest checkpoint in WORKDIR by itself.
gcloud compute tpus tpu-vm ssh "$TPU_NAME" --zone="$ZONE" --worker=all --command "
  cd ihc_jax && python -m ihc_jax.main --config='$CONFIG' --workdir='$WORKDIR' $*
"
