"""Multi-process (multi-host) start-up: when to call `jax.distributed.initialize`.

A run is multi-process when more than one process is configured, by flags or by
the environment. Sources, first match wins:

1. Explicit arguments (`--coordinator_address`, `--num_processes`,
   `--process_id` in `ihc_jax.main`).
2. `JAX_COORDINATOR_ADDRESS`, `JAX_NUM_PROCESSES`, `JAX_PROCESS_ID`: a plain
   set of processes, e.g. several processes on one machine (`launch/local.sh`).
3. SLURM (`SLURM_NTASKS` > 1, one task per GPU; `launch/slurm.sbatch`) and
   Cloud TPU pod slices (`TPU_WORKER_HOSTNAMES` lists more than one worker;
   `launch/tpu_pod.sh`): JAX detects the cluster itself, so `initialize()` is
   called without arguments.

On CPU the cross-process collectives need an implementation; gloo ships with
jaxlib and is selected before initialisation.
"""

from __future__ import annotations

import os

from absl import logging
import jax


def _env_int(name: str) -> int | None:
  value = os.environ.get(name)
  if value in (None, ""):
    return None
  try:
    return int(value)
  except ValueError as e:
    raise ValueError(f"Environment variable {name}={value!r} is not an "
                     "integer.") from e


def configured_process_count(num_processes: int | None = None) -> int:
  """How many processes the flags or the environment ask for (1 if none)."""
  if num_processes is not None:
    return num_processes
  for name in ("JAX_NUM_PROCESSES", "SLURM_NTASKS"):
    count = _env_int(name)
    if count is not None:
      return count
  hosts = os.environ.get("TPU_WORKER_HOSTNAMES", "")
  return max(1, len([h for h in hosts.split(",") if h.strip()]))


def initialize(coordinator_address: str | None = None,
               num_processes: int | None = None,
               process_id: int | None = None) -> bool:
  """Initialises `jax.distributed` when more than one process is configured.

  Must run before any other JAX call that touches devices.

  Args:
    coordinator_address: `host:port` of process 0; defaults to
      `JAX_COORDINATOR_ADDRESS`.
    num_processes: total number of processes; defaults to the environment.
    process_id: this process's index; defaults to `JAX_PROCESS_ID`.

  Returns:
    True when `jax.distributed.initialize` was called, False for a
    single-process run.

  Raises:
    ValueError: a partial explicit configuration (a process count without a
      coordinator address or process id, or an id out of range).
  """
  count = configured_process_count(num_processes)
  if count <= 1:
    return False
  coordinator_address = coordinator_address or os.environ.get(
      "JAX_COORDINATOR_ADDRESS")
  if process_id is None:
    process_id = _env_int("JAX_PROCESS_ID")
  explicit = num_processes is not None or "JAX_NUM_PROCESSES" in os.environ
  if explicit:
    missing = [name for name, value in (
        ("coordinator address (--coordinator_address or "
         "JAX_COORDINATOR_ADDRESS)", coordinator_address),
        ("process id (--process_id or JAX_PROCESS_ID)", process_id))
               if value is None]
    if missing:
      raise ValueError(f"{count} processes are configured but the "
                       f"{' and the '.join(missing)} is not set.")
    if not 0 <= process_id < count:
      raise ValueError(f"Process id {process_id} is outside [0, {count}).")
  # Only affects the CPU backend; asking for the backend here would
  # initialise it before jax.distributed, which must come first.
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  if explicit:
    logging.info("Starting process %d of %d (coordinator %s).", process_id,
                 count, coordinator_address)
    jax.distributed.initialize(coordinator_address, count, process_id)
  else:
    logging.info("Starting one of %d processes; cluster detected by JAX.",
                 count)
    jax.distributed.initialize()
  return True
