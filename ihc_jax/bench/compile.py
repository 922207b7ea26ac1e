"""Compile time of each stage on CPU: `python -m ihc_jax.bench compile`.

  python -m ihc_jax.bench compile [--stage all] [--size demo|paper]
      [--image-size N] [--batch N] [--repeats 5]

Short CPU runs (the tests, the demo, a laptop) spend most of their time
compiling. For each stage this times, in one process, the two choices
`ihc_jax.trainers` makes for that reason:

* initialisation (`stage.init_variables`: every trained network) compiled
  with `linen_utils.INIT_COMPILER_OPTIONS` (no LLVM optimisation) and with
  XLA's defaults: compile + run seconds and the largest difference of the
  parameters;
* the train step (donated state, as `run_stage` runs it) with a skipped
  update kept by one conditional (`train_state`'s CPU form) and by one select
  per leaf (`train_state.per_leaf_select`, the GPU/TPU form): compile
  seconds, then the median step time of `--repeats` interleaved steps, and
  the largest difference of their metrics.

Random frozen networks and random data, as `bench train` (whose configs it
uses). Figures only: nothing here asserts a speed.
"""

from __future__ import annotations

import argparse
import functools
import statistics
import time
from collections.abc import Sequence
from typing import Any

import jax
import numpy as np

from ihc_jax.bench import train as train_bench
from ihc_jax.trainers import common
from ihc_jax.trainers import linen_utils
from ihc_jax.trainers import train_state


def time_init(stage: Any) -> dict[str, float]:
  """Seconds of `stage.init_variables` with the init options and without."""
  out, variables = {}, {}
  saved = dict(linen_utils.INIT_COMPILER_OPTIONS)
  for form, options in (("init options", saved), ("XLA defaults", {})):
    linen_utils.INIT_COMPILER_OPTIONS.clear()
    linen_utils.INIT_COMPILER_OPTIONS.update(options)
    try:
      start = time.perf_counter()
      variables[form] = jax.block_until_ready(
          stage.init_variables(jax.random.PRNGKey(0)))
      out[form] = time.perf_counter() - start
    finally:
      linen_utils.INIT_COMPILER_OPTIONS.clear()
      linen_utils.INIT_COMPILER_OPTIONS.update(saved)
  out["difference"] = max(
      float(np.max(np.abs(np.asarray(a, np.float64) - np.asarray(b))))
      for a, b in zip(*(jax.tree.leaves(v) for v in variables.values())))
  return out


def time_steps(config: Any, stage: Any, repeats: int) -> dict[str, Any]:
  """Compile and median step seconds of both guard forms, interleaved."""
  state = common.init_state(stage.init_variables(jax.random.PRNGKey(0)),
                            stage.optimizers)
  b, s = config.data.batch_size, config.data.image_size
  rng = np.random.default_rng(0)
  batch = {k: rng.random((b, s, s, 3), np.float32)
           for k in ("image", "reference")}
  compiled, compile_s, states = {}, {}, {}
  for form in ("conditional", "select"):
    # A new function object per form: jit caches traces by function, and the
    # guard's form is read when the step is traced.
    step = jax.jit(functools.partial(stage.train_step), donate_argnums=(0,))
    start = time.perf_counter()
    if form == "select":
      with train_state.per_leaf_select():
        compiled[form] = step.lower(state, batch, stage.frozen,
                                    jax.random.PRNGKey(0)).compile()
    else:
      compiled[form] = step.lower(state, batch, stage.frozen,
                                  jax.random.PRNGKey(0)).compile()
    compile_s[form] = time.perf_counter() - start
    states[form] = jax.tree.map(lambda x: x.copy(), state)
  seconds = {form: [] for form in compiled}
  metrics = {}
  for i in range(repeats + 1):  # the first round warms up
    for form, fn in compiled.items():
      start = time.perf_counter()
      states[form], metrics[form] = jax.block_until_ready(
          fn(states[form], batch, stage.frozen, jax.random.PRNGKey(i)))
      if i:
        seconds[form].append(time.perf_counter() - start)
  difference = max(abs(float(metrics["conditional"][k]) - float(v))
                   for k, v in metrics["select"].items())
  return {"compile": compile_s,
          "step": {form: statistics.median(v) for form, v in seconds.items()},
          "difference": difference}


def main(argv: Sequence[str]) -> None:
  parser = argparse.ArgumentParser(prog="python -m ihc_jax.bench compile",
                                   description=__doc__.split("\n")[0])
  parser.add_argument("--stage", default="all",
                      choices=train_bench.STAGES + ("all",))
  parser.add_argument("--size", default="demo", choices=("demo", "paper"))
  parser.add_argument("--image-size", type=int, default=None,
                      help="crop size (default: the config's)")
  parser.add_argument("--batch", type=int, default=None,
                      help="batch (default: the config's)")
  parser.add_argument("--repeats", type=int, default=5)
  args = parser.parse_args(list(argv))
  stages = train_bench.STAGES if args.stage == "all" else (args.stage,)
  print(f"backend {jax.default_backend()}"
        + ("" if jax.default_backend() == "cpu" else
           ": not CPU, so both forms of each pair are the same program"))
  for name in stages:
    config, stage = train_bench.random_frozen_stage(
        name, args.size, args.batch, args.image_size)
    init = time_init(stage)
    steps = time_steps(config, stage, args.repeats)
    c, t = steps["compile"], steps["step"]
    print(f"{name:7s} {args.size} {config.data.image_size}px batch "
          f"{config.data.batch_size}: init {init['init options']:.1f} s "
          f"(XLA defaults {init['XLA defaults']:.1f} s, parameters differ by "
          f"{init['difference']:.1e}); train step compile conditional "
          f"{c['conditional']:.1f} s, select {c['select']:.1f} s; step "
          f"conditional {1e3 * t['conditional']:.1f} ms, select "
          f"{1e3 * t['select']:.1f} ms (select/conditional "
          f"{t['select'] / t['conditional']:.3f}), metrics differ by "
          f"{steps['difference']:.1e}", flush=True)
