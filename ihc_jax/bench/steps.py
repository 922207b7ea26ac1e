"""Whole training steps with each kernel-gradient form: `python -m ihc_jax.bench steps`.

  python -m ihc_jax.bench steps [--size 256] [--batch 1] [--repeats 5]
      [--steps color,ihn] [--tiny]

Times our side of `python -m ihc_jax.bench official`'s two training steps
(the IHN step: pixel + VGG pool4 perceptual loss; the colour step: E + G
with L1, KL and LSGAN, then D), each compiled twice: with the convolution
gradients the models use (`ihc_jax.models.conv_grad`'s CPU forms: taps or
padded kernel gradients, phases for strided input gradients) and with
XLA's own gradients for every convolution (`conv_grad.xla_gradients`). The two run
interleaved in one process (per step), so both see the same load; the speed-up of
the models' form is the ratio of the medians. Where the compiled kernel
gradient is available (`ihc_jax.models.native`), a third form, the models'
without it (`conv_grad.without_native`), gives its speed-up too. Random
weights (official widths, or `--tiny`) and random inputs; no torch needed. Also prints the
largest difference of the step's losses between the two forms (float
rounding), and the minor page faults per call of the models' form: the
pages its buffers faulted in, which glibc maps fresh on each call above its
mmap threshold (`ihc_jax.host_memory`; run with
`host_memory.KEEP_FREED_MEMORY_TUNABLES` as GLIBC_TUNABLES to compare
without them). Benchmark figures only: nothing here asserts a speed.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from ihc_jax import host_memory

STEPS = ("color", "ihn")


def _variables(model_config: Any, size: int, seed: int) -> dict[str, Any]:
  """Random variables of IHN, E, G (`init_random_variables`) and D."""
  from ihc_jax import models  # pylint: disable=g-import-not-at-top
  from ihc_jax import pipeline_files  # pylint: disable=g-import-not-at-top
  from ihc_jax.trainers import linen_utils  # pylint: disable=g-import-not-at-top
  variables = pipeline_files.init_random_variables(model_config, seed=seed, image_size=size)
  variables["discriminator"] = linen_utils.init_variables(
      models.build("discriminator", model_config), jax.random.PRNGKey(seed),
      jnp.zeros((1, size, size, 3)), jnp.zeros((1, model_config.discriminator.nz)),
      train=True)
  return variables


def step_calls(name: str, model_config: Any, size: int, batch: int, seed: int = 0
               ) -> tuple[Callable[..., Any], tuple[Any, ...]]:
  """(jitted step, its arguments) of `bench official`'s step `name`."""
  from ihc_jax import models  # pylint: disable=g-import-not-at-top
  from ihc_jax.bench import official  # pylint: disable=g-import-not-at-top
  from ihc_jax.models import vgg as vgg_lib  # pylint: disable=g-import-not-at-top
  from ihc_jax.tools import parity  # pylint: disable=g-import-not-at-top
  if name not in STEPS:
    raise ValueError(f"step must be one of {STEPS}, got {name!r}")
  variables = _variables(model_config, size, seed)
  x = official.make_inputs(size, batch, seed + 1)
  key = jax.random.PRNGKey(seed)
  if name == "ihn":
    step, optimizer = official._jax_ihn_step(  # pylint: disable=protected-access
        models.build("ihn", model_config), vgg_lib.init_vgg19_params(seed))
    params = variables["ihn"]["params"]
    state = (params, variables["ihn"]["batch_stats"], optimizer.init(params))
    noise = models.filter_noise(jnp.asarray(x["raw_noise"]), variant="official")
    inputs = (x["halftone"], noise, x["gray"])
  else:
    nets = [models.build(n, model_config) for n in ("encoder", "generator", "discriminator")]
    step, optimizer = official._jax_color_step(*nets)  # pylint: disable=protected-access
    eg = {"encoder": variables["encoder"]["params"],
          "generator": variables["generator"]["params"]}
    state = dict(eg, generator_stats=variables["generator"]["batch_stats"],
                 discriminator=variables["discriminator"]["params"],
                 discriminator_stats=variables["discriminator"]["batch_stats"],
                 opt_g=optimizer.init(eg),
                 opt_d=optimizer.init(variables["discriminator"]["params"]))
    inputs = (x["gray"], parity._canny(x["gray"]),  # pylint: disable=protected-access
              x["color"], x["reference"])
  args = jax.tree.map(jnp.asarray, (state,) + tuple(inputs) + (key,))
  return step, args


