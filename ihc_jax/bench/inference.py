"""Colorization speed: `python -m ihc_jax.bench inference [options]`.

Times the full pipeline of `ihc_jax.inference.Pipeline.colorize` (IHN,
Canny, G on both paths, per-channel IHN inversion, F) on the CPU (or
whatever JAX runs on) with official-size networks and RANDOM weights (speed
does not depend on the weights). Each image gets a reference code plus two
random codes, as the official test script does. Prints:

- seconds per 256x256 image at batch 1 and at batch 8 (median of the
  repeats, after a compiling warm-up call);
- seconds per megapixel for a tiled scan (`--scan` px, 256 px tiles,
  64 px overlap, `--tile-batch` tiles per call; the last call is padded to
  the full tile batch), one call after compiling (1024x768 makes 20 tiles,
  so a tile batch of 4 or 5 wastes nothing).

  python -m ihc_jax.bench inference                      # official sizes
  python -m ihc_jax.bench inference --tiny --size 64     # quick check
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

import jax
import numpy as np

from ihc_jax import inference
from ihc_jax import models
from ihc_jax import tiling
from ihc_jax.bench import timing


def _time(fn, repeats: int) -> tuple[float, float]:
  """(first call incl. compilation, median of `repeats` later calls) in s."""
  result = timing.time_calls(fn, repeats)
  return result.first, result.median


def main(argv: Sequence[str]) -> None:
  """Runs the benchmark and prints one line per figure."""
  parser = argparse.ArgumentParser(prog="python -m ihc_jax.bench inference")
  parser.add_argument("--tiny", action="store_true",
                      help="tiny test networks instead of official sizes")
  parser.add_argument("--size", type=int, default=256,
                      help="tile / image size (default 256)")
  parser.add_argument("--batches", default="1,8",
                      help="comma-separated batch sizes (default 1,8)")
  parser.add_argument("--scan", default="1024x768",
                      help="WxH of the tiled scan; 'none' skips it")
  parser.add_argument("--tile-batch", type=int, default=4)
  parser.add_argument("--repeats", type=int, default=2)
  args = parser.parse_args(list(argv))

  if args.tiny:
    from ihc_jax.trainers import defaults  # pylint: disable=g-import-not-at-top
    config = defaults.tiny_model(args.size)
  else:
    config = models.default_model_config()
  variables = inference.init_random_variables(config, image_size=args.size)
  rng = np.random.default_rng(0)
  reference = rng.random((args.size, args.size, 3), dtype=np.float32)
  print(f"device: {jax.devices()[0].device_kind}; networks: "
        f"{'tiny' if args.tiny else 'official'} sizes, RANDOM weights; "
        f"codes per image: reference + 2 random")

  for batch in [int(b) for b in args.batches.split(",") if b]:
    pipeline = inference.Pipeline(config, variables, image_size=args.size,
                                  tile_batch=batch)
    images = rng.random((batch, args.size, args.size, 1), dtype=np.float32)
    first, median = _time(lambda: pipeline.colorize(  # pylint: disable=cell-var-from-loop
        images, reference, num_samples=2), args.repeats)
    print(f"batch {batch}: {median / batch:.3f} s per {args.size}x"
          f"{args.size} image ({median:.3f} s per call; first call with "
          f"compilation {first:.1f} s)")

  if args.scan != "none":
    width, height = (int(v) for v in args.scan.lower().split("x"))
    pipeline = inference.Pipeline(config, variables, image_size=args.size,
                                  tile_batch=args.tile_batch)
    scan = rng.random((height, width), dtype=np.float32)
    # Compile the scan's tile signature first so that one timed call
    # suffices: a batch of n tile-sized images runs the same shapes through
    # the same compiled functions (one whole graph, or each network apart
    # when the pipeline is sequential) as each call of the scan.
    tiles = len(tiling.tile_starts(height, args.size, pipeline.overlap)) * len(
        tiling.tile_starts(width, args.size, pipeline.overlap))
    n = min(args.tile_batch, tiles)
    first = timing.time_call(lambda: pipeline.colorize(
        np.zeros((n, args.size, args.size, 1), np.float32), reference, num_samples=2))
    median = timing.time_call(lambda: pipeline.colorize(scan, reference, num_samples=2))
    megapixels = width * height / 1e6
    print(f"tiled scan {width}x{height} ({args.tile_batch} tiles per call, "
          f"overlap {pipeline.overlap}): {median / megapixels:.2f} s per "
          f"megapixel ({median:.2f} s for {tiles} tiles in "
          f"{-(-tiles // n)} calls; compilation {first:.1f} s)")
