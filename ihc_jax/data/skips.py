"""The unreadable images the input pipeline skipped (path -> reason).

Train and eval streams skip files that do not decode (truncated, empty, not
an image) and record them here, from tf.data's threads; the training loop
reports them (`skipped_files`, `num_skipped_files`).
"""

import threading

from absl import logging


class _SkipLog:
  """Thread-safe record of unreadable files (path -> reason)."""

  def __init__(self):
    self._lock = threading.Lock()
    self._reasons: dict[str, str] = {}

  def add(self, path: str, reason: str) -> bool:
    with self._lock:
      new = path not in self._reasons
      self._reasons[path] = reason
    if new:
      logging.warning("Skipping unreadable image %s: %s", path, reason)
    return new

  def paths(self) -> tuple[str, ...]:
    with self._lock:
      return tuple(sorted(self._reasons))

  def clear(self) -> None:
    with self._lock:
      self._reasons.clear()


_SKIP_LOG = _SkipLog()


def record(path: str, reason: str) -> bool:
  """Records an unreadable image (logged once per path); True if new."""
  return _SKIP_LOG.add(path, reason)


def skipped_files() -> tuple[str, ...]:
  """Sorted paths (or TFDS record ids) of the unreadable images seen so far."""
  return _SKIP_LOG.paths()


def num_skipped_files() -> int:
  """How many distinct unreadable images were skipped so far."""
  return len(_SKIP_LOG.paths())


def reset_skipped_files() -> None:
  """Forgets the skipped images (for tests and new runs)."""
  _SKIP_LOG.clear()
