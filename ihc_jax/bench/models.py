"""Per-network size and speed: `python -m ihc_jax.bench models [options]`.

For each network prints its parameter count, the forward FLOPs reported by
XLA (`jax.jit(f).lower(...).cost_analysis()`, `flops.step_flops`) at the
given size, and the median wall time of a jitted forward+backward pass
(gradient of the summed outputs w.r.t. the params; training mode where the
network has one) after compilation. Weights are random (numpy).

  python -m ihc_jax.bench models                       # official sizes, 256x256, batch 1
  python -m ihc_jax.bench models --tiny --size 64      # test-size variants
  python -m ihc_jax.bench models --networks ihn,fusion --repeats 5
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from ihc_jax import models
from ihc_jax import weights
from ihc_jax.bench import flops as flops_lib
from ihc_jax.tools import convert_weights
from ihc_jax.bench import timing

ALL = ("ihn", "generator", "encoder", "discriminator", "fusion", "histogram", "vgg19")


def _flops(lowered: Any, compiled: Any) -> float:
  flops = flops_lib.step_flops(lowered, compiled)
  return float("nan") if flops is None else flops


def bench_network(name: str, cfg: Any, size: int, batch: int, repeats: int) -> dict[str, float]:
  """Measures one network.

  Args:
    name: network name (see `ALL`).
    cfg: model config (all sections).
    size: image height and width.
    batch: batch size.
    repeats: timed forward+backward runs (the median is reported).

  Returns:
    {"params", "forward_flops", "fwd_bwd_seconds"}.
  """
  model = models.build(name, cfg)
  shapes, kwargs = convert_weights.example_inputs(name, cfg[name], size, batch)
  variables = weights.random_variables(model, *shapes, **kwargs)
  rng = np.random.default_rng(0)
  inputs = [jnp.asarray(rng.random(s.shape, np.float32)) for s in shapes]
  params = variables["params"]
  others = {k: v for k, v in variables.items() if k != "params"}
  has_train = "train" in kwargs

  def forward(p, *args):
    return model.apply({"params": p, **others}, *args, **kwargs)

  def loss(p, *args):
    call = dict(kwargs)
    extra = {}
    if has_train:
      call["train"] = True
      extra = {"rngs": {"dropout": jax.random.PRNGKey(0)}, "mutable": ["batch_stats"]}
    out = model.apply({"params": p, **others}, *args, **call, **extra)
    if has_train:
      out = out[0]
    return sum(jnp.sum(x) for x in jax.tree_util.tree_leaves(out))

  lowered = jax.jit(forward).lower(params, *inputs)
  compiled = lowered.compile()
  grad = jax.jit(jax.grad(loss))
  seconds = timing.time_calls(lambda: grad(params, *inputs), repeats).median
  count = sum(int(np.prod(x.shape)) for x in jax.tree_util.tree_leaves(params))
  return {"params": count, "forward_flops": _flops(lowered, compiled),
          "fwd_bwd_seconds": seconds}


def main(argv: Sequence[str]) -> None:
  """Prints one line per network."""
  parser = argparse.ArgumentParser(prog="python -m ihc_jax.bench models")
  parser.add_argument("--networks", default=",".join(ALL))
  parser.add_argument("--size", type=int, default=256)
  parser.add_argument("--batch", type=int, default=1)
  parser.add_argument("--repeats", type=int, default=3)
  parser.add_argument("--tiny", action="store_true", help="use tiny_model_config()")
  args = parser.parse_args(argv)
  names = [n for n in args.networks.split(",") if n]
  unknown = [n for n in names if n not in ALL]
  if unknown:
    parser.error(f"unknown network(s) {unknown}; choose from {ALL}")
  cfg = models.tiny_model_config() if args.tiny else models.default_model_config()
  print(f"backend {jax.default_backend()}, {jax.device_count()} device(s), "
        f"{args.size}x{args.size}, batch {args.batch}, "
        f"{'tiny' if args.tiny else 'official'} sizes, random weights")
  print(f"{'network':14s} {'params':>12s} {'fwd GFLOPs':>11s} {'fwd+bwd s':>10s}")
  for name in names:
    r = bench_network(name, cfg, args.size, args.batch, args.repeats)
    print(f"{name:14s} {r['params']:>12,d} {r['forward_flops'] / 1e9:>11.2f} "
          f"{r['fwd_bwd_seconds']:>10.3f}", flush=True)
