"""`python -m ihc_jax.bench data`: halftone synthesis and input pipeline speed.

Prints, for square images of `--size` px on the default JAX device: AM
halftone throughput (batched, jitted), error-diffusion throughput, the JAX
Canny's throughput, and the train input pipeline's throughput
(`ihc_jax.input_pipeline.benchmark_pipeline`) on the demo source. Figures
are medians over `--repeats` timed runs after one warm-up run.

With `--source` only the train stream of that source is timed:

    python -m ihc_jax.bench data --source folder:/photos --batch 32 \
        [--num-parallel-calls 2] [--cache] [--tfds-data-dir DIR]
    taskset -c 0 python -m ihc_jax.bench data --source folder:/photos \
        --num-parallel-calls 1          # one core

and the output has a line `input pipeline: N images/s (...)`, N counting
the `image` key (each element also decodes a `reference`).
"""

from __future__ import annotations

import argparse
import os
import statistics
from typing import Callable, Sequence

import jax

from ihc_jax import halftone
from ihc_jax.bench import timing


def _median_rate(fn: Callable[[jax.Array], jax.Array], images: jax.Array,
                 repeats: int) -> float:
  """Median images/s of `fn` on `images` over `repeats` runs after a warm-up."""
  return images.shape[0] / timing.time_calls(lambda: fn(images), repeats).median


def bench_am(batch: int, size: int, repeats: int, *, supersample: int = 4,
             tone_curve: str = "official") -> float:
  """Images/s of `synthesize` with the AM method (random period/angle)."""
  config = halftone.default_halftone_config()
  config.supersample = supersample
  config.tone_curve = tone_curve
  config.period_range = (2.5, 4.0)
  key = jax.random.PRNGKey(0)
  gray = jax.random.uniform(key, (batch, size, size, 1))
  step = jax.jit(lambda g: halftone.synthesize(key, g, config))
  return _median_rate(step, gray, repeats)


def bench_error_diffusion(batch: int, size: int, repeats: int, *,
                          kernel: str = "floyd_steinberg") -> float:
  """Images/s of jitted `error_diffusion`."""
  gray = jax.random.uniform(jax.random.PRNGKey(1), (batch, size, size, 1))
  step = jax.jit(lambda g: halftone.error_diffusion(g, kernel=kernel))
  return _median_rate(step, gray, repeats)


def bench_canny(batch: int, size: int, repeats: int) -> float:
  """Images/s of jitted `canny_edges` on AM halftones (many edges)."""
  from ihc_jax.models import canny  # pylint: disable=g-import-not-at-top
  gray = jax.random.uniform(jax.random.PRNGKey(2), (batch, size, size, 1))
  images = halftone.am_screen(gray, period=3.0, angle=37.0)
  return _median_rate(jax.jit(canny.canny_edges), images, repeats)


def bench_pipeline(batch: int, size: int, num_batches: int, repeats: int,
                   source: str = "demo", num_parallel_calls: int = -1,
                   cache: bool = False, tfds_data_dir: str | None = None,
                   with_cpu: bool = False) -> float | tuple[float, float] | str:
  """Median images/s of a source's train stream, or why it could not run.

  With `with_cpu`: (median images/s, median CPU ms per image).
  """
  try:
    from ihc_jax import input_pipeline  # pylint: disable=g-import-not-at-top
  except ImportError as error:
    return f"skipped: ihc_jax.input_pipeline is not importable ({error})"
  if not hasattr(input_pipeline, "benchmark_pipeline"):
    return "skipped: ihc_jax.input_pipeline has no benchmark_pipeline()"
  data_config = input_pipeline.default_data_config()
  data_config.source = source
  if source != "demo":
    # The whole source feeds the train stream; eval is not timed.
    data_config.eval_source = source
  data_config.image_size = size
  data_config.batch_size = batch
  data_config.num_parallel_calls = num_parallel_calls
  data_config.cache = cache
  data_config.tfds_data_dir = tfds_data_dir
  rates = [input_pipeline.measure_pipeline(data_config, num_batches)
           for _ in range(repeats)]
  rate = statistics.median(r.images_per_s for r in rates)
  if with_cpu:
    return rate, statistics.median(r.cpu_ms_per_image for r in rates)
  return rate


