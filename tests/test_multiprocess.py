"""Two JAX processes train the same parameters as one process with two devices.

Both runs go through `python -m ihc_jax.main` with the `hist` stage of
configs/test.py (the tiniest network) on a folder of two 32x32 photos written
by the test, `random_flip=False`, the same seed and global batch 2:

* two processes on localhost (JAX_COORDINATOR_ADDRESS / JAX_NUM_PROCESSES /
  JAX_PROCESS_ID, gloo collectives), one CPU device each;
* one process with two fake CPU devices
  (`--xla_force_host_platform_device_count=2`).

What makes the data equal: per-host sharding splits the sorted file list, so
process 0 reads only photo A and process 1 only photo B, and every global
batch of the 2-process run is [A, B]. The 1-process run reads both photos and
its batch of 2 is a permutation of the two files per epoch, so every global
batch is {A, B} too (possibly as [B, A]). Images equal the 32x32 crop size,
so there is no crop randomness. In both runs every device holds one example
and computes the same per-example terms; the batch means then add two terms
across devices, and a two-term float sum is the same in either order. So
the parameters are compared for exact equality (tolerance 0; measured: they
are bit-identical on CPU with gloo, jax 0.10.2).
"""

import os
import socket
import subprocess
import sys

import numpy as np
from PIL import Image

from ihc_jax.trainers import common

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STEPS = 3


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _write_photos(folder):
  os.makedirs(folder)
  rng = np.random.default_rng(0)
  for name in ("a", "b"):
    pixels = (rng.random((32, 32, 3)) * 255).astype(np.uint8)
    Image.fromarray(pixels).save(os.path.join(folder, f"{name}.png"))


def _command(workdir, photos):
  return [sys.executable, "-m", "ihc_jax.main", "--config=configs/test.py:hist",
          f"--workdir={workdir}", f"--config.num_train_steps={STEPS}",
          f"--config.data.source=folder:{photos}",
          f"--config.data.eval_source=folder:{photos}",
          "--config.data.random_flip=False"]


def _env(cache, **extra):
  env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS="",
             JAX_COMPILATION_CACHE_DIR=cache,
             JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
             PYTHONPATH=REPO, TF_CPP_MIN_LOG_LEVEL="2")
  env.update(extra)
  return env


def _wait(processes, logs):
  for process, log in zip(processes, logs):
    try:
      process.wait(timeout=300)
    finally:
      if process.poll() is None:
        process.kill()
    with open(log) as f:
      tail = f.read()[-3000:]
    assert process.returncode == 0, f"{log}:\n{tail}"


def test_two_processes_equal_one_process_with_two_devices(tmp_path):
  photos = str(tmp_path / "photos")
  _write_photos(photos)
  cache = str(tmp_path / "jax_cache")
  port = _free_port()
  multi, single = str(tmp_path / "multi"), str(tmp_path / "single")
  processes, logs = [], []
  for process_id in range(2):
    logs.append(str(tmp_path / f"process{process_id}.log"))
    with open(logs[-1], "w") as log:
      processes.append(subprocess.Popen(
          _command(multi, photos), cwd=REPO, stdout=log,
          stderr=subprocess.STDOUT, env=_env(
              cache, JAX_COORDINATOR_ADDRESS=f"127.0.0.1:{port}",
              JAX_NUM_PROCESSES="2", JAX_PROCESS_ID=str(process_id))))
  logs.append(str(tmp_path / "single.log"))
  with open(logs[-1], "w") as log:
    processes.append(subprocess.Popen(
        _command(single, photos), cwd=REPO, stdout=log,
        stderr=subprocess.STDOUT, env=_env(
            cache, XLA_FLAGS="--xla_force_host_platform_device_count=2")))
  _wait(processes, logs)

  with open(logs[0]) as f:
    log0 = f.read()
  with open(logs[1]) as f:
    log1 = f.read()
  assert "JAX process 0 of 2" in log0 and "JAX process 1 of 2" in log1
  # Per-host shards: each process read one of the two photos.
  assert "every process reads all" not in log0 + log1
  # Only process 0 writes summaries and the config.
  events = [f for f in os.listdir(multi) if f.startswith("events.out")]
  assert len(events) == 1 and os.path.exists(os.path.join(multi, "config.json"))
  assert common.checkpoint_networks(multi)[0] == STEPS

  got = common.restore_network_variables(multi, "histogram")
  want = common.restore_network_variables(single, "histogram")
  leaves_got, leaves_want = [
      [np.asarray(x) for x in _leaves(v)] for v in (got, want)]
  assert len(leaves_got) == len(leaves_want) > 0
  for a, b in zip(leaves_got, leaves_want):
    np.testing.assert_array_equal(a, b)
  # The runs trained: step 1 (checkpoint every step) differs from step 3.
  first = [np.asarray(x) for x in _leaves(
      common.restore_network_variables(multi, "histogram", step=1))]
  assert any(not np.array_equal(a, b) for a, b in zip(leaves_got, first))


def _leaves(tree):
  import jax  # pylint: disable=g-import-not-at-top
  return jax.tree.leaves(tree)
