"""FLOPs of a step, and model FLOP/s utilisation (MFU) per device.

The FLOP count comes from XLA's cost analysis of the lowered step
(`jax.jit(f).lower(...).cost_analysis()`: the HLO before the backend's
passes, the same count on every backend), and from the compiled step's only
where the lowered one has none (`step_flops`). The compiled count is not
comparable across backends: XLA:GPU rewrites convolutions into cuDNN library
calls, which its cost analysis counts as zero FLOPs (on an H200 the compiled
colour step at paper size, batch 8, counted 58 GFLOP where the lowered one
counts 9.9 TFLOP). Either is a dict, a list of one dict per computation, or
None depending on the backend and version. MFU is achieved FLOP/s over the
device's dense peak for the compute dtype.

The peaks are the vendors' dense (no sparsity) figures. The float32 column is
the plain FP32 rate (no TF32 tensor cores on GPUs; XLA lets float32
convolutions use TF32 on Ampere and later by default, so a float32 MFU can
read above 1 there); TPUs have no separate float32 figure (None).
"""

from __future__ import annotations

import math
from typing import Any

import jax

from ihc_jax import kernels

# (substrings of the lower-cased `device_kind`, bf16/fp16 peak, fp32 peak),
# first match wins: the more specific names come first.
PEAK_FLOPS: tuple[tuple[tuple[str, ...], float, float | None], ...] = (
    (("h100 pcie",), 756e12, 51e12),
    (("h100", "h200", "gh200"), 989e12, 67e12),
    (("a100",), 312e12, 19.5e12),
    (("tpu v5 lite", "tpu v5e"), 197e12, None),
    (("tpu v5p", "tpu v5"), 459e12, None),
    (("tpu v4",), 275e12, None),
)

_HALF = ("bfloat16", "float16")


def flops_per_step(cost_analysis: Any) -> float | None:
  """The 'flops' entry of a compiled step's cost analysis.

  Args:
    cost_analysis: what `Compiled.cost_analysis()` returned: a dict, a list
      or tuple of dicts (older versions; one per device program, all alike,
      so the first is read), or None.

  Returns:
    The FLOP count of one device's program, or None when there is none.
  """
  if isinstance(cost_analysis, (list, tuple)):
    cost_analysis = cost_analysis[0] if cost_analysis else None
  if not isinstance(cost_analysis, dict) or cost_analysis.get("flops") is None:
    return None
  flops = float(cost_analysis["flops"])
  return flops if math.isfinite(flops) and flops >= 0 else None


def lowered_for_count(fn: Any, *args: Any) -> Any:
  """`jax.jit(fn).lower(*args)` traced on the plain path
  (`kernels.cpu_fast_paths(False)`), for `step_flops`: the count is then the
  model's, whatever forms the CPU runs it in (they sum the same products in
  other shapes, which XLA's cost analysis counts differently). Only
  lowered, never compiled or run. `fn` is the step's Python function,
  traced through a new wrapper.
  """
  with kernels.cpu_fast_paths(False):
    return jax.jit(lambda *a: fn(*a)).lower(*args)  # pylint: disable=unnecessary-lambda


def step_flops(lowered: Any, compiled: Any) -> float | None:
  """FLOPs of one step: the lowered step's count, else the compiled one's.

  Args:
    lowered: `jax.jit(f).lower(...)`.
    compiled: `lowered.compile()`.

  Returns:
    The FLOP count, or None when neither analysis has one.
  """
  try:
    flops = flops_per_step(lowered.cost_analysis())
  except (NotImplementedError, RuntimeError, ValueError):
    flops = None  # a backend or version that cannot analyse unoptimised HLO
  return flops if flops is not None else flops_per_step(compiled.cost_analysis())


def peak_flops_per_s(device_kind: str, dtype: str) -> float | None:
  """The dense peak FLOP/s of one device for a compute dtype.

  Args:
    device_kind: `jax.devices()[0].device_kind`, e.g. "NVIDIA H100 80GB HBM3".
    dtype: "bfloat16", "float16" or "float32".

  Returns:
    FLOP/s, or None for an unknown device (any CPU) or dtype.
  """
  kind = device_kind.lower()
  for names, half, single in PEAK_FLOPS:
    if any(name in kind for name in names):
      if dtype in _HALF:
        return half
      return single if dtype == "float32" else None
  return None


def mfu(achieved_flops_per_s: float | None, device_kind: str,
        dtype: str) -> float | None:
  """Model FLOP/s utilisation: achieved FLOP/s over the device's peak.

  Args:
    achieved_flops_per_s: FLOPs per step / seconds per step (one device).
    device_kind: `jax.devices()[0].device_kind`.
    dtype: the compute dtype the peak is taken for.

  Returns:
    A fraction (0.4 = 40 %), or None when the peak or the FLOPs are unknown.
  """
  peak = peak_flops_per_s(device_kind, dtype)
  if peak is None or achieved_flops_per_s is None or not math.isfinite(
      achieved_flops_per_s):
    return None
  return achieved_flops_per_s / peak
