"""SIGTERM handling agreed across processes."""

from __future__ import annotations

import signal
import threading

from absl import logging
import jax
from jax.experimental import multihost_utils
import numpy as np


class StopOnSigterm:
  """Turns SIGTERM into a flag the loop checks between steps."""

  def __init__(self):
    self.requested = threading.Event()
    self._previous = None

  def __enter__(self):
    if threading.current_thread() is threading.main_thread():
      self._previous = signal.signal(signal.SIGTERM, self._handle)
    return self

  def _handle(self, signum, frame):  # pylint: disable=unused-argument
    logging.warning("SIGTERM received: saving a checkpoint and stopping.")
    self.requested.set()

  def agreed(self) -> bool:
    """Whether any process got SIGTERM; all processes get the same answer.

    A collective in multi-process runs, called by every process at the same
    points of the loop: SIGTERM reaches the processes at different steps, and
    a process that stopped and saved alone would wait for the others forever.
    """
    requested = self.requested.is_set()
    if jax.process_count() > 1:
      requested = bool(np.any(multihost_utils.process_allgather(
          np.int32(requested))))
    return requested

  def agreed_at(self, step: int, every: int) -> bool:
    """`agreed()` at the steps where the processes compare notes.

    One process reads its own flag at every step (no collective, nothing
    to wait for). Several processes run the collective only at multiples of
    `every`, the same steps on all of them, and say False in between; a
    SIGTERM then stops the run at most `every - 1` steps later.
    """
    if jax.process_count() == 1:
      return self.requested.is_set()
    return step % every == 0 and self.agreed()

  def __exit__(self, *exc):
    if self._previous is not None:
      signal.signal(signal.SIGTERM, self._previous)
    return False
