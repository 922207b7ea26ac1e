"""Stage checkpoints (Orbax) and stage configs on disk.

One Orbax `CheckpointManager` per stage in `<workdir>/checkpoints`; every
network is its own item, so a later stage restores one network of an
earlier stage (`restore_network_variables`). The config a stage ran with is
`<workdir>/config.json` (`save_stage_config` / `load_stage_config`); frozen
networks are rebuilt from it (`load_frozen_networks`).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import ml_collections
import orbax.checkpoint as ocp

from ihc_jax.trainers.train_state import TrainState, Variables

CONFIG_FILE = "config.json"
CHECKPOINT_DIR = "checkpoints"
_META_ITEM = "meta"
_OPTIMIZER_ITEM = "optimizer_state"


def _checkpoint_manager(stage_workdir: str, *, read_only: bool = False,
                        max_to_keep: int | None = None) -> ocp.CheckpointManager:
  directory = os.path.join(os.path.abspath(stage_workdir), CHECKPOINT_DIR)
  # Readers open with create=False rather than read_only=True, which only
  # adds warnings.
  options = ocp.CheckpointManagerOptions(
      max_to_keep=max_to_keep, create=not read_only,
      enable_async_checkpointing=False)
  return ocp.CheckpointManager(directory, options=options)


class StageCheckpointer:
  """Saves and restores one stage's `TrainState` with Orbax.

  Items of a checkpoint: one `StandardSave` per network (its variables), one
  for all optimizer states, and a JSON `meta` item (stage, step, networks).
  """

  def __init__(self, workdir: str, stage: str, *, max_to_keep: int = 3):
    self.stage = stage
    self.manager = _checkpoint_manager(workdir, max_to_keep=max_to_keep)

  def latest_step(self) -> int | None:
    return self.manager.latest_step()

  def save(self, state: TrainState) -> None:
    """Saves `state` under its step (synchronously)."""
    step = int(jax.device_get(state.step))
    items = {name: ocp.args.StandardSave(v) for name, v in state.variables.items()}
    items[_OPTIMIZER_ITEM] = ocp.args.StandardSave(
        {"opt_states": state.opt_states,
         "nonfinite_streak": state.nonfinite_streak})
    items[_META_ITEM] = ocp.args.JsonSave(
        {"stage": self.stage, "step": step,
         "networks": sorted(state.variables)})
    self.manager.save(step, args=ocp.args.Composite(**items), force=True)
    self.manager.wait_until_finished()

  def restore(self, target: TrainState, step: int | None = None
              ) -> TrainState:
    """Restores a checkpoint (the latest by default) into `target`'s structure."""
    step = self.latest_step() if step is None else step
    if step is None:
      raise FileNotFoundError(f"no checkpoint in {self.manager.directory}")
    items = {name: ocp.args.StandardRestore(v)
             for name, v in target.variables.items()}
    items[_OPTIMIZER_ITEM] = ocp.args.StandardRestore(
        {"opt_states": target.opt_states,
         "nonfinite_streak": target.nonfinite_streak})
    restored = self.manager.restore(step, args=ocp.args.Composite(**items))
    return TrainState(
        step=jnp.asarray(step, jnp.int32),
        variables={name: restored[name] for name in target.variables},
        opt_states=restored[_OPTIMIZER_ITEM]["opt_states"],
        nonfinite_streak=restored[_OPTIMIZER_ITEM]["nonfinite_streak"])

  def close(self) -> None:
    self.manager.close()


