"""Machinery shared by the four training stages (ihn, hist, color, fusion).

What lives here:

* the device mesh (one `('data',)` axis over all devices) and shardings;
* `TrainState`: per trainable network its Flax variables and optimizer state,
  plus the step and the count of consecutive non-finite steps. Frozen networks
  live in a separate pytree that no optimizer sees;
* `guarded_update`: applies the per-network optimizers inside a jitted step and
  keeps the old state when the loss, a gradient or an updated parameter is not
  finite;
* checkpoints: one Orbax `CheckpointManager` per stage, each network a
  separately restorable item, so a later stage restores one network of an
  earlier stage (`restore_network_variables`);
* config validation against the stage's default config, before any compute;
* `run_stage`: the training loop (resume, logging, image grids, evaluation,
  SIGTERM, metrics summary).

Restore order (written down once, here, and followed by `run_stage`):

1. an existing checkpoint in `<workdir>/checkpoints` (resume; everything:
   networks, optimizer states, step);
2. otherwise `config.init_from.<network>`: a stage workdir whose checkpoint
   holds that network; only its variables are taken, optimizers start fresh;
3. otherwise fresh initialisation from `config.seed`.

Frozen networks always come from `config.frozen.<network>` (a stage workdir).
"""

from __future__ import annotations

import collections
import dataclasses
import json
import os
import signal
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

from absl import logging
from clu import metric_writers
from clu import periodic_actions
import flax
import jax
import jax.numpy as jnp
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec
import ml_collections
import numpy as np
import optax
import orbax.checkpoint as ocp

from ihc_jax.trainers import resilience

STAGES = ("ihn", "hist", "color", "fusion")
REQUIRED_PREFIX = "REQUIRED"
CONFIG_FILE = "config.json"
CHECKPOINT_DIR = "checkpoints"
_META_ITEM = "meta"
_OPTIMIZER_ITEM = "optimizer_state"

Variables = dict[str, Any]
Metrics = dict[str, jax.Array]
TrainStep = Callable[..., tuple["TrainState", Metrics]]


class NonFiniteError(RuntimeError):
  """Raised when too many consecutive steps had a non-finite loss or gradient."""


# ----------------------------------------------------------------------------
# Mesh and shardings.


def make_mesh(devices: Sequence[jax.Device] | None = None) -> Mesh:
  """A one-axis `('data',)` mesh over all (or the given) devices."""
  devices = jax.devices() if devices is None else list(devices)
  return Mesh(np.asarray(devices), ("data",))


def replicated(mesh: Mesh) -> NamedSharding:
  """Sharding that keeps a full copy on every device of `mesh`."""
  return NamedSharding(mesh, PartitionSpec())


def replicate(tree: Any, mesh: Mesh) -> Any:
  """Places every array of `tree` fully replicated on `mesh`."""
  # Through the host: arrays committed to one local device (as restored from
  # a checkpoint) cannot be put on other processes' devices directly.
  return jax.device_put(jax.device_get(tree), replicated(mesh))


# ----------------------------------------------------------------------------
# State and optimizers.


@flax.struct.dataclass
class TrainState:
  """Everything a stage trains.

  Attributes:
    step: int32 scalar, number of updates tried so far (skipped ones count).
    variables: network name -> Flax variables {'params', 'batch_stats'?}.
    opt_states: network name -> optax state of that network's optimizer.
    nonfinite_streak: int32 scalar, consecutive skipped (non-finite) steps.
  """
  step: jax.Array
  variables: dict[str, Variables]
  opt_states: dict[str, Any]
  nonfinite_streak: jax.Array


def make_learning_rate(optim_config: ml_collections.ConfigDict,
                       num_train_steps: int) -> optax.Schedule:
  """Learning-rate schedule of one network.

  Args:
    optim_config: `learning_rate`, `end_learning_rate`, `schedule` ('constant',
      'polynomial' (power `power`) or 'linear_decay' (constant for the first
      `decay_start` fraction of the run, then linear to `end_learning_rate`,
      BicycleGAN's schedule)).
    num_train_steps: length of the run.

  Returns:
    An optax schedule.
  """
  lr = optim_config.learning_rate
  end = optim_config.end_learning_rate
  steps = max(1, num_train_steps)
  if optim_config.schedule == "constant":
    return optax.constant_schedule(lr)
  if optim_config.schedule == "polynomial":
    return optax.polynomial_schedule(lr, end, optim_config.power, steps)
  if optim_config.schedule == "linear_decay":
    start = int(steps * optim_config.decay_start)
    return optax.join_schedules(
        [optax.constant_schedule(lr),
         optax.linear_schedule(lr, end, max(1, steps - start))], [start])
  raise ValueError(f"optim schedule {optim_config.schedule!r} is not one of "
                   "'constant', 'polynomial', 'linear_decay'")


