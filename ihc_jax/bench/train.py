"""Training-step speed per stage: `python -m ihc_jax.bench train [options]`.

For each stage, builds its real jitted train step (the one `run_stage` uses)
on random data and random frozen networks, and prints steps/s, images/s, the
peak memory (device statistics where the backend has them, else XLA's
memory analysis of the step), the achieved FLOP/s (XLA's cost analysis of
the lowered step, `flops.step_flops`, over the measured step time) and, on a
device whose peak is known (`ihc_jax.bench.flops.PEAK_FLOPS`), the MFU for
the compute dtype.

  python -m ihc_jax.bench train --stage ihn                 # demo size (64 px, tiny)
  python -m ihc_jax.bench train --stage color --size paper  # 256 px, official widths
  python -m ihc_jax.bench train --stage all --steps 3
  python -m ihc_jax.bench train --stage color --size paper --dtype bfloat16
  python -m ihc_jax.bench train --stage color --size paper --profile 3

`--profile N` traces N more steps with `jax.profiler` and prints their op
time by scope (`profile.op_scope`: the networks' modules and the steps'
named scopes, forward and backward) and the `--top` slowest ops
(`print_profile`).

`--dtype` sets the compute dtype of every network of the stage, the frozen
ones included (`config.model.<net>.dtype`).

`--size paper` is meant for a GPU/TPU; on a CPU use a small `--batch` and
few `--steps`.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import resource
import tempfile
import time
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from ihc_jax import models
from ihc_jax import weights
from ihc_jax.bench import flops as flops_lib
from ihc_jax.bench import profile as profile_lib
from ihc_jax.tools import convert_weights
from ihc_jax.trainers import chain
from ihc_jax.trainers import checkpoints as checkpoints_lib
from ihc_jax.trainers import mesh as mesh_lib
from ihc_jax.trainers import train_state as train_state_lib
from ihc_jax.trainers import defaults

STAGES = ("ihn", "hist", "color", "fusion")
_REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(
    __file__))))


def stage_config(stage: str, size: str, batch: int | None,
                 dtype: str = "float32") -> ml_collections.ConfigDict:
  """The demo-size or paper-size config of `stage` (random VGG features).

  Every network section of the stage computes in `dtype`.
  """
  module = importlib.import_module(f"ihc_jax.trainers.{stage}")
  config = module.default_config()
  if size == "demo":
    demo = _load_demo_config()
    config = demo.stages[stage]
  elif size != "paper":
    raise ValueError(f"--size must be 'demo' or 'paper', got {size!r}")
  if batch:
    config.data.batch_size = batch
  config.perceptual.random_features = True
  set_dtype(config.model, dtype)
  return config


def set_dtype(model_config: ml_collections.ConfigDict, dtype: str) -> None:
  """Sets `dtype` in every section of `model_config` (checked; in place)."""
  for name in model_config.keys():
    models.precision.compute_dtype(name, dtype)
    model_config[name].dtype = dtype


def _load_demo_config() -> ml_collections.ConfigDict:
  path = os.path.join(_REPO, "configs", "demo.py")
  if not os.path.exists(path):
    raise FileNotFoundError(f"{path} not found: --size demo needs the "
                            "repository's configs/ folder")
  spec = importlib.util.spec_from_file_location("configs_demo", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config()


def write_random_frozen(config: ml_collections.ConfigDict, root: str,
                        model_config: ml_collections.ConfigDict) -> None:
  """Points `config.frozen.*` at checkpoints of random networks under `root`.

  Each frozen network gets a stage workdir (config.json + a step-0
  checkpoint), sized by its section of `model_config`.
  """
  size = config.data.image_size
  for name in config.frozen.keys():
    section = model_config[name]
    module = models.build(name, section)
    args, kwargs = convert_weights.example_inputs(name, section, size, 1)
    variables = weights.random_variables(module, *args, **kwargs)
    workdir = os.path.join(root, name)
    # The halftone and noise map the stage's checks expect its frozen IHN
    # to have been trained with.
    stage_config_ = ml_collections.ConfigDict({
        "trainer": chain.TRAINED_BY[name],
        "data": {"image_size": size},
        "halftone": config.halftone.to_dict(),
        "noise_variant": config.get("noise_variant"),
        "model": {name: section.to_dict()}})
    checkpoints_lib.save_stage_config(stage_config_, workdir)
    checkpointer = checkpoints_lib.StageCheckpointer(workdir, chain.TRAINED_BY[name])
    checkpointer.save(train_state_lib.TrainState(
        step=jnp.zeros((), jnp.int32), variables={name: dict(variables)},
        opt_states={}, nonfinite_streak=jnp.zeros((), jnp.int32)))
    checkpointer.close()
    config.frozen[name] = workdir


def random_frozen_stage(stage: str, size: str = "demo",
                        batch: int | None = None,
                        image_size: int | None = None,
                        dtype: str = "float32") -> tuple[Any, Any]:
  """(config, `trainers.loop.Stage`) of `stage` with random frozen networks.

  Every network, the frozen ones included, computes in `dtype`. The frozen
  networks' checkpoints live in a temporary folder only while the stage is
  built (`make_stage` loads them).
  """
  config = stage_config(stage, size, batch, dtype)
  if image_size:
    config.data.image_size = image_size
  frozen_model = (models.default_model_config() if size == "paper"
                  else defaults.tiny_model(config.data.image_size))
  set_dtype(frozen_model, dtype)
  module = importlib.import_module(f"ihc_jax.trainers.{stage}")
  with tempfile.TemporaryDirectory() as root:
    write_random_frozen(config, root, frozen_model)
    return config, module.make_stage(config)


def _peak_memory_bytes(compiled: Any) -> float:
  """The device's peak where it keeps statistics, else XLA's estimate."""
  stats = jax.devices()[0].memory_stats() or {}
  if "peak_bytes_in_use" in stats:
    return float(stats["peak_bytes_in_use"])
  memory = compiled.memory_analysis()
  if memory is None:
    return float("nan")
  return float(memory.argument_size_in_bytes + memory.output_size_in_bytes
               + memory.temp_size_in_bytes - memory.alias_size_in_bytes)


def _profile(compiled: Any, state: Any, args: tuple[Any, ...], calls: int,
             seed: int) -> dict[str, Any]:
  """op_seconds and op_layers of `calls` more steps (`profile.trace_op_times`)."""
  carried = [state]

  def run() -> Any:
    carried[0], out = compiled(carried[0], *args, jax.random.PRNGKey(seed))
    return out

  layers = profile_lib.op_layers(compiled.as_text())
  return {"op_seconds": profile_lib.trace_op_times(run, calls, layers),
          "op_layers": layers}


def bench_stage(stage: str, size: str = "demo", batch: int | None = None,
                steps: int = 5, dtype: str = "float32",
                profile_calls: int = 0) -> dict[str, Any]:
  """Times `steps` train steps of `stage` after one compile+warm-up step.

  Args:
    stage: one of `STAGES`.
    size: "demo" or "paper".
    batch: global batch (default: the config's).
    steps: timed steps.
    dtype: compute dtype of every network, frozen ones included.
    profile_calls: if positive, that many more steps run under
      `jax.profiler` after the timed ones (`profile.trace_op_times`).

  Returns:
    steps_per_s, images_per_s, flops_per_step (NaN when XLA has no count),
    achieved_flops_per_s, mfu (None when the device's peak is unknown),
    peak_memory_bytes, compile_s, host_max_rss_bytes; with `profile_calls`
    also op_seconds (op -> seconds per step) and op_layers (op -> (output
    shape, layer path)).
  """
  config, trainer = random_frozen_stage(stage, size, batch, dtype=dtype)
  mesh = mesh_lib.make_mesh()
  state = mesh_lib.replicate(train_state_lib.init_state(
      trainer.init_variables(jax.random.PRNGKey(0)), trainer.optimizers), mesh)
  frozen = mesh_lib.replicate(trainer.frozen, mesh)
  b, s = config.data.batch_size, config.data.image_size
  rng = np.random.default_rng(0)
  batch_np = {k: rng.random((b, s, s, 3), np.float32)
              for k in ("image", "reference")}
  from ihc_jax import input_pipeline  # pylint: disable=g-import-not-at-top
  data = input_pipeline.shard_batch(batch_np, mesh)
  step = jax.jit(trainer.train_step, donate_argnums=(0,))
  start = time.perf_counter()
  compiled = step.lower(state, data, frozen, jax.random.PRNGKey(0)).compile()
  compile_s = time.perf_counter() - start
  flops = flops_lib.step_flops(
      flops_lib.lowered_for_count(trainer.train_step, state, data, frozen,
                                  jax.random.PRNGKey(0)), compiled)
  state, metrics = compiled(state, data, frozen, jax.random.PRNGKey(0))
  jax.block_until_ready(metrics)
  start = time.perf_counter()
  for i in range(steps):
    state, metrics = compiled(state, data, frozen, jax.random.PRNGKey(i + 1))
  jax.block_until_ready((state, metrics))
  seconds = (time.perf_counter() - start) / max(1, steps)
  flops = float("nan") if flops is None else flops
  achieved = flops / seconds
  extra = (_profile(compiled, state, (data, frozen), profile_calls, steps + 1)
           if profile_calls > 0 else {})
  return {**extra, "steps_per_s": 1.0 / seconds, "images_per_s": b / seconds,
          "flops_per_step": flops, "achieved_flops_per_s": achieved,
          "mfu": flops_lib.mfu(achieved, jax.devices()[0].device_kind, dtype),
          "peak_memory_bytes": _peak_memory_bytes(compiled),
          "compile_s": compile_s,
          "host_max_rss_bytes": 1024.0 * resource.getrusage(
              resource.RUSAGE_SELF).ru_maxrss}


def main(argv: Sequence[str]) -> None:
  """Parses `argv` and prints one line per stage."""
  parser = argparse.ArgumentParser(prog="python -m ihc_jax.bench train",
                                   description=__doc__.split("\n")[0])
  parser.add_argument("--stage", default="all", choices=STAGES + ("all",))
  parser.add_argument("--size", default="demo", choices=("demo", "paper"))
  parser.add_argument("--batch", type=int, default=None,
                      help="global batch (default: the config's)")
  parser.add_argument("--steps", type=int, default=5, help="timed steps")
  parser.add_argument("--dtype", default="float32", choices=models.DTYPE_NAMES,
                      help="compute dtype of every network (default float32)")
  parser.add_argument("--profile", type=int, default=0, metavar="STEPS",
                      help="trace this many more steps and print where their "
                      "time goes, by scope and by op")
  parser.add_argument("--top", type=int, default=20,
                      help="ops listed with --profile")
  args = parser.parse_args(list(argv))
  stages = STAGES if args.stage == "all" else (args.stage,)
  kind = jax.devices()[0].device_kind
  peak = flops_lib.peak_flops_per_s(kind, args.dtype)
  print(f"devices: {jax.device_count()} x {kind}; compute dtype {args.dtype}; "
        + (f"peak {peak / 1e12:.1f} TFLOP/s per device" if peak else
           "peak FLOP/s unknown for this device, no MFU"))
  for stage in stages:
    r = bench_stage(stage, args.size, args.batch, args.steps, args.dtype,
                    profile_calls=args.profile)
    config = stage_config(stage, args.size, args.batch)
    mfu = "" if r["mfu"] is None else f", MFU {100 * r['mfu']:.1f}%"
    print(f"{stage:7s} {args.size} {config.data.image_size}px "
          f"batch {config.data.batch_size}: {r['steps_per_s']:.3f} steps/s, "
          f"{r['images_per_s']:.2f} images/s, "
          f"{r['achieved_flops_per_s'] / 1e9:.2f} GFLOP/s achieved "
          f"({r['flops_per_step'] / 1e9:.2f} GFLOP/step){mfu}, peak memory "
          f"{r['peak_memory_bytes'] / 2**20:.0f} MiB, compile "
          f"{r['compile_s']:.1f} s")
    if args.profile:
      print_profile(r["op_seconds"], r["op_layers"], 1.0 / r["steps_per_s"], args.top)


def print_profile(ops: dict[str, float], layers: dict[str, tuple[str, str]],
                  step_s: float, top: int) -> None:
  """Prints a step's traced op time by scope and pass, then its `top` ops.

  Ops that run at once (XLA:CPU's thunks on its thread pool, GPU streams)
  each count in full, so the shares are of the traced sum, which can exceed
  the step's wall time.
  """
  traced = sum(ops.values())
  print(f"  ops traced {traced * 1e3:.1f} ms per step (wall {step_s * 1e3:.1f} ms), "
        f"{len(ops)} ops")
  print(f"  {'ms':>9s} {'share':>6s}  scope (pass)")
  for (scope, direction), value in sorted(profile_lib.scope_times(ops, layers).items(),
                                          key=lambda kv: -kv[1]):
    print(f"  {value * 1e3:9.2f} {value / traced:6.1%}  {scope} ({direction})")
  print(f"  {'ms':>9s} {'share':>6s}  {'op':28s} {'output':30s} layer")
  for name, value in sorted(ops.items(), key=lambda kv: -kv[1])[:top]:
    shape, layer = layers.get(name, ("?", "?"))
    print(f"  {value * 1e3:9.2f} {value / traced:6.1%}  {name[:28]:28s} "
          f"{shape[:30]:30s} {layer[-80:]}")