def checkpoint_networks(stage_workdir: str, step: int | None = None
                        ) -> tuple[int, str, list[str]]:
  """(step, stage, network names) of a stage's checkpoint (latest by default).

  Raises:
    FileNotFoundError: `stage_workdir` holds no checkpoint.
  """
  directory = os.path.join(os.path.abspath(stage_workdir), CHECKPOINT_DIR)
  if not os.path.isdir(directory):
    raise FileNotFoundError(
        f"{stage_workdir!r} is not a trained stage workdir: {directory} does "
        "not exist")
  manager = _checkpoint_manager(stage_workdir, read_only=True)
  try:
    step = manager.latest_step() if step is None else step
    if step is None or step not in manager.all_steps():
      raise FileNotFoundError(
          f"no checkpoint{'' if step is None else f' at step {step}'} in "
          f"{directory} (steps: {list(manager.all_steps())})")
    meta = manager.restore(
        step, args=ocp.args.Composite(**{_META_ITEM: ocp.args.JsonRestore()}))
  finally:
    manager.close()
  return step, meta[_META_ITEM]["stage"], list(meta[_META_ITEM]["networks"])


def restore_network_variables(stage_workdir: str, network: str,
                              step: int | None = None) -> dict:
  """The Flax variables of one network from a stage's checkpoints.

  Args:
    stage_workdir: the workdir of a trained stage (holds `checkpoints/`).
    network: network name, e.g. 'ihn', 'histogram', 'encoder', 'generator',
      'discriminator', 'fusion'.
    step: checkpoint step; the latest by default.

  Returns:
    {'params': ..., 'batch_stats': ...} ('batch_stats' only where the network
    has BatchNorm) as jax arrays.

  Raises:
    FileNotFoundError: no checkpoint in `stage_workdir`.
    KeyError: the checkpoint has no such network (the message names the
      workdir, its stage and the networks it does have).
  """
  step, stage, networks = checkpoint_networks(stage_workdir, step)
  if network not in networks:
    raise KeyError(
        f"the checkpoint of stage {stage!r} in {stage_workdir!r} (step {step}) "
        f"has no network {network!r}; it has {networks}")
  manager = _checkpoint_manager(stage_workdir, read_only=True)
  try:
    restored = manager.restore(
        step, args=ocp.args.Composite(**{network: ocp.args.StandardRestore(
            # A checkpoint saved on other devices (a pod, several GPUs) is
            # read onto this process's first device.
            fallback_sharding=jax.sharding.SingleDeviceSharding(
                jax.local_devices()[0]))}))
  finally:
    manager.close()
  return dict(restored[network])


def save_stage_config(config: ml_collections.ConfigDict, workdir: str) -> None:
  """Writes the stage's config as JSON to `<workdir>/config.json`."""
  os.makedirs(workdir, exist_ok=True)
  with open(os.path.join(workdir, CONFIG_FILE), "w") as f:
    f.write(config.to_json_best_effort(indent=2, sort_keys=True))


def load_stage_config(stage_workdir: str) -> ml_collections.ConfigDict:
  """The config a stage was trained with (saved as JSON in its workdir).

  Includes model sizes (`model`), image size (`data.image_size`) and the
  halftone settings (`halftone`) the networks were trained on.

  Raises:
    FileNotFoundError: `<stage_workdir>/config.json` does not exist.
  """
  path = os.path.join(stage_workdir, CONFIG_FILE)
  if not os.path.exists(path):
    raise FileNotFoundError(
        f"{path} does not exist: {stage_workdir!r} is not the workdir of a "
        "stage trained by ihc_jax")
  with open(path) as f:
    return ml_collections.ConfigDict(json.load(f))


def load_frozen_networks(frozen_config: ml_collections.ConfigDict,
                         networks: Sequence[str]) -> dict[str, tuple[
                             ml_collections.ConfigDict, Variables]]:
  """Restores frozen networks named in `config.frozen`.

  Args:
    frozen_config: network name -> stage workdir.
    networks: which networks to restore.

  Returns:
    name -> (the model config section the network was trained with, its
    variables). The architecture comes from the training stage's saved
    config, so a frozen network is always rebuilt with the sizes it has.
  """
  out = {}
  for name in networks:
    workdir = frozen_config[name]
    stage_config = load_stage_config(workdir)
    if name not in stage_config.model:
      raise KeyError(f"config of {workdir!r} has no model.{name} section; it "
                     f"has {sorted(stage_config.model)}")
    out[name] = (stage_config.model[name],
                 restore_network_variables(workdir, name))
  return out