def make_optimizer(optim_config: ml_collections.ConfigDict,
                   num_train_steps: int) -> optax.GradientTransformation:
  """Adam with the configured schedule (and optional gradient clipping)."""
  tx = optax.adam(make_learning_rate(optim_config, num_train_steps),
                  b1=optim_config.b1, b2=optim_config.b2)
  if optim_config.grad_clip_norm > 0:
    tx = optax.chain(optax.clip_by_global_norm(optim_config.grad_clip_norm), tx)
  return tx


def init_state(variables: Mapping[str, Variables],
               optimizers: Mapping[str, optax.GradientTransformation]
               ) -> TrainState:
  """A step-0 state for the trainable networks `variables`."""
  variables = {name: dict(v) for name, v in variables.items()}
  return TrainState(
      step=jnp.zeros((), jnp.int32),
      variables=variables,
      opt_states={name: optimizers[name].init(variables[name]["params"])
                  for name in variables},
      nonfinite_streak=jnp.zeros((), jnp.int32))


def all_finite(tree: Any) -> jax.Array:
  """Scalar bool: every element of every floating array of `tree` is finite."""
  leaves = [jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)
            if jnp.issubdtype(jnp.asarray(x).dtype, jnp.floating)]
  if not leaves:
    return jnp.asarray(True)
  return jnp.all(jnp.stack(leaves))


def guarded_update(state: TrainState,
                   optimizers: Mapping[str, optax.GradientTransformation],
                   grads: Mapping[str, Any],
                   new_batch_stats: Mapping[str, Any],
                   losses: Sequence[jax.Array]) -> tuple[TrainState, Metrics]:
  """Applies one optimizer step per network, or none when anything is not finite.

  Runs inside a jitted train step. A step whose losses, gradients or updated
  parameters contain NaN/Inf keeps the previous state (networks, batch
  statistics, optimizer states) and only increments `step` and
  `nonfinite_streak`.

  Args:
    state: the state before the step.
    optimizers: network name -> optax transformation (static).
    grads: network name -> gradient pytree of its params.
    new_batch_stats: network name -> updated batch statistics (networks
      without BatchNorm may be absent).
    losses: scalars that must be finite (e.g. the E+G loss and the D loss).

  Returns:
    (new state, {'nonfinite': 1.0 if the update was skipped else 0.0}).
  """
  new_variables = dict(state.variables)
  new_opt_states = dict(state.opt_states)
  for name, grad in grads.items():
    params = state.variables[name]["params"]
    updates, new_opt_states[name] = optimizers[name].update(
        grad, state.opt_states[name], params)
    variables = dict(state.variables[name])
    variables["params"] = optax.apply_updates(params, updates)
    if name in new_batch_stats:
      variables["batch_stats"] = new_batch_stats[name]
    new_variables[name] = variables
  ok = jnp.logical_and(all_finite(list(losses)), all_finite(dict(grads)))
  ok = jnp.logical_and(ok, all_finite(new_variables))
  keep = lambda new, old: jax.tree.map(lambda n, o: jnp.where(ok, n, o), new, old)
  new_state = TrainState(
      step=state.step + 1,
      variables=keep(new_variables, state.variables),
      opt_states=keep(new_opt_states, state.opt_states),
      nonfinite_streak=jnp.where(ok, 0, state.nonfinite_streak + 1))
  return new_state, {"nonfinite": 1.0 - ok.astype(jnp.float32)}


# ----------------------------------------------------------------------------
# Checkpoints.


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


# ----------------------------------------------------------------------------
# Config validation.