def main(argv: Sequence[str]) -> None:
  """Runs the data benchmarks and prints one line per figure."""
  parser = argparse.ArgumentParser(prog="python -m ihc_jax.bench data")
  parser.add_argument("--size", type=int, default=256, help="image side (px)")
  parser.add_argument("--batch", type=int, default=32, help="AM batch size")
  parser.add_argument("--ed-batch", type=int, default=32,
                      help="error-diffusion batch size")
  parser.add_argument("--repeats", type=int, default=5, help="timed runs")
  parser.add_argument("--pipeline-batches", type=int, default=20,
                      help="batches per input-pipeline run")
  parser.add_argument("--skip-pipeline", action="store_true")
  parser.add_argument("--source", default=None,
                      help="time only the train stream of this data source "
                      "(folder:DIR, tfds:NAME[:SPLIT], demo)")
  parser.add_argument("--num-parallel-calls", type=int, default=-1,
                      help="data.num_parallel_calls (-1: AUTOTUNE)")
  parser.add_argument("--cache", action="store_true", help="data.cache=True")
  parser.add_argument("--tfds-data-dir", default=None,
                      help="data.tfds_data_dir for tfds: sources")
  args = parser.parse_args(list(argv))
  if args.source is not None:
    rate = bench_pipeline(args.batch, args.size, args.pipeline_batches,
                          args.repeats, source=args.source,
                          num_parallel_calls=args.num_parallel_calls,
                          cache=args.cache, tfds_data_dir=args.tfds_data_dir,
                          with_cpu=True)
    details = (f"{args.source}, batch {args.batch}, {args.size} px, "
               f"num_parallel_calls={args.num_parallel_calls}, "
               f"cache={args.cache}, {len(os.sched_getaffinity(0))} CPUs "
               f"usable, median of {args.repeats}")
    if isinstance(rate, str):
      print(f"input pipeline: {rate} ({details})")
      return
    rate, cpu_ms = rate
    print(f"input pipeline: {rate:.1f} images/s ({details})")
    # Load-independent: what one image costs in CPU time (all threads).
    print(f"input pipeline CPU: {cpu_ms:.2f} ms per image "
          f"(<= {1000.0 / cpu_ms:.0f} images/s per fully used core)")
    return

  device = jax.devices()[0]
  print(f"device: {device.platform} ({device.device_kind}), "
        f"{args.size}x{args.size} images, median of {args.repeats}")
  for curve in ("official", "linear"):
    rate = bench_am(args.batch, args.size, args.repeats, tone_curve=curve)
    print(f"AM halftone ({curve} curve, 4x4 supersampling, batch "
          f"{args.batch}): {rate:8.1f} images/s")
  rate = bench_am(args.batch, args.size, args.repeats, supersample=1)
  print(f"AM halftone (binary / no supersampling, batch {args.batch}): "
        f"{rate:8.1f} images/s")
  for kernel in ("floyd_steinberg", "jarvis"):
    rate = bench_error_diffusion(args.ed_batch, args.size, args.repeats,
                                 kernel=kernel)
    print(f"error diffusion ({kernel}, batch {args.ed_batch}): "
          f"{rate:8.1f} images/s")
  rate = bench_canny(args.batch, args.size, args.repeats)
  print(f"Canny edges of AM halftones (batch {args.batch}): "
        f"{rate:8.1f} images/s")
  if args.skip_pipeline:
    return
  rate = bench_pipeline(args.batch, args.size, args.pipeline_batches,
                        args.repeats)
  if isinstance(rate, str):
    print(f"input pipeline (demo): {rate}")
  else:
    print(f"input pipeline (demo, batch {args.batch}): {rate:8.1f} images/s")
