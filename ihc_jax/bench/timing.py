"""The one timing helper of the benchmarks: wall-clock seconds per call.

`time_calls(fn, repeats)` runs `fn` once as a warm-up (its time, with any
compilation, is `first`) and then `repeats` times, blocking on the result
of each call (`jax.block_until_ready`, so asynchronous dispatch is
counted), and returns every sample with their median. `time_call` times one
call, `median` a list of samples.
"""

from __future__ import annotations

import dataclasses
import statistics
import time
from collections.abc import Callable
from typing import Any

import jax


@dataclasses.dataclass(frozen=True)
class Timing:
  """first: seconds of the warm-up call; samples: seconds of each timed call."""
  first: float
  samples: tuple[float, ...]

  @property
  def median(self) -> float:
    return median(self.samples)


def median(samples) -> float:
  """The median of `samples` in seconds; NaN for none."""
  return statistics.median(samples) if samples else float("nan")


def time_call(fn: Callable[[], Any]) -> float:
  """Seconds of one call of `fn`, until its result is ready."""
  start = time.perf_counter()
  jax.block_until_ready(fn())
  return time.perf_counter() - start


def time_calls(fn: Callable[[], Any], repeats: int, *, warmup: bool = True) -> Timing:
  """A warm-up call (when `warmup`), then `repeats` timed calls of `fn`."""
  if repeats < 1:
    raise ValueError(f"repeats must be >= 1, got {repeats}")
  first = time_call(fn) if warmup else float("nan")
  return Timing(first, tuple(time_call(fn) for _ in range(repeats)))
