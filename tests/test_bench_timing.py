"""`ihc_jax.bench.timing`: the benchmarks' one timing helper."""

import time

import pytest

from ihc_jax.bench import timing


def test_time_calls_warms_up_once_then_times_each_call():
  calls = []

  def fn():
    calls.append(None)
    time.sleep(0.02 if len(calls) == 1 else 0.001)

  result = timing.time_calls(fn, 3)
  assert len(calls) == 4 and len(result.samples) == 3
  assert result.first >= 0.02 > max(result.samples)  # the slow call was the warm-up
  assert result.median == sorted(result.samples)[1]
  result = timing.time_calls(fn, 2, warmup=False)
  assert len(calls) == 6 and len(result.samples) == 2


def test_time_calls_needs_a_repeat():
  with pytest.raises(ValueError, match="repeats"):
    timing.time_calls(lambda: None, 0)


def test_median_of_samples_and_of_none():
  assert timing.median([3.0, 1.0, 2.0]) == 2.0
  assert timing.median([]) != timing.median([])  # NaN
