"""FLOP counts and the matmul ceiling: the roofline lines of `python -m ihc_jax.bench official`.

XLA's cost analysis of a lowered computation counts FLOPs as direct
convolution and matmul do: 2 C_in C_out per kernel tap and output pixel,
leaving out the taps that fall on zero padding (which direct code computes
too, so the count errs low). Both sides of `bench official` compute the same
networks, so one count serves both: achieved GFLOP/s = GFLOP / median time.

The ceiling is the rate of a float32 [2048, 2048] matmul, timed on both
sides among the other items (so under the same load), the faster side's. Code
that ran every op at that rate would take GFLOP / ceiling, so torch's time
over that is the largest torch/ihc_jax ratio direct convolution can reach on
the machine (an estimate that errs high, with the count): a target above it
needs fewer FLOPs (e.g. Winograd's algorithm), not a better schedule.
Benchmark figures only: nothing here asserts a speed.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp

MATMUL_SIZE = 2048


def matmul_gflop() -> float:
  """GFLOP of the ceiling's [MATMUL_SIZE, MATMUL_SIZE] matmul."""
  return 2 * MATMUL_SIZE**3 / 1e9


def lowered_gflop(fn: Any, *args: Any, **kwargs: Any) -> float:
  """GFLOP of `jax.jit`-ed `fn` on these arguments (arrays or
  `jax.ShapeDtypeStruct`s), from XLA's cost analysis of the lowered module;
  nothing is compiled or run."""
  cost = fn.lower(*args, **kwargs).cost_analysis()
  if isinstance(cost, (list, tuple)):
    cost = cost[0] if cost else None
  if not cost or "flops" not in cost:
    raise RuntimeError(f"XLA's cost analysis gave no FLOP count on {jax.default_backend()}")
  return float(cost["flops"]) / 1e9


def pipeline_gflop(pipeline: Any, num_codes: int, with_reference: bool) -> float:
  """GFLOP of `Pipeline.colorize` on one tile of the pipeline's size with
  `num_codes` codes: its graph with every code batched (`_tile_fn` under
  `jit`, the networks its sequential runs call one at a time, so the same
  FLOPs), plus E on the reference when there is one."""
  size, nz = pipeline.image_size, int(pipeline.model_config.generator.nz)
  spec = jax.ShapeDtypeStruct
  keys = jax.vmap(jax.random.PRNGKey)(jnp.arange(1))
  graph = jax.jit(pipeline._tile_fn, static_argnames="intermediates")  # pylint: disable=protected-access
  total = lowered_gflop(graph, pipeline.variables, spec((1, size, size, 1), jnp.float32),
                        spec((1, num_codes, nz), jnp.float32), spec(keys.shape, keys.dtype),
                        intermediates=False)
  if with_reference:
    total += lowered_gflop(jax.jit(pipeline._encode_fn),  # pylint: disable=protected-access
                           pipeline.variables["encoder"],
                           spec((1, size, size, 3), jnp.float32))
  return total


def item_gflop(size: int, train_batch: int, seed: int) -> dict[str, float]:
  """GFLOP of our side of each timed item (`lowered_gflop`, XLA's
  count); the torch side computes the same networks."""
  from ihc_jax import inference  # pylint: disable=g-import-not-at-top
  from ihc_jax import models  # pylint: disable=g-import-not-at-top
  from ihc_jax.bench import official  # pylint: disable=g-import-not-at-top
  from ihc_jax.bench import steps  # pylint: disable=g-import-not-at-top
  from ihc_jax.models import conv_grad  # pylint: disable=g-import-not-at-top
  from ihc_jax.tools import parity  # pylint: disable=g-import-not-at-top

  config = models.default_model_config()
  variables = inference.init_random_variables(config, seed=seed, image_size=size)
  x = {k: jnp.asarray(v) for k, v in official.make_inputs(size, 1, seed).items()}
  noise = models.filter_noise(x["raw_noise"], variant="official")
  edge = jnp.asarray(parity._canny(x["halftone"]))  # pylint: disable=protected-access
  calls = {"ihn": ((x["halftone"], noise), {"train": False}),
           "generator": ((x["halftone"], edge, x["eps"]), {"train": False}),
           "encoder": ((x["reference"],), {}),
           "fusion": ((x["color"], x["reference"]), {})}
  gflop = {}
  for name, (args, kwargs) in calls.items():
    net = models.build(name, config)
    fn = jax.jit(lambda v, *a, net=net, kwargs=kwargs: net.apply(v, *a, **kwargs))
    gflop[f"forward {name}"] = lowered_gflop(fn, variables[name], *args)
  pipeline = inference.Pipeline(config, variables, image_size=size, tile_batch=1)
  gflop["reference path"] = pipeline_gflop(pipeline, 1, with_reference=True)
  gflop["test.py (ref + 2 random)"] = pipeline_gflop(pipeline, 3, with_reference=True)
  for item, step in (("IHN train step", "ihn"), ("colour train step", "color")):
    # XLA counts no FLOPs in the compiled kernel gradient's custom call
    # (`flops.lowered_for_count`): count the steps with XLA's forms.
    with conv_grad.without_native():
      fn, args = steps.step_calls(step, config, size, train_batch, seed)
      gflop[item] = lowered_gflop(fn, *args)
  return gflop


def format_lines(results: Mapping[str, tuple[float, float]], gflop: Mapping[str, float],
                 peak_gflops: float) -> list[str]:
  """The printed roofline table: per item with a FLOP count, its GFLOP,
  both sides' achieved GFLOP/s (results: item -> (torch s, ihc_jax s)),
  the time at `peak_gflops` and torch's time over it (the best ratio)."""
  lines = [f"roofline: GFLOP from XLA's cost analysis (direct convolution); "
           f"ceiling = float32 matmul {peak_gflops:.0f} GFLOP/s on this machine",
           f"{'item':28s} {'GFLOP':>8s} {'torch GF/s':>11s} {'ihc_jax GF/s':>13s} "
           f"{'at ceiling s':>13s} {'best ratio':>11s}"]
  for name, (torch_s, jax_s) in results.items():
    if name not in gflop:
      continue
    flops = gflop[name]
    at_peak = flops / peak_gflops
    lines.append(f"{name:28s} {flops:8.1f} {flops / torch_s:11.0f} {flops / jax_s:13.0f} "
                 f"{at_peak:13.3f} {torch_s / at_peak:10.2f}x")
  return lines
