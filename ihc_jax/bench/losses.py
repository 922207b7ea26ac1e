"""Loss benchmark: `python -m ihc_jax.bench losses [--batch 8 --size 256]`.

For every loss, the jitted value-and-gradient with respect to the generated
image(s) is compiled once, run once to warm up, then timed `--repeats` times
(median, wall clock, `block_until_ready`). Memory comes from XLA's
`compiled.memory_analysis()`: temporaries (peak scratch of the program) and
argument/output sizes.

VGG19 uses RANDOM weights (no ImageNet weights offline; the timing does not
depend on the weight values). Feature-based losses are timed in their
`*_from_features` form, as the trainer uses them, plus one row per VGG19
forward+backward (to the layer the losses use); `--wrappers` also times the
wrappers that run VGG themselves.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from ihc_jax import losses
from ihc_jax.models.histogram import HistogramNet
from ihc_jax.models.vgg import init_vgg19_params
from ihc_jax.bench import timing

_MIB = 1024.0 * 1024.0


def _measure(fn: Callable[..., jax.Array], args: Sequence[np.ndarray],
             repeats: int) -> dict[str, float]:
  """Compiles value_and_grad(fn) w.r.t. its first argument and times it.

  Frozen weights are passed as arguments (not closed over) so that XLA does
  not constant-fold through them and the argument sizes include them.
  """
  step = jax.jit(jax.value_and_grad(fn))
  start = time.perf_counter()
  compiled = step.lower(*args).compile()
  compile_s = time.perf_counter() - start
  stats = compiled.memory_analysis()
  device_args = jax.device_put(list(args))
  row = {"median_ms": 1e3 * timing.time_calls(lambda: compiled(*device_args), repeats).median,
         "compile_s": compile_s}
  for key in ("temp", "argument", "output"):
    value = getattr(stats, f"{key}_size_in_bytes", None) if stats else None
    row[f"{key}_mib"] = float("nan") if value is None else value / _MIB
  return row


def _cases(batch: int, size: int, bins: int, chunk_rows: int,
           wrappers: bool) -> dict[str, tuple[Callable[..., jax.Array], list]]:
  rng = np.random.default_rng(0)

  def image(channels=3):
    return rng.random((batch, size, size, channels), dtype=np.float32)

  def code():
    return rng.standard_normal((batch, 8), dtype=np.float32)

  vgg_params = init_vgg19_params(0)  # RANDOM weights
  h = size // 8
  relu4_1 = rng.random((batch, h, h, 512), dtype=np.float32)
  conv4_4 = rng.random((batch, h, h, 512), dtype=np.float32)
  logits = [rng.standard_normal((batch, size // 8 - 2, size // 8 - 2, 1), dtype=np.float32),
            rng.standard_normal((batch, size // 16 - 2, size // 16 - 2, 1), dtype=np.float32)]
  hist_net = HistogramNet(bins=bins)
  hist_shapes = jax.eval_shape(
      hist_net.init, jax.random.PRNGKey(0),
      jax.ShapeDtypeStruct((1, size, size, 1), jnp.float32))["params"]
  hist_params = jax.tree_util.tree_map(  # RANDOM weights
      lambda s: 0.01 * rng.standard_normal(s.shape, dtype=np.float32), hist_shapes)
  target = image()

  cases = {
      "pixel": (lambda o, c, t: losses.pixel_loss(c, o, t),
                [image(1), image(1), image(1)]),
      "reconstruction": (lambda o, t, r, e: losses.reconstruction_loss(o, t, r, e),
                         [image(), image(), image(), image()]),
      "vgg19 -> relu4_1 (fwd+bwd)": (
          lambda x, p: jnp.sum(losses.vgg_features(p, x, layers=("relu4_1",))
                               ["relu4_1"]), [image(), vgg_params]),
      "vgg19 -> conv4_4 (fwd+bwd)": (
          lambda x, p: jnp.sum(losses.vgg_features(p, x, layers=("conv4_4",))
                               ["conv4_4"]), [image(), vgg_params]),
      "perceptual (features)": (losses.perceptual_loss_from_features,
                                [conv4_4, conv4_4.copy()]),
      "structure (features)": (
          lambda o, t, fo, ft: losses.structure_loss_from_features(o, t, fo, ft),
          [image(), target, relu4_1, relu4_1.copy()]),
      "style (features)": (losses.style_loss_from_features, [relu4_1, relu4_1.copy()]),
      "style cross_batch (features)": (
          lambda a, b: losses.style_loss_from_features(a, b, cross_batch=True),
          [relu4_1, relu4_1.copy()]),
      "mode_seeking gram (features)": (
          lambda a, b, z1, z2: losses.mode_seeking_loss_from_features(a, b, z1, z2),
          [relu4_1, relu4_1.copy(), code(), code()]),
      "mode_seeking pixel": (
          lambda a, b, z1, z2: losses.mode_seeking_loss_from_features(
              a, b, z1, z2, distance="pixel"),
          [image(), image(), code(), code()]),
      "latent": (losses.latent_loss, [code(), code()]),
      "kl": (losses.kl_loss, [code(), code()]),
      "adversarial G (lsgan, 2 scales)": (losses.generator_adversarial_loss, [logits]),
      "adversarial D (lsgan, 2 scales)": (
          losses.discriminator_adversarial_loss, [logits, [x + 1 for x in logits]]),
      f"self_similarity (chunk {chunk_rows})": (
          lambda o, t: losses.self_similarity_loss(o, t, chunk_rows=chunk_rows),
          [image(), target]),
      "self_similarity (unchunked)": (
          lambda o, t: losses.self_similarity_loss(o, t, chunk_rows=None),
          [image(), target]),
      f"histogram (H, {bins} bins)": (
          lambda o, r, p: losses.histogram_loss(hist_net.apply, p, o, r),
          [image(), target, hist_params]),
      f"histogram (soft, {bins} bins)": (
          lambda o, r: losses.histogram_loss_from_histograms(
              losses.soft_histogram(o, bins=bins), losses.hard_histogram(r, bins=bins)),
          [image(), target]),
  }
  if wrappers:
    cases.update({
        "perceptual (VGG wrapper)": (
            lambda o, t, p: losses.perceptual_loss(p, o, t),
            [image(), target, vgg_params]),
        "structure (VGG wrapper)": (
            lambda o, t, p: losses.structure_loss(p, o, t),
            [image(), target, vgg_params]),
        "style (VGG wrapper)": (
            lambda o, t, p: losses.style_loss(p, o, t), [image(), target, vgg_params]),
        "mode_seeking (VGG wrapper)": (
            lambda a, b, z1, z2, p: losses.mode_seeking_loss(p, a, b, z1, z2),
            [image(), image(), code(), code(), vgg_params]),
    })
  return cases


def main(argv: Sequence[str]) -> None:
  """Runs the loss benchmark and prints a table.

  Args:
    argv: command-line arguments after the suite name.
  """
  parser = argparse.ArgumentParser(prog="python -m ihc_jax.bench losses")
  parser.add_argument("--batch", type=int, default=8)
  parser.add_argument("--size", type=int, default=256)
  parser.add_argument("--repeats", type=int, default=5)
  parser.add_argument("--bins", type=int, default=64)
  parser.add_argument("--chunk-rows", type=int, default=256)
  parser.add_argument("--only", default="",
                      help="comma-separated substrings; run matching rows only")
  parser.add_argument("--wrappers", action="store_true",
                      help="also time the VGG-running wrappers")
  args = parser.parse_args(list(argv))
  if args.size % 16 or args.size < 64:
    parser.error("--size must be a multiple of 16 and >= 64")
  cases = _cases(args.batch, args.size, args.bins, args.chunk_rows, args.wrappers)
  if args.only:
    keys = [k.strip() for k in args.only.split(",") if k.strip()]
    cases = {n: c for n, c in cases.items() if any(k in n for k in keys)}
  print(f"# losses: value_and_grad, batch {args.batch}, {args.size}x{args.size}, "
        f"median of {args.repeats}, device {jax.devices()[0].device_kind}; "
        "VGG19/H weights are RANDOM")
  header = (f"{'loss':<36} {'median ms':>10} {'compile s':>10} {'temp MiB':>10} "
            f"{'args MiB':>10} {'out MiB':>9}")
  print(header)
  print("-" * len(header))
  for name, (fn, fn_args) in cases.items():
    row = _measure(fn, fn_args, args.repeats)
    print(f"{name:<36} {row['median_ms']:>10.2f} {row['compile_s']:>10.2f} "
          f"{row['temp_mib']:>10.1f} {row['argument_mib']:>10.1f} "
          f"{row['output_mib']:>9.1f}", flush=True)


if __name__ == "__main__":
  import sys
  main(sys.argv[1:])
