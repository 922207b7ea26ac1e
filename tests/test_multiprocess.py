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

The 2-process run is also interrupted: SIGTERM goes to process 0 alone
once step 2 is saved, and both processes must stop cleanly at the same step
s (they agree on stopping every `sync_every_steps` = 3 steps, so s is a
multiple of 3). The test then damages checkpoint step
s, and a second pair of processes falls back to step s - 1 (moving step s
aside, process 0 renaming while process 1 waits) and resumes to the end,
which must still equal the straight 1-process run.
"""

import os
import re
import signal
import socket
import subprocess
import sys
import time

import jax
import numpy as np
from PIL import Image

from ihc_jax.trainers import checkpoints as checkpoints_lib

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STEPS = 30  # leaves room to stop at step >= 2 well before the end
SYNC_EVERY = 3  # steps between the processes' SIGTERM agreements


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


def _command(workdir, photos, steps):
  return [sys.executable, "-m", "ihc_jax.main", "--config=configs/test.py:hist",
          f"--workdir={workdir}", f"--config.num_train_steps={steps}",
          "--config.checkpoint.every_steps=1",
          f"--config.sync_every_steps={SYNC_EVERY}",
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


def _start(command, log_path, env):
  with open(log_path, "w") as log:
    return subprocess.Popen(command, cwd=REPO, stdout=log,
                            stderr=subprocess.STDOUT, env=env)


def _start_pair(workdir, photos, steps, cache, log_prefix):
  port = _free_port()
  logs = [f"{log_prefix}{i}.log" for i in range(2)]
  processes = [_start(_command(workdir, photos, steps), logs[i], _env(
      cache, JAX_COORDINATOR_ADDRESS=f"127.0.0.1:{port}",
      JAX_NUM_PROCESSES="2", JAX_PROCESS_ID=str(i))) for i in range(2)]
  return processes, logs


def _wait(processes, logs):
  """Waits for every process; returns the logs' text."""
  texts = []
  for process, log in zip(processes, logs):
    try:
      process.wait(timeout=300)
    finally:
      if process.poll() is None:
        process.kill()
    with open(log) as f:
      texts.append(f.read())
    assert process.returncode == 0, f"{log}:\n{texts[-1][-3000:]}"
  return texts


def _histogram_leaves(workdir, step=None):
  return [np.asarray(x) for x in jax.tree.leaves(
      checkpoints_lib.restore_network_variables(workdir, "histogram", step=step))]


def test_two_processes_equal_one_process_with_two_devices(tmp_path):
  photos = str(tmp_path / "photos")
  _write_photos(photos)
  cache = str(tmp_path / "jax_cache")
  multi, single = str(tmp_path / "multi"), str(tmp_path / "single")
  single_log = str(tmp_path / "single.log")
  straight = _start(_command(single, photos, STEPS), single_log, _env(
      cache, XLA_FLAGS="--xla_force_host_platform_device_count=2"))
  pair, logs = _start_pair(multi, photos, STEPS, cache,
                           str(tmp_path / "first"))
  directory = os.path.join(multi, checkpoints_lib.CHECKPOINT_DIR)
  deadline = time.time() + 300
  while not os.path.isdir(os.path.join(directory, "2")):
    assert pair[0].poll() is None and time.time() < deadline, logs[0]
    time.sleep(0.01)
  pair[0].send_signal(signal.SIGTERM)  # process 0 only
  log0, log1 = _wait(pair, logs)
  stopped = [re.findall(r"Stopped by SIGTERM at step (\d+)", log)
             for log in (log0, log1)]
  assert stopped[0] == stopped[1] and len(stopped[0]) == 1, stopped
  term_step = int(stopped[0][0])
  assert 2 <= term_step < STEPS and term_step % SYNC_EVERY == 0
  assert "SIGTERM received" in log0 and "SIGTERM received" not in log1
  assert "JAX process 0 of 2" in log0 and "JAX process 1 of 2" in log1
  # Per-host shards: each process read one of the two photos.
  assert "every process reads all" not in log0 + log1
  # Only process 0 writes summaries and the config.
  events = [f for f in os.listdir(multi) if f.startswith("events.out")]
  assert len(events) == 1 and os.path.exists(os.path.join(multi, "config.json"))

  # Damage the newest step; the next pair falls back to the one before.
  os.remove(os.path.join(directory, str(term_step), "histogram",
                         "manifest.ocdbt"))
  pair, logs = _start_pair(multi, photos, STEPS, cache,
                           str(tmp_path / "second"))
  log0, log1 = _wait(pair, logs)
  for log in (log0, log1):
    assert f"Checkpoint step {term_step} in" in log
    assert "cannot be restored" in log
    assert f"Resumed stage hist from step {term_step - 1}." in log
  assert f"{term_step}.corrupt" in os.listdir(directory)
  assert checkpoints_lib.checkpoint_networks(multi)[0] == STEPS
  _wait([straight], [single_log])

  got, want = _histogram_leaves(multi), _histogram_leaves(single)
  assert len(got) == len(want) > 0
  for a, b in zip(got, want):
    np.testing.assert_array_equal(a, b)
  # The runs trained: the first kept step differs from the last.
  first = _histogram_leaves(multi, step=checkpoints_lib.checkpoint_networks(multi)[0] - 2)
  assert any(not np.array_equal(a, b) for a, b in zip(got, first))