def compiled_forms(name: str, model_config: Any, size: int, batch: int,
                   with_no_native: bool = True) -> dict[str, tuple[Any, tuple[Any, ...]]]:
  """form -> (compiled step, its arguments): 'models', 'xla' and, where the
  compiled kernel gradient is available and `with_no_native`, 'no native'
  (the models' forms inside `conv_grad.without_native`).

  Each form gets its own jitted step, traced in its own context: a jitted
  function caches its trace, so lowering one function twice would give the
  first form twice.
  """
  from ihc_jax.models import conv_grad, native  # pylint: disable=g-import-not-at-top
  contexts = {"models": contextlib.nullcontext, "xla": conv_grad.xla_gradients}
  if with_no_native and native.available():
    contexts["no native"] = conv_grad.without_native
  forms = {}
  for form, context in contexts.items():
    with context():
      step, args = step_calls(name, model_config, size, batch)
      forms[form] = (step.lower(*args).compile(), args)
  return forms


def time_forms(forms: dict[str, tuple[Any, tuple[Any, ...]]], repeats: int
               ) -> dict[str, Any]:
  """{form: s for each form, 'loss difference', 'page faults'} of
  `compiled_forms`' forms: medians of `repeats` interleaved calls after
  one warm-up each, the largest difference of their losses (float
  rounding), and the median minor page faults of the models' form per call
  (None where the OS has no count)."""
  losses = {form: jax.tree.leaves(jax.block_until_ready(fn(*args))[1])
            for form, (fn, args) in forms.items()}
  times = {form: [] for form in forms}
  faults = []
  for _ in range(repeats):
    for form, (fn, args) in forms.items():
      faults_before = host_memory.minor_page_faults()
      start = time.perf_counter()
      jax.block_until_ready(fn(*args))
      times[form].append(time.perf_counter() - start)
      if form == "models" and faults_before is not None:
        faults.append(host_memory.minor_page_faults() - faults_before)
  out = {form: statistics.median(values) for form, values in times.items()}
  out["page faults"] = int(statistics.median(faults)) if faults else None
  out["loss difference"] = max(float(jnp.max(jnp.abs(a - b)))
                               for a, b in zip(losses["models"], losses["xla"]))
  return out


def format_line(name: str, result: dict[str, Any]) -> str:
  """One step's printed line (times in s, speed-up of the models' form
  over XLA's gradients and, where timed, over the models' forms without
  the compiled kernel gradient)."""
  native_part = ""
  if "no native" in result:
    native_part = (f"  no native {result['no native']:8.3f} s  native speed-up "
                   f"{result['no native'] / result['models']:5.2f}x")
  return (f"  {name:6s} step  models {result['models']:8.3f} s  xla {result['xla']:8.3f} s  "
          f"speed-up {result['xla'] / result['models']:5.2f}x{native_part}  "
          f"loss difference {result['loss difference']:.1e}  "
          f"page faults per call {result['page faults']}")


def main(argv: Sequence[str]) -> None:
  from ihc_jax import models  # pylint: disable=g-import-not-at-top
  parser = argparse.ArgumentParser(prog="python -m ihc_jax.bench steps")
  parser.add_argument("--size", type=int, default=256)
  parser.add_argument("--batch", type=int, default=1)
  parser.add_argument("--repeats", type=int, default=5)
  parser.add_argument("--steps", default=",".join(STEPS),
                      help=f"comma-separated, from {STEPS}")
  parser.add_argument("--tiny", action="store_true",
                      help="the tests' tiny widths instead of the official ones")
  args = parser.parse_args(list(argv))
  names = [n for n in args.steps.split(",") if n]
  bad = sorted(set(names) - set(STEPS))
  if bad:
    parser.error(f"unknown steps {bad}; choose from {STEPS}")
  config = models.tiny_model_config() if args.tiny else models.default_model_config()
  print(f"training steps, {args.size}x{args.size}, batch {args.batch}, "
        f"{'tiny' if args.tiny else 'official'} widths, backend {jax.default_backend()}, "
        f"medians of {args.repeats} interleaved repeats: the models' convolution "
        f"gradients vs XLA's for every convolution")
  for name in names:
    forms = compiled_forms(name, config, args.size, args.batch)
    print(format_line(name, time_forms(forms, args.repeats)), flush=True)
