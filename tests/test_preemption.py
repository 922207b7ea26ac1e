"""Killed and resumed runs reach the same parameters, bit for bit, on CPU.

The `hist` stage of configs/test.py runs through `python -m ihc_jax.main`
with a checkpoint after every step. One run goes straight through; a second
workdir is trained by a chain of processes: the first three are killed with
SIGKILL and the fourth is stopped with SIGTERM, each as soon as a checkpoint
step from a seeded random schedule appears (so the kill lands wherever the
process is: in a step, in a save, between the two), and each next process
resumes from the newest committed checkpoint. Every checkpoint step the
chain wrote must equal the straight run's step exactly (np.array_equal),
and the SIGTERM'd process must exit with status 0 after saving the step it
was at.

Determinism comes from: the data stream restarting at batch `start_step`
(`create_datasets(start_step=...)`), the per-step key `fold_in(key, step)`,
and the whole state (networks, optimizer states, step, non-finite streak)
being checkpointed.
"""

import os
import random
import re
import signal
import subprocess
import sys
import time

import jax
import numpy as np

from ihc_jax.trainers import checkpoints as checkpoints_lib

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STEPS = 18


def _command(workdir):
  return [sys.executable, "-m", "ihc_jax.main", "--config=configs/test.py:hist",
          f"--workdir={workdir}", f"--config.num_train_steps={STEPS}",
          "--config.checkpoint.every_steps=1",
          "--config.checkpoint.max_to_keep=100", "--config.log.every_steps=1"]


def _env(cache):
  return dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS="",
              JAX_COMPILATION_CACHE_DIR=cache,
              JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
              PYTHONPATH=REPO, TF_CPP_MIN_LOG_LEVEL="2")


def _committed_steps(workdir):
  directory = os.path.join(workdir, checkpoints_lib.CHECKPOINT_DIR)
  if not os.path.isdir(directory):
    return []
  return sorted(int(n) for n in os.listdir(directory) if n.isdigit())


def _start(workdir, log_path, cache):
  log = open(log_path, "a")  # pylint: disable=consider-using-with
  process = subprocess.Popen(_command(workdir), cwd=REPO, env=_env(cache),
                             stdout=log, stderr=subprocess.STDOUT)
  log.close()
  return process


def _interrupt_at(process, workdir, step, signum, log_path):
  """Sends `signum` once checkpoint `step` exists; returns the exit status."""
  deadline = time.time() + 300
  while not any(s >= step for s in _committed_steps(workdir)):
    if process.poll() is not None or time.time() > deadline:
      process.kill()
      with open(log_path) as f:
        raise AssertionError(f"run ended before step {step}:\n"
                             f"{f.read()[-3000:]}")
    time.sleep(0.01)
  process.send_signal(signum)
  return process.wait(timeout=120)


def _variables(workdir, step):
  return [np.asarray(x) for x in jax.tree.leaves(
      checkpoints_lib.restore_network_variables(workdir, "histogram", step=step))]


def test_sigkill_and_sigterm_resume_bit_for_bit(tmp_path):
  cache = str(tmp_path / "jax_cache")
  straight, chain = str(tmp_path / "straight"), str(tmp_path / "chain")
  straight_log, chain_log = str(tmp_path / "straight.log"), str(
      tmp_path / "chain.log")
  reference = _start(straight, straight_log, cache)

  # Seeded "random" interruption points, at least 3 steps apart.
  rng = random.Random(8)
  first = rng.randint(2, 4)
  schedule = [(first, signal.SIGKILL)]
  for signum in (signal.SIGKILL, signal.SIGKILL, signal.SIGTERM):
    schedule.append((schedule[-1][0] + rng.randint(3, 4), signum))
  resumed_from = []
  for target, signum in schedule:
    resumed_from.append(max(_committed_steps(chain), default=0))
    process = _start(chain, chain_log, cache)
    status = _interrupt_at(process, chain, target, signum, chain_log)
    if signum == signal.SIGKILL:
      assert status == -signal.SIGKILL
    else:
      assert status == 0, "SIGTERM must end the run cleanly"

  with open(chain_log) as f:
    log = f.read()
  stopped = re.findall(r"Stopped by SIGTERM at step (\d+); checkpoint saved",
                       log)
  assert len(stopped) == 1, log[-3000:]
  term_step = int(stopped[0])
  assert term_step >= schedule[-1][0]
  # The SIGTERM'd process saved the step it was at, and went no further.
  assert _committed_steps(chain)[-1] == term_step
  assert term_step < STEPS
  # Every process after the first resumed from a checkpoint.
  assert resumed_from[0] == 0 and all(s > 0 for s in resumed_from[1:])
  assert len(re.findall(r"Resumed stage hist from step (\d+)", log)) == 3

  assert reference.wait(timeout=300) == 0
  checked = 0
  for step in _committed_steps(chain):
    want = _variables(straight, step)
    for got, expected in zip(_variables(chain, step), want, strict=True):
      np.testing.assert_array_equal(got, expected, err_msg=f"step {step}")
    checked += 1
  assert checked == term_step  # every step 1..term_step was saved
  # The parameters did change over the run (the comparison is not vacuous).
  assert not np.array_equal(_variables(straight, 1)[0],
                            _variables(straight, term_step)[0])