def _check_section(config: Any, default: Any, path: str,
                   choices: Mapping[str, Sequence[Any]]) -> None:
  for key in config.keys():
    name = f"{path}{key}"
    if key not in default:
      raise ValueError(f"unknown config key {name!r}; valid keys at this level: "
                       f"{sorted(default.keys())}")
    value, expected = config[key], default[key]
    if isinstance(expected, (ml_collections.ConfigDict, dict)):
      if not isinstance(value, (ml_collections.ConfigDict, dict)):
        raise TypeError(f"config key {name!r} must be a section, got "
                        f"{type(value).__name__}")
      _check_section(value, expected, name + ".", choices)
      continue
    if expected is not None and value is not None:
      ok = isinstance(value, type(expected))
      if isinstance(expected, float) and isinstance(value, int):
        ok = not isinstance(value, bool)
      if isinstance(expected, (tuple, list)) and isinstance(value, (tuple, list)):
        ok = True
      if isinstance(expected, bool) != isinstance(value, bool):
        ok = False
      if not ok:
        raise TypeError(f"config key {name!r} must be {type(expected).__name__}, "
                        f"got {type(value).__name__} {value!r}")
    for pattern, valid in choices.items():
      if _matches(pattern, name) and value not in valid:
        raise ValueError(f"config key {name!r} is {value!r}; valid choices: "
                         f"{list(valid)}")


def _matches(pattern: str, name: str) -> bool:
  parts, names = pattern.split("."), name.split(".")
  return len(parts) == len(names) and all(
      p in ("*", n) for p, n in zip(parts, names))


def validate_config(config: ml_collections.ConfigDict,
                    default: ml_collections.ConfigDict, *,
                    choices: Mapping[str, Sequence[Any]] = (),
                    required: Iterable[str] = ()) -> None:
  """Checks a stage config against its default before any compute.

  Args:
    config: the config to run.
    default: the stage's default config (keys and types are the schema).
    choices: dotted key (`*` matches any one level) -> allowed values.
    required: dotted keys that must hold a set path: a value starting with
      "REQUIRED" (the placeholder of the default configs) or empty fails.

  Raises:
    ValueError / TypeError: naming the key and the valid keys, types or
      choices.
  """
  _check_section(config, default, "", dict(choices))
  missing = []
  for key in required:
    value = config
    for part in key.split("."):
      value = value[part]
    if not value or str(value).startswith(REQUIRED_PREFIX):
      missing.append(f"{key!r} ({value!r})")
  if missing:
    raise ValueError(f"config keys must be set: {', '.join(missing)}")


def _flatten(config: Any, prefix: str = "") -> dict[str, Any]:
  out = {}
  for key in config.keys():
    value = config[key]
    if isinstance(value, (ml_collections.ConfigDict, dict)):
      out.update(_flatten(value, f"{prefix}{key}."))
    else:
      out[f"{prefix}{key}"] = value
  return out


def hparams(config: ml_collections.ConfigDict) -> dict[str, Any]:
  """Flat {dotted key: scalar} view of a config for `write_hparams`."""
  out = {}
  for key, value in _flatten(config).items():
    if isinstance(value, (bool, int, float, str)) or value is None:
      out[key] = "None" if value is None else value
    else:
      out[key] = str(value)
  return out


# ----------------------------------------------------------------------------
# Image grids.


