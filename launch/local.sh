#!/usr/bin/env bash
# Runs one stage on this machine, as one process or as NUM_PROCESSES processes
# on localhost (multi-process on one host: the same code path as a pod).
#
# Variables:
#   CONFIG          config file and argument, e.g. configs/ihn.py:runlocal (required)
#   WORKDIR         where checkpoints and logs go (required)
#   NUM_PROCESSES   processes to start on localhost (default 1)
#   PORT            coordinator port for NUM_PROCESSES > 1 (default 12355)
# Extra arguments are passed to ihc_jax.main, e.g. --config.num_train_steps=100.
set -euo pipefail
: "${CONFIG:?set CONFIG, e.g. CONFIG=configs/ihn.py:runlocal}"
: "${WORKDIR:?set WORKDIR, e.g. WORKDIR=/tmp/ihn}"
NUM_PROCESSES="${NUM_PROCESSES:-1}"
PORT="${PORT:-12355}"
cd "$(dirname "$0")/.."

if [ "$NUM_PROCESSES" -le 1 ]; then
  exec python -m ihc_jax.main --config="$CONFIG" --workdir="$WORKDIR" "$@"
fi

pids=()
for ((i = 0; i < NUM_PROCESSES; i++)); do
  JAX_COORDINATOR_ADDRESS="127.0.0.1:${PORT}" JAX_NUM_PROCESSES="$NUM_PROCESSES" \
  JAX_PROCESS_ID="$i" \
    python -m ihc_jax.main --config="$CONFIG" --workdir="$WORKDIR" "$@" \
    > "${WORKDIR%/}.process$i.log" 2>&1 &
  pids+=("$!")
done
status=0
for pid in "${pids[@]}"; do wait "$pid" || status=$?; done
echo "logs: ${WORKDIR%/}.process*.log"
exit "$status"
