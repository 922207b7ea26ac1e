"""The networks' convolutions and pools: one entry point each, XLA's own ops
on GPU and TPU, faster forms on CPU.

Every network calls `conv2d`, `upsample_reflect_conv`, `max_pool_blocks`
and `avg_pool_blocks` from here (through `ihc_jax.models.layers`). Each has
two implementations:

* `reference`: one plain XLA op (a `jax.lax` convolution, `flax.linen`'s
  pools), differentiated by JAX. This is what GPU and TPU run: lowered for
  them, a network's convolutions are exactly `flax.linen.Conv`'s, with XLA's
  own gradients (cuDNN's, the TPU's).
* `cpu`: faster forms for XLA:CPU, the same sums in another order. They
  differentiate to any order in forward and reverse mode (`jax.jvp`,
  `jax.jacfwd`, Hessian-vector products, gradients of gradients), with the
  reference's values to float rounding.

The choice is made by `jax.lax.platform_dependent` when a function is
lowered, so one traced or exported function runs the CPU forms on CPU and
the reference everywhere else. One setting turns the CPU forms off:
`IHC_JAX_CPU_FAST_PATHS=0` in the environment, or `cpu_fast_paths(False)`
around the calls. The context is part of `jax.jit`'s cache key, so a jitted
function called inside it is traced again; the environment variable is read
when a function is traced.

What still differs between hosts: XLA:CPU generates code for the host's
instruction set (AVX2, AVX-512), so float rounding and speed differ between
CPUs, with the fast paths on or off.
"""

from __future__ import annotations

import contextlib
import functools
import os
from collections.abc import Iterator, Sequence

import jax

from ihc_jax.kernels import reference
from ihc_jax.kernels.cpu import conv as cpu_conv
from ihc_jax.kernels.cpu import pools as cpu_pools
from ihc_jax.kernels.cpu import upsample_conv as cpu_upsample_conv

ENV_VAR = "IHC_JAX_CPU_FAST_PATHS"

__all__ = ["ENV_VAR", "avg_pool_blocks", "conv2d", "cpu_fast_paths",
           "cpu_fast_paths_enabled", "max_pool_blocks", "reference",
           "upsample_reflect_conv"]


def _from_environment() -> bool:
  value = os.environ.get(ENV_VAR, "1").strip().lower()
  if value in ("1", "true", "yes", "on", ""):
    return True
  if value in ("0", "false", "no", "off"):
    return False
  raise ValueError(f"{ENV_VAR} must be 1 or 0 (true/false, on/off), got {value!r}")


class _Setting:
  """The context's value (None: as the environment says), in `jax.jit`'s
  cache key where JAX has user contexts (`jax.make_user_context`, JAX 0.7
  on); before, a plain global, and a function jitted outside the context
  keeps the choice it was traced with."""

  def __init__(self):
    make = getattr(jax, "make_user_context", None)
    self._context = make(default_value=None) if make else None
    self._value = None

  @property
  def value(self) -> bool | None:
    return self._context.value if self._context else self._value

  @contextlib.contextmanager
  def __call__(self, value: bool) -> Iterator[None]:
    if self._context:
      with self._context(value):
        yield
      return
    before, self._value = self._value, value
    try:
      yield
    finally:
      self._value = before


_setting = _Setting()


def cpu_fast_paths_enabled() -> bool:
  """Whether functions traced now use the CPU forms when lowered for CPU."""
  value = _setting.value
  return _from_environment() if value is None else value


@contextlib.contextmanager
def cpu_fast_paths(enabled: bool) -> Iterator[None]:
  """Inside this context functions use the CPU forms on CPU (True) or the
  reference everywhere (False), whatever `IHC_JAX_CPU_FAST_PATHS` says.
  Jitted functions are traced again for it (it is in `jax.jit`'s cache key)."""
  with _setting(bool(enabled)):
    yield


def _dispatch(cpu, plain, *args: jax.Array) -> jax.Array:
  if not cpu_fast_paths_enabled():
    return plain(*args)
  # Rematerialised, the CPU branch keeps only its inputs for reverse mode.
  # The conditional that `platform_dependent` stages out carries the
  # residuals of both branches, and on other platforms the reference fills
  # the CPU branch's with zeros (dead code XLA removes): with its inputs
  # only, there are few such (an up step's input; a convolution keeps its
  # input and kernel either way).
  return jax.lax.platform_dependent(*args, cpu=jax.checkpoint(cpu, prevent_cse=False),
                                    default=plain)


def conv2d(x: jax.Array, kernel: jax.Array, stride: int = 1,
           padding: int | Sequence[Sequence[int]] = 0) -> jax.Array:
  """Convolution with zero padding (PyTorch's Conv2d), NHWC / HWIO.

  Args:
    x: [B, H, W, C_in].
    kernel: [kh, kw, C_in, C_out], in x's dtype.
    stride: the same in both directions.
    padding: zeros on every side (int) or ((top, bottom), (left, right)).

  Returns:
    [B, H', W', C_out].
  """
  pads = reference.padding_pairs(padding)
  return _dispatch(functools.partial(cpu_conv.conv2d, stride=stride, padding=pads),
                   functools.partial(reference.conv2d, stride=stride, padding=pads),
                   x, kernel)


def upsample_reflect_conv(x: jax.Array, kernel: jax.Array) -> jax.Array:
  """Conv3x3(ReflectionPad2d(1)(Upsample(2, bilinear)(x))), no bias: the
  U-Nets' up step. x [B, n, m, C_in], kernel [3, 3, C_in, C_out] (cast to
  x's dtype) -> [B, 2n, 2m, C_out]."""
  return _dispatch(cpu_upsample_conv.upsample_reflect_conv,
                   reference.upsample_reflect_conv, x, kernel)


def max_pool_blocks(x: jax.Array, window: int) -> jax.Array:
  """MaxPool2d(window) (stride = window, floor mode) on NHWC; the gradient
  goes to each block's first maximum, as in PyTorch."""
  return _dispatch(functools.partial(cpu_pools.max_pool_blocks, window=window),
                   functools.partial(reference.max_pool_blocks, window=window), x)


def avg_pool_blocks(x: jax.Array, window: int) -> jax.Array:
  """AvgPool2d(window) (stride = window, floor mode) on NHWC."""
  return _dispatch(functools.partial(cpu_pools.avg_pool_blocks, window=window),
                   functools.partial(reference.avg_pool_blocks, window=window), x)
