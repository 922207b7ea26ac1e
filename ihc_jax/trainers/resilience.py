"""Resuming from damaged checkpoints: fall back to the newest one that reads.

Orbax writes a step into `<step>.orbax-checkpoint-tmp` and renames it to
`<step>` only when every item is written, so a process killed while saving
leaves a tmp directory that `CheckpointManager` never lists. A committed step
can still be damaged afterwards (a file truncated or deleted by a full disk,
a copy that stopped half way, a bad sync to a bucket). Such a step fails to
restore.

`restore_newest_intact` tries the committed steps from the newest down. The
first one that restores is used; every newer step that failed is logged with
its error and moved aside to `<step>.corrupt` (never deleted, so nothing is
lost; Orbax does not list it, and the step number is free to be saved again).
When no step restores, nothing is moved and the newest step's error is
raised: a run whose config no longer matches its checkpoints fails the same
way on every step, and must not have its checkpoints renamed.

In a multi-process run every process tries the same steps in the same order
on the shared directory; process 0 alone renames, and all processes wait for
it before they go on.
"""

from __future__ import annotations

import os
from typing import Any, Protocol

from absl import logging
import jax
from jax.experimental import multihost_utils

CORRUPT_SUFFIX = ".corrupt"


class Checkpointer(Protocol):
  """What `restore_newest_intact` needs (`common.StageCheckpointer` has it)."""

  manager: Any

  def restore(self, target: Any, step: int | None = None) -> Any:
    ...


def move_aside(step_dir: str) -> str:
  """Renames a step directory to `<step_dir>.corrupt` (or `.corrupt.<n>`).

  Args:
    step_dir: the directory of one checkpoint step.

  Returns:
    The new path.
  """
  target = step_dir + CORRUPT_SUFFIX
  n = 1
  while os.path.exists(target):
    target = f"{step_dir}{CORRUPT_SUFFIX}.{n}"
    n += 1
  os.rename(step_dir, target)
  return target


def _sync(name: str) -> None:
  if jax.process_count() > 1:
    multihost_utils.sync_global_devices(name)


def restore_newest_intact(checkpointer: Checkpointer, target: Any) -> Any:
  """Restores the newest checkpoint step that can be read.

  Args:
    checkpointer: holds `manager` (an Orbax `CheckpointManager`) and
      `restore(target, step)`.
    target: the structure (and shardings) to restore into.

  Returns:
    What `checkpointer.restore` returns for the newest readable step.

  Raises:
    FileNotFoundError: the directory holds no committed step.
    Exception: the error of the newest step when no step can be restored
      (nothing is moved aside then).
  """
  manager = checkpointer.manager
  steps = sorted(manager.all_steps(), reverse=True)
  if not steps:
    raise FileNotFoundError(f"no checkpoint in {manager.directory}")
  failed: list[tuple[int, Exception]] = []
  restored = None
  for step in steps:
    try:
      restored = checkpointer.restore(target, step=step)
    # Any failure to read a step makes it unusable; what went wrong is
    # logged below, and re-raised when no step at all can be read.
    except Exception as error:  # pylint: disable=broad-exception-caught
      logging.error("Checkpoint step %d in %s cannot be restored: %s: %s",
                    step, manager.directory, type(error).__name__, error)
      failed.append((step, error))
      continue
    break
  if restored is None:
    logging.error("No checkpoint step in %s can be restored; none moved "
                  "aside.", manager.directory)
    raise failed[0][1]
  if failed:
    if jax.process_index() == 0:
      for step, _ in failed:
        moved = move_aside(os.path.join(str(manager.directory), str(step)))
        logging.warning("Moved the unreadable checkpoint step %d aside to %s; "
                        "resuming from step %d.", step, moved,
                        steps[len(failed)])
    _sync("ihc_jax_move_aside_corrupt_checkpoints")
    manager.reload()
  return restored
