"""The training loop shared by the four stages: `run_stage`.

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
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from absl import logging
from clu import metric_writers
from clu import periodic_actions
import jax
import jax.numpy as jnp
from jax.experimental import multihost_utils
from jax.sharding import Mesh
import ml_collections
import numpy as np
import optax

from ihc_jax.trainers import resilience
from ihc_jax.trainers.checkpoints import (CHECKPOINT_DIR, StageCheckpointer,
                                          restore_network_variables,
                                          save_stage_config)
from ihc_jax.trainers.config_schema import hparams
from ihc_jax.trainers.grids import image_grid, save_png
from ihc_jax.trainers.mesh import make_mesh, replicate, replicated
from ihc_jax.trainers.per_example import per_example, with_ids
from ihc_jax.trainers.preemption import StopOnSigterm
from ihc_jax.trainers.train_state import (Metrics, NonFiniteError, TrainState,
                                          Variables, init_state)

TrainStep = Callable[..., tuple[TrainState, Metrics]]


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
      values (e.g. PSNR/SSIM; see `EVAL_CONTRACT`), or None. The loop runs
      it through `per_example`: each example alone, with its own key.
    sample_step: `(state, batch, frozen, rng) -> [images]`, the columns of
      the image grid ([B, H, W, 1 or 3] each, [0, 1] scale), or None; also
      run per example.
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


def compile_eval_step(eval_step: Callable) -> Callable:
  """A stage's eval (or sample) step, run per example and jitted, as
  `evaluate` takes it. Make it once per run: each call compiles anew."""
  return jax.jit(per_example(eval_step))


def evaluate(stage: Stage, state: TrainState, eval_ds: Any, mesh: Mesh,
             num_batches: int, rng: jax.Array, eval_step: Callable
             ) -> dict[str, float]:
  """Exact per-example means of `eval_step` metrics over held-out batches.

  Each batch is a dict of per-host arrays with an optional `mask` [b]
  (1.0 real example, 0.0 padding; absent -> all real), as
  `input_pipeline.create_datasets` makes them: every host has the same
  number of batches of the same shape, so every host runs the same steps.
  Each example's random inputs (halftone screen, noise map, random codes)
  come from `fold_in(rng, id)`, its `id` being its index in the held-out
  split (`batch["id"]`; absent -> numbered here the way
  `input_pipeline`'s strided host shards are): the figures do not depend on
  the eval batch size or the number of processes.

  Args:
    stage: the stage (its `frozen` is passed to `eval_step`).
    state: the train state.
    eval_ds: the host's eval batches (tf.data.Dataset or an iterable).
    mesh: the device mesh.
    num_batches: at most this many batches (<= 0: all of them).
    rng: the eval key, folded with each example's id.
    eval_step: `compile_eval_step(stage.eval_step)`: `(state, batch, frozen,
      rng) -> {name: [B] per-example}` with per-example keys.

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
  start = 0
  for i, batch in enumerate(_numpy_iterator(eval_ds)):
    if 0 < num_batches <= i:
      break
    batch = with_ids(batch, start, jax.process_index(), jax.process_count())
    start += len(batch["id"])
    if "mask" not in batch:
      batch["mask"] = np.ones(len(batch["id"]), np.float32)
    sharded = shard(batch, mesh)
    metrics = eval_step(state, sharded, stage.frozen, rng)
    _check_per_example(metrics, sharded["mask"].shape[0])
    batch_sums, batch_count = jax.device_get(
        masked_sums(dict(metrics), sharded["mask"]))
    for key, value in batch_sums.items():
      sums[key] += float(value)
    count += float(batch_count)
  if count == 0:
    raise ValueError("the evaluation split yielded no (unmasked) example")
  return {f"eval/{k}": v / count for k, v in sums.items()}


def console(message: str) -> None:
  """A progress or result line for the person running the job (stdout).

  Library logs (Orbax, absl INFO) stay at WARNING unless `--verbosity` asks
  for more; these lines are what a run shows by default.
  """
  print(message, flush=True)


EVAL_HISTORY = "eval_history.jsonl"


def append_eval_history(workdir: str, step: int,
                        metrics: Mapping[str, Any]) -> None:
  """Appends one line {"step": ..., "metrics": {...}} to the workdir's
  `eval_history.jsonl`: the held-out curve of a run, readable without
  TensorBoard (`ihc_jax.tools.learning_curves`). A resumed run appends
  after its last line; an evaluation repeated at the same step (a restart
  before the next checkpoint) adds a later line that readers take."""
  line = {"step": int(step),
          "metrics": {k: float(v) for k, v in sorted(metrics.items())}}
  with open(os.path.join(workdir, EVAL_HISTORY), "a") as f:
    f.write(json.dumps(line) + "\n")


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


def _evaluated_at(workdir: str, step: int) -> bool:
  """Whether the eval history's last line is of `step`."""
  path = os.path.join(workdir, EVAL_HISTORY)
  if not os.path.exists(path):
    return False
  with open(path) as f:
    lines = f.read().splitlines()
  return bool(lines) and json.loads(lines[-1])["step"] == step


@dataclasses.dataclass
class _Run:
  """What the loop's helpers share for one stage run."""
  config: ml_collections.ConfigDict
  workdir: str
  stage: Stage
  mesh: Mesh
  writer: Any
  checkpointer: StageCheckpointer
  eval_key: jax.Array
  is_chief: bool


def _finished_metrics(checkpointer: StageCheckpointer, num_steps: int,
                      workdir: str) -> dict[str, float] | None:
  """The summary of a stage that already ran to the end, else None."""
  summary_path = os.path.join(workdir, "metrics_summary.json")
  if ((checkpointer.latest_step() or 0) >= num_steps
      and os.path.exists(summary_path)):
    with open(summary_path) as f:
      return json.load(f)["metrics"]
  return None


def _initial_state(stage: Stage, checkpointer: StageCheckpointer,
                   init_from: Mapping[str, str] | None,
                   key: jax.Array) -> TrainState:
  """Workdir checkpoint, else `init_from` networks, else fresh init."""
  state = init_state(stage.init_variables(key), stage.optimizers)
  if checkpointer.latest_step() is not None:
    # Falls back past damaged steps (moved aside to <step>.corrupt).
    state = resilience.restore_newest_intact(checkpointer, state)
    console(f"Resumed stage {stage.name} from step {int(state.step)}.")
    return state
  variables = dict(state.variables)
  for network, path in (init_from or {}).items():
    if path:
      logging.info("Initialising %s from %s.", network, path)
      variables[network] = restore_network_variables(path, network)
  return init_state(variables, stage.optimizers)


def _log_train(run: _Run, step: int, pending: list[Metrics],
               seconds: float) -> None:
  """Writes the mean of every metric since the last log; prints progress."""
  means = jax.tree.map(lambda *x: float(np.mean(x)), *jax.device_get(pending))
  run.writer.write_scalars(step, {f"train/{k}": v for k, v in means.items()})
  if run.is_chief:
    console(f"[{run.stage.name}] step {step}/{run.config.num_train_steps}  "
            f"{len(pending) / max(seconds, 1e-9):.2f} steps/s  "
            f"loss {means['loss']:.4g}")


def _write_samples(run: _Run, step: int, state: TrainState,
                   batch: dict[str, jax.Array], sample_step: Callable) -> None:
  """The sample grid to TensorBoard and `samples/step_*.png`."""
  columns = sample_step(state, batch, run.stage.frozen,
                        jax.random.fold_in(run.eval_key, step))
  # The batch axis spans every process: gather it (a collective, so every
  # process takes part) before reading it on the host.
  columns = multihost_utils.process_allgather(columns, tiled=True)
  grid = image_grid(list(zip(run.stage.sample_titles, columns)),
                    run.config.log.sample_rows)
  run.writer.write_images(step, {"samples": grid[None]})
  if run.is_chief:
    save_png(os.path.join(run.workdir, "samples", f"step_{step:07d}.png"), grid)


def _fold_nonfinite(run: _Run, streak: int,
                    unread: list[tuple[int, Metrics]]) -> int:
  """Adds steps to the host's count of consecutive skipped steps.

  Reads each step's `nonfinite` flag (a device scalar) in order: a skipped
  step adds one, an applied one resets the count, as `guarded_update` does
  with `state.nonfinite_streak`.

  Returns:
    The new count.

  Raises:
    NonFiniteError: the count reached `config.max_consecutive_nonfinite`.
  """
  flags = jax.device_get([metrics["nonfinite"] for _, metrics in unread])
  for (step, _), flag in zip(unread, flags):
    streak = streak + 1 if float(flag) else 0
    if streak >= run.config.max_consecutive_nonfinite:
      run.writer.flush()
      raise NonFiniteError(
          f"stage {run.stage.name}: {streak} consecutive steps had a "
          f"non-finite loss, gradient or update (step {step}); stopping. The "
          f"last checkpoint in {os.path.join(run.workdir, CHECKPOINT_DIR)} "
          f"is intact.")
  return streak


def _every(step: int, interval: int, last: int) -> bool:
  return step % interval == 0 or step == last


def _train(run: _Run, state: TrainState, train_ds: Any, eval_ds: Any,
           train_key: jax.Array, stop: StopOnSigterm
           ) -> tuple[TrainState, dict[str, float]]:
  """The steps from `state.step` to `num_train_steps` (or a SIGTERM)."""
  config, stage = run.config, run.stage
  num_steps = config.num_train_steps
  train_step = jax.jit(stage.train_step, donate_argnums=(0,))
  eval_step = (compile_eval_step(stage.eval_step) if stage.eval_step
               else None)
  sample_step = (compile_eval_step(stage.sample_step) if stage.sample_step
                 else None)
  report = periodic_actions.ReportProgress(
      num_train_steps=num_steps, writer=run.writer,
      every_steps=config.log.every_steps)
  train_iter = _numpy_iterator(train_ds)
  step = int(jax.device_get(state.step))
  # The host reads the steps' `nonfinite` flags every `sync_every_steps`
  # steps, and before a log, sample, eval or checkpoint, in one transfer.
  # Between those it never waits for the device; at a check it leaves the
  # step just dispatched unread (it is read at the next one), so the device
  # always has a step queued. With several processes the SIGTERM agreement
  # (a collective) runs at the same steps on every process.
  every = config.sync_every_steps
  streak = int(jax.device_get(state.nonfinite_streak))
  unread: list[tuple[int, Metrics]] = []
  pending: list[Metrics] = []
  eval_metrics: dict[str, float] = {}
  sample_batch = None
  last_log = time.time()
  while step < num_steps and not stop.agreed_at(step, every):
    host_batch = next(train_iter)
    batch = shard(host_batch, run.mesh)
    if sample_batch is None and sample_step is not None:
      # The grid's rows: the first train batch, numbered for their keys.
      sample_batch = shard(with_ids(host_batch, 0, jax.process_index(),
                                    jax.process_count()), run.mesh)
    with jax.profiler.StepTraceAnnotation("train", step_num=step):
      state, metrics = train_step(state, batch, stage.frozen,
                                  jax.random.fold_in(train_key, step))
    pending.append(metrics)
    step += 1
    report(step)
    unread.append((step, metrics))
    log = _every(step, config.log.every_steps, num_steps)
    sample = sample_step and _every(step, config.log.sample_every_steps,
                                    num_steps)
    evaluate_now = eval_step and _every(step, config.eval.every_steps,
                                        num_steps)
    save = _every(step, config.checkpoint.every_steps, num_steps)
    if log or sample or evaluate_now or save:
      streak = _fold_nonfinite(run, streak, unread)
      unread = []
    elif step % every == 0:
      streak = _fold_nonfinite(run, streak, unread[:-1])
      unread = unread[-1:]
    if log:
      _log_train(run, step, pending, time.time() - last_log)
      pending, last_log = [], time.time()
    if sample:
      _write_samples(run, step, state, sample_batch, sample_step)
    if evaluate_now:
      eval_metrics = evaluate(stage, state, eval_ds, run.mesh,
                              config.eval.num_batches, run.eval_key, eval_step)
      run.writer.write_scalars(step, eval_metrics)
      if run.is_chief:
        append_eval_history(run.workdir, step, eval_metrics)
    if save:
      run.checkpointer.save(state)
  return state, eval_metrics


def run_stage(config: ml_collections.ConfigDict, workdir: str, stage: Stage,
              init_from: Mapping[str, str] | None = None
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

  Returns:
    The final evaluation metrics.

  Raises:
    NonFiniteError: `config.max_consecutive_nonfinite` steps in a row were
      skipped; the last checkpoint is left as it was.
  """
  from ihc_jax import input_pipeline  # pylint: disable=g-import-not-at-top

  workdir = os.path.abspath(workdir)
  os.makedirs(workdir, exist_ok=True)
  is_chief = jax.process_index() == 0
  init_key, train_key, eval_key = jax.random.split(
      jax.random.PRNGKey(config.seed), 3)
  checkpointer = StageCheckpointer(
      workdir, stage.name, max_to_keep=config.checkpoint.max_to_keep)
  finished = _finished_metrics(checkpointer, config.num_train_steps, workdir)
  if finished is not None:
    # A finished stage (e.g. a restarted chain): nothing to compile.
    logging.info("Stage %s in %s is finished.", stage.name, workdir)
    checkpointer.close()
    return finished

  mesh = make_mesh()
  writer = metric_writers.create_default_writer(workdir,
                                                just_logging=not is_chief)
  with StopOnSigterm() as stop:
    state = replicate(_initial_state(stage, checkpointer, init_from, init_key),
                      mesh)
    stage = dataclasses.replace(stage, frozen=replicate(stage.frozen, mesh))
    start_step = int(jax.device_get(state.step))
    if start_step == 0:
      if is_chief:
        save_stage_config(config, workdir)
      writer.write_hparams(hparams(config))
    train_ds, eval_ds = input_pipeline.create_datasets(
        config.data, seed=config.seed, start_step=start_step)
    run = _Run(config, workdir, stage, mesh, writer, checkpointer, eval_key,
               is_chief)
    state, eval_metrics = _train(run, state, train_ds, eval_ds, train_key,
                                 stop)
    step = int(jax.device_get(state.step))
    if checkpointer.latest_step() != step:
      checkpointer.save(state)
    if stop.agreed():
      logging.warning("Stopped by SIGTERM at step %d; checkpoint saved.", step)
    else:
      if stage.eval_step and not eval_metrics:
        eval_metrics = evaluate(stage, state, eval_ds, mesh,
                                config.eval.num_batches, eval_key,
                                compile_eval_step(stage.eval_step))
      if is_chief:
        if eval_metrics and not _evaluated_at(workdir, step):
          append_eval_history(workdir, step, eval_metrics)
        write_summary(workdir, stage.name, step, eval_metrics)
        console(f"[{stage.name}] held-out metrics at step {step}: " + ", ".join(
            f"{k.removeprefix('eval/')} {v:.4g}"
            for k, v in sorted(eval_metrics.items())))
    checkpointer.close()
    writer.flush()
  return eval_metrics