def image_grid(columns: Sequence[tuple[str, Any]], max_rows: int = 4
               ) -> np.ndarray:
  """Tiles images into one [rows*H, cols*W, 3] uint8 grid.

  Args:
    columns: (title, [B, H, W, 1 or 3] images on the [0, 1] scale); values
      outside [0, 1] are clipped, gray is repeated to RGB.
    max_rows: at most this many examples (rows).

  Returns:
    uint8 array, one row per example, one column per entry of `columns`.
  """
  tiles = []
  for _, images in columns:
    images = np.asarray(jax.device_get(images), np.float32)[:max_rows]
    if images.shape[-1] == 1:
      images = np.repeat(images, 3, axis=-1)
    tiles.append(np.concatenate(list(images), axis=0))
  grid = np.concatenate(tiles, axis=1)
  return (np.clip(grid, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def save_png(path: str, image: np.ndarray) -> None:
  """Writes a uint8 [H, W, 3] array as PNG."""
  from PIL import Image  # pylint: disable=g-import-not-at-top
  os.makedirs(os.path.dirname(path), exist_ok=True)
  Image.fromarray(image).save(path)


# ----------------------------------------------------------------------------
# SIGTERM.


class _StopOnSigterm:
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

  def __exit__(self, *exc):
    if self._previous is not None:
      signal.signal(signal.SIGTERM, self._previous)
    return False


# ----------------------------------------------------------------------------
# The loop.


@dataclasses.dataclass
class Stage:
  """What a trainer hands to `run_stage`.

  Attributes:
    name: stage name ('ihn', 'hist', 'color', 'fusion').
    init_variables: key -> {network: variables} (fresh init, host arrays).
    optimizers: network name -> optax transformation.
    train_step: `(state, batch, frozen, rng) -> (state, metrics)`; metrics are
      scalars (every weighted loss term, 'loss', 'nonfinite').
    frozen: pytree of frozen variables passed to every step.
    eval_step: `(state, batch, frozen, rng) -> metrics`, per-example [B]
      values (e.g. PSNR/SSIM; see `EVAL_CONTRACT`), or None.
    sample_step: `(state, batch, frozen, rng) -> [images]`, the columns of
      the image grid ([B, H, W, 1 or 3] each, [0, 1] scale), or None.
    sample_titles: the titles of those columns.
  """
  name: str
  init_variables: Callable[[jax.Array], dict[str, Variables]]
  optimizers: dict[str, optax.GradientTransformation]
  train_step: TrainStep
  frozen: Any
  eval_step: Callable[..., Metrics] | None = None
  sample_step: Callable[..., list[jax.Array]] | None = None
  sample_titles: tuple[str, ...] = ()


def _numpy_iterator(ds: Any) -> Iterator[dict[str, np.ndarray]]:
  if hasattr(ds, "as_numpy_iterator"):
    return ds.as_numpy_iterator()
  return iter(ds)


def shard(batch: Mapping[str, Any], mesh: Mesh) -> dict[str, jax.Array]:
  """Places a host batch on the mesh, split along the batch axis."""
  from ihc_jax import input_pipeline  # pylint: disable=g-import-not-at-top
  return input_pipeline.shard_batch(dict(batch), mesh)


EVAL_CONTRACT = (
    "eval_step(state, batch, frozen, rng) must return a dict name -> "
    "per-example float32 array of shape [B] (B = the global eval batch, "
    "e.g. metrics.psnr(..., reduction='none')); evaluate() averages it over "
    "the examples whose batch['mask'] is 1")


def _masked_sums(metrics: Mapping[str, jax.Array], mask: jax.Array
                 ) -> tuple[dict[str, jax.Array], jax.Array]:
  """(per metric sum over real examples, number of real examples).

  `where`, not a product: a padded (all-zero) example may give inf or NaN
  (PSNR of two equal images), and 0 * inf is NaN.
  """
  real = mask > 0
  sums = {key: jnp.sum(jnp.where(real, value.astype(jnp.float32), 0.0))
          for key, value in metrics.items()}
  return sums, jnp.sum(real.astype(jnp.float32))


def _check_per_example(metrics: Mapping[str, Any], batch_size: int) -> None:
  if not isinstance(metrics, Mapping):
    raise TypeError(f"eval_step returned {type(metrics).__name__}; "
                    f"{EVAL_CONTRACT}")
  for key, value in metrics.items():
    shape = tuple(np.shape(value))
    if shape != (batch_size,):
      raise ValueError(
          f"eval metric {key!r} has shape {shape}, expected ({batch_size},): "
          f"{EVAL_CONTRACT}")


def _agree_on_batches(eval_ds: Any) -> int | None:
  """The number of eval batches; on several processes checks they agree."""
  cardinality = None
  if hasattr(eval_ds, "cardinality"):
    cardinality = int(eval_ds.cardinality())
    cardinality = cardinality if cardinality >= 0 else None
  if jax.process_count() > 1:
    # Each eval batch is a collective step: hosts with different counts hang.
    multihost_utils.assert_equal(
        np.int64(-1 if cardinality is None else cardinality),
        "the eval datasets of the processes have different numbers of "
        "batches; build them with input_pipeline.create_datasets")
  return cardinality


def evaluate(stage: Stage, state: TrainState, eval_ds: Any, mesh: Mesh,
             num_batches: int, rng: jax.Array, eval_step: Callable
             ) -> dict[str, float]:
  """Exact per-example means of `eval_step` metrics over held-out batches.

  Each batch is a dict of per-host arrays with an optional `mask` [b]
  (1.0 real example, 0.0 padding; absent -> all real), as
  `input_pipeline.create_datasets` makes them: every host has the same
  number of batches of the same shape, so every host runs the same steps.

  Args:
    stage: the stage (its `frozen` is passed to `eval_step`).
    state: the train state.
    eval_ds: the host's eval batches (tf.data.Dataset or an iterable).
    mesh: the device mesh.
    num_batches: at most this many batches (<= 0: all of them).
    rng: folded with the batch index for each step.
    eval_step: `(state, batch, frozen, rng) -> {name: [B] per-example}`.

  Returns:
    {"eval/<name>": sum over real examples / their number}, the same for
    any batch size and any number of processes.

  Raises:
    ValueError: a metric is not per-example (see `EVAL_CONTRACT`), or the
      eval set holds no real example.
  """
  total = _agree_on_batches(eval_ds)
  if total is not None and 0 < num_batches < total:
    logging.info("Evaluating on the first %d of %d eval batches.",
                 num_batches, total)
  # Replicated sums: every process can read them without a gather.
  masked_sums = jax.jit(_masked_sums, out_shardings=replicated(mesh))
  sums: dict[str, float] = collections.defaultdict(float)
  count = 0.0
  for i, batch in enumerate(_numpy_iterator(eval_ds)):
    if 0 < num_batches <= i:
      break
    batch = dict(batch)
    if "mask" not in batch:
      batch["mask"] = np.ones(len(next(iter(batch.values()))), np.float32)
    sharded = shard(batch, mesh)
    metrics = eval_step(state, sharded, stage.frozen,
                        jax.random.fold_in(rng, i))
    _check_per_example(metrics, sharded["mask"].shape[0])
    batch_sums, batch_count = jax.device_get(
        masked_sums(dict(metrics), sharded["mask"]))
    for key, value in batch_sums.items():
      sums[key] += float(value)
    count += float(batch_count)
  if count == 0:
    raise ValueError("the evaluation split yielded no (unmasked) example")
  return {f"eval/{k}": v / count for k, v in sums.items()}


def write_summary(workdir: str, stage: str, step: int,
                  metrics: Mapping[str, float]) -> None:
  """Writes `<workdir>/metrics_summary.json` and `.md`."""
  summary = {"stage": stage, "step": step,
             "metrics": {k: float(v) for k, v in sorted(metrics.items())}}
  with open(os.path.join(workdir, "metrics_summary.json"), "w") as f:
    json.dump(summary, f, indent=2)
  lines = [f"# Stage `{stage}`: metrics at step {step}", "",
           "| metric | value |", "|---|---|"]
  lines += [f"| {k} | {v:.4f} |" for k, v in summary["metrics"].items()]
  with open(os.path.join(workdir, "metrics_summary.md"), "w") as f:
    f.write("\n".join(lines) + "\n")


def run_stage(config: ml_collections.ConfigDict, workdir: str, stage: Stage,
              init_from: Mapping[str, str] | None = None,
              extra_summary: Callable[..., dict[str, float]] | None = None
              ) -> dict[str, float]:
  """Trains one stage: resume, loop, log, evaluate, checkpoint, summary.

  Args:
    config: the validated stage config (uses `seed`, `num_train_steps`,
      `data`, `log`, `eval`, `checkpoint`, `max_consecutive_nonfinite`).
    workdir: the stage's workdir (checkpoints/, samples/, TensorBoard events,
      config.json, metrics_summary.*).
    stage: networks, optimizers and steps of the stage.
    init_from: network name -> stage workdir to initialise it from (used only
      when `workdir` holds no checkpoint); '' means none.
    extra_summary: optional `(state, eval_ds) -> metrics` added to the final
      summary (e.g. baselines).

  Returns:
    The final evaluation metrics.

  Raises:
    NonFiniteError: `config.max_consecutive_nonfinite` steps in a row were
      skipped; the last checkpoint is left as it was.
  """
  from ihc_jax import input_pipeline  # pylint: disable=g-import-not-at-top

  workdir = os.path.abspath(workdir)
  os.makedirs(workdir, exist_ok=True)
  mesh = make_mesh()
  is_chief = jax.process_index() == 0
  writer = metric_writers.create_default_writer(
      workdir, just_logging=not is_chief)
  base_key = jax.random.PRNGKey(config.seed)
  init_key, train_key, eval_key = jax.random.split(base_key, 3)

  checkpointer = StageCheckpointer(
      workdir, stage.name, max_to_keep=config.checkpoint.max_to_keep)
  summary_path = os.path.join(workdir, "metrics_summary.json")
  if ((checkpointer.latest_step() or 0) >= config.num_train_steps
      and os.path.exists(summary_path)):
    # A finished stage (e.g. a restarted chain): nothing to compile.
    logging.info("Stage %s in %s is finished.", stage.name, workdir)
    checkpointer.close()
    with open(summary_path) as f:
      return json.load(f)["metrics"]

  with _StopOnSigterm() as stop:
    # Restore order: workdir checkpoint, then init_from, then fresh init.
    state = init_state(stage.init_variables(init_key), stage.optimizers)
    if checkpointer.latest_step() is not None:
      # Falls back past damaged steps (moved aside to <step>.corrupt).
      state = resilience.restore_newest_intact(checkpointer, state)
      logging.info("Resumed stage %s from step %d.", stage.name,
                   int(state.step))
    else:
      variables = dict(state.variables)
      for network, path in (init_from or {}).items():
        if path:
          logging.info("Initialising %s from %s.", network, path)
          variables[network] = restore_network_variables(path, network)
      state = init_state(variables, stage.optimizers)
    state = replicate(state, mesh)
    frozen = replicate(stage.frozen, mesh)
    stage = dataclasses.replace(stage, frozen=frozen)
    start_step = int(jax.device_get(state.step))
    if is_chief and start_step == 0:
      save_stage_config(config, workdir)
    num_steps = config.num_train_steps

    train_ds, eval_ds = input_pipeline.create_datasets(
        config.data, seed=config.seed, start_step=start_step)
    train_iter = _numpy_iterator(train_ds)

    train_step = jax.jit(stage.train_step, donate_argnums=(0,))
    eval_step = jax.jit(stage.eval_step) if stage.eval_step else None
    sample_step = jax.jit(stage.sample_step) if stage.sample_step else None

    if start_step == 0:
      writer.write_hparams(hparams(config))
    report = periodic_actions.ReportProgress(
        num_train_steps=num_steps, writer=writer,
        every_steps=config.log.every_steps)
    pending: list[Metrics] = []
    eval_metrics: dict[str, float] = {}
    step = start_step
    sample_batch = None
    while step < num_steps:
      if stop.agreed():
        break
      batch = next(train_iter)
      sharded = shard(batch, mesh)
      if sample_batch is None:
        sample_batch = sharded
      with jax.profiler.StepTraceAnnotation("train", step_num=step):
        state, metrics = train_step(state, sharded, frozen,
                                    jax.random.fold_in(train_key, step))
      pending.append(metrics)
      step += 1
      report(step)
      streak = int(jax.device_get(state.nonfinite_streak))
      if streak >= config.max_consecutive_nonfinite:
        writer.flush()
        raise NonFiniteError(
            f"stage {stage.name}: {streak} consecutive steps had a non-finite "
            f"loss, gradient or update (step {step}); stopping. The last "
            f"checkpoint in {os.path.join(workdir, CHECKPOINT_DIR)} is intact.")
      if step % config.log.every_steps == 0 or step == num_steps:
        means = jax.tree.map(lambda *x: float(np.mean(x)),
                             *jax.device_get(pending))
        writer.write_scalars(step, {f"train/{k}": v for k, v in means.items()})
        pending = []
      if sample_step and (step % config.log.sample_every_steps == 0
                          or step == num_steps):
        columns = sample_step(state, sample_batch, frozen,
                              jax.random.fold_in(eval_key, step))
        # The batch axis spans every process: gather it (a collective, so
        # every process takes part) before reading it on the host.
        columns = multihost_utils.process_allgather(columns, tiled=True)
        grid = image_grid(list(zip(stage.sample_titles, columns)),
                          config.log.sample_rows)
        writer.write_images(step, {"samples": grid[None]})
        if is_chief:
          save_png(os.path.join(workdir, "samples", f"step_{step:07d}.png"),
                   grid)
      if eval_step and (step % config.eval.every_steps == 0
                        or step == num_steps):
        eval_metrics = evaluate(stage, state, eval_ds, mesh,
                                config.eval.num_batches, eval_key, eval_step)
        writer.write_scalars(step, eval_metrics)
      if step % config.checkpoint.every_steps == 0 or step == num_steps:
        checkpointer.save(state)
    if stop.agreed():
      if checkpointer.latest_step() != step:
        checkpointer.save(state)
      logging.warning("Stopped by SIGTERM at step %d; checkpoint saved.", step)
      checkpointer.close()
      writer.flush()
      return eval_metrics
    if checkpointer.latest_step() != step:
      checkpointer.save(state)
    if eval_step and not eval_metrics:
      eval_metrics = evaluate(stage, state, eval_ds, mesh,
                              config.eval.num_batches, eval_key, eval_step)
    if extra_summary is not None:
      eval_metrics = dict(eval_metrics, **extra_summary(state, eval_ds))
    if is_chief:
      write_summary(workdir, stage.name, step, eval_metrics)
    checkpointer.close()
    writer.flush()
  return eval_metrics
