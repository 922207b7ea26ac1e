"""Damaged checkpoints fall back to the newest readable step.

The checkpoint tests save a tiny two-array state (no network, nothing to
compile) with the real `StageCheckpointer`, damage the newest step the ways a
full disk or an interrupted copy does, and check that
`resilience.restore_newest_intact` logs the step and the problem, moves the
step aside to `<step>.corrupt` and returns the previous step. (Config errors
and the NaN/Inf guard are tested in tests/test_configs.py and
tests/test_trainers_common.py.)
"""

import logging
import os
import shutil

import numpy as np
import optax
import pytest

from ihc_jax.trainers import checkpoints as checkpoints_lib
from ihc_jax.trainers import train_state as train_state_lib
from ihc_jax.trainers import resilience

_OPTIMIZERS = {"net": optax.sgd(0.1)}


def tiny_state(value: float, step: int) -> train_state_lib.TrainState:
  state = train_state_lib.init_state(
      {"net": {"params": {"w": np.full((4, 64), value, np.float32),
                          "b": np.full((3,), -value, np.float32)}}},
      _OPTIMIZERS)
  return state.replace(step=np.int32(step))


@pytest.fixture
def three_steps(tmp_path):
  """A checkpoint directory with steps 1, 2, 3 holding w = 1, 2, 3."""
  checkpointer = checkpoints_lib.StageCheckpointer(str(tmp_path), "toy", max_to_keep=5)
  for step in (1, 2, 3):
    checkpointer.save(tiny_state(float(step), step))
  yield checkpointer, os.path.join(str(tmp_path), checkpoints_lib.CHECKPOINT_DIR)
  checkpointer.close()


def _largest_file(root):
  files = [os.path.join(d, f) for d, _, names in os.walk(root) for f in names]
  return max(files, key=os.path.getsize)


def _delete_manifest(step_dir):
  os.remove(os.path.join(step_dir, "net", "manifest.ocdbt"))


def _truncate_data(step_dir):
  # The largest file of the network item holds the array data.
  path = _largest_file(os.path.join(step_dir, "net"))
  size = os.path.getsize(path)
  with open(path, "r+b") as f:
    f.truncate(size // 2)


def _delete_item(step_dir):
  # pylint: disable-next=protected-access
  shutil.rmtree(os.path.join(step_dir, checkpoints_lib._OPTIMIZER_ITEM))


@pytest.mark.parametrize("damage", [_delete_manifest, _truncate_data,
                                    _delete_item])
def test_damaged_newest_step_falls_back_and_is_moved_aside(three_steps, damage,
                                                           caplog):
  checkpointer, directory = three_steps
  damage(os.path.join(directory, "3"))
  with caplog.at_level(logging.WARNING):
    state = resilience.restore_newest_intact(checkpointer, tiny_state(0.0, 0))
  assert int(state.step) == 2
  np.testing.assert_array_equal(state.variables["net"]["params"]["w"],
                                np.full((4, 64), 2.0, np.float32))
  assert sorted(os.listdir(directory)) == ["1", "2", "3.corrupt"]
  assert checkpointer.latest_step() == 2  # the manager forgot step 3
  messages = [r.getMessage() for r in caplog.records]
  assert any("step 3" in m and "cannot be restored" in m for m in messages)
  assert any("3.corrupt" in m and "resuming from step 2" in m
             for m in messages)
  # Step 3 can be saved again; the damaged copy stays aside.
  checkpointer.save(tiny_state(30.0, 3))
  assert sorted(os.listdir(directory)) == ["1", "2", "3", "3.corrupt"]
  again = resilience.restore_newest_intact(checkpointer, tiny_state(0.0, 0))
  assert float(again.variables["net"]["params"]["w"][0, 0]) == 30.0


def test_two_damaged_steps_fall_back_twice(three_steps):
  checkpointer, directory = three_steps
  _delete_manifest(os.path.join(directory, "3"))
  _truncate_data(os.path.join(directory, "2"))
  state = resilience.restore_newest_intact(checkpointer, tiny_state(0.0, 0))
  assert int(state.step) == 1
  assert sorted(os.listdir(directory)) == ["1", "2.corrupt", "3.corrupt"]


def test_uncommitted_tmp_directory_is_ignored(three_steps):
  checkpointer, directory = three_steps
  # A save killed half way: Orbax's tmp directory, never renamed.
  shutil.copytree(os.path.join(directory, "3"),
                  os.path.join(directory, "4.orbax-checkpoint-tmp"))
  _delete_manifest(os.path.join(directory, "4.orbax-checkpoint-tmp"))
  checkpointer.manager.reload()
  state = resilience.restore_newest_intact(checkpointer, tiny_state(0.0, 0))
  assert int(state.step) == 3
  assert "3" in os.listdir(directory)


def test_nothing_readable_raises_and_moves_nothing(three_steps):
  checkpointer, directory = three_steps
  # A target whose structure matches no step (a changed config) fails on
  # every step: the checkpoints must stay where they are.
  wrong = train_state_lib.init_state({"other": {"params": {"w": np.zeros(2)}}},
                            {"other": optax.sgd(0.1)})
  with pytest.raises(Exception):  # Orbax's own error for the newest step.
    resilience.restore_newest_intact(checkpointer, wrong)
  assert sorted(os.listdir(directory)) == ["1", "2", "3"]


def test_move_aside_never_overwrites(tmp_path):
  for _ in range(2):
    os.makedirs(tmp_path / "7")
    resilience.move_aside(str(tmp_path / "7"))
  assert sorted(os.listdir(tmp_path)) == ["7.corrupt", "7.corrupt.1"]


def test_no_checkpoint_is_file_not_found(tmp_path):
  checkpointer = checkpoints_lib.StageCheckpointer(str(tmp_path), "toy")
  with pytest.raises(FileNotFoundError, match="no checkpoint"):
    resilience.restore_newest_intact(checkpointer, tiny_state(0.0, 0))
  checkpointer.close()
