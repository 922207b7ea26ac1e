"""The plain forms of the networks' convolutions and pools: XLA's own ops.

These are what GPU and TPU run, and what every CPU fast path
(`ihc_jax.kernels.cpu`) must equal. Each is one `jax.lax` or `flax.linen`
op (or a pad, a resize and one op), differentiated by JAX, so any JAX
transformation goes through them. Lowered, `conv2d` is exactly
`flax.linen.Conv`'s convolution and the pools `flax.linen`'s.

Conventions are PyTorch's (the official networks'), in NHWC with HWIO
kernels: symmetric zero padding, ReflectionPad2d (the edge pixel is not
repeated), Upsample(scale 2, bilinear, align_corners=False), MaxPool2d(k)
and AvgPool2d(k) in floor mode.
"""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

DIMENSION_NUMBERS = ("NHWC", "HWIO", "NHWC")
Padding = tuple[tuple[int, int], tuple[int, int]]


def padding_pairs(padding: int | Sequence[Sequence[int]]) -> Padding:
  """An int p (p on every side) or ((top, bottom), (left, right)) as int pairs."""
  if isinstance(padding, str):
    raise ValueError(f"padding must be an int or ((top, bottom), (left, right)), "
                     f"got {padding!r}")
  if isinstance(padding, int):
    return ((padding, padding), (padding, padding))
  (top, bottom), (left, right) = padding
  return ((int(top), int(bottom)), (int(left), int(right)))


def conv2d(x: jax.Array, kernel: jax.Array, stride: int = 1,
           padding: int | Sequence[Sequence[int]] = 0) -> jax.Array:
  """Convolution with zero padding: `jax.lax.conv_general_dilated`, NHWC / HWIO.

  Args:
    x: [B, H, W, C_in].
    kernel: [kh, kw, C_in, C_out].
    stride: the same in both directions.
    padding: zeros on every side (int) or ((top, bottom), (left, right)).

  Returns:
    [B, H', W', C_out] with H' = (H + top + bottom - kh) // stride + 1.
  """
  return jax.lax.conv_general_dilated(x, kernel, (stride, stride), padding_pairs(padding),
                                      dimension_numbers=DIMENSION_NUMBERS)


def reflect_pad(x: jax.Array, pad: int) -> jax.Array:
  """ReflectionPad2d(pad) on NHWC (the edge pixel is not repeated)."""
  if min(x.shape[1], x.shape[2]) <= pad:
    raise ValueError(
        f"reflection padding of {pad} needs spatial size > {pad}, got {x.shape[1:3]}")
  return jnp.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)), mode="reflect")


def upsample_axis_2x(x: jax.Array, axis: int) -> jax.Array:
  """Linear x2 upsampling of one axis with half-pixel centres, edge-clamped."""
  n = x.shape[axis]
  before = jnp.concatenate([jax.lax.slice_in_dim(x, 0, 1, axis=axis),
                            jax.lax.slice_in_dim(x, 0, n - 1, axis=axis)], axis=axis)
  after = jnp.concatenate([jax.lax.slice_in_dim(x, 1, n, axis=axis),
                           jax.lax.slice_in_dim(x, n - 1, n, axis=axis)], axis=axis)
  even = 0.75 * x + 0.25 * before
  odd = 0.75 * x + 0.25 * after
  shape = list(x.shape)
  shape[axis] = 2 * n
  return jnp.stack([even, odd], axis=axis + 1).reshape(shape)


def upsample_bilinear_2x(x: jax.Array) -> jax.Array:
  """Upsample(scale_factor=2, mode='bilinear', align_corners=False) on NHWC.

  With half-pixel centres, output pixel 2i (2i + 1) of each axis is
  0.75 x[i] + 0.25 x[i - 1] (x[i + 1]), the neighbour index clamped at the
  border, which is what PyTorch's align_corners=False does for x2 scaling.
  Written as these two-tap sums (the official networks' definition) rather
  than `jax.image.resize`, whose bilinear resize contracts every axis with a
  dense [2n, n] weight matrix; the two agree to float rounding.
  """
  return upsample_axis_2x(upsample_axis_2x(x, 1), 2)


def upsample_reflect_conv(x: jax.Array, kernel: jax.Array) -> jax.Array:
  """Conv3x3(ReflectionPad2d(1)(Upsample(2, bilinear)(x))), no bias: the
  U-Nets' up step (original-code.md §3.1), as the three layers in turn.

  Args:
    x: [B, n, m, C_in].
    kernel: [3, 3, C_in, C_out] (HWIO), cast to x's dtype.

  Returns:
    [B, 2n, 2m, C_out] in x's dtype.
  """
  return conv2d(reflect_pad(upsample_bilinear_2x(x), 1), kernel.astype(x.dtype))


def max_pool_blocks(x: jax.Array, window: int) -> jax.Array:
  """MaxPool2d(window): `flax.linen.max_pool` over non-overlapping blocks.

  Its gradient sends each block's cotangent to the block's first maximum in
  row-major order (XLA's select-and-scatter, as PyTorch does)."""
  return nn.max_pool(x, (window, window), strides=(window, window))


def avg_pool_blocks(x: jax.Array, window: int) -> jax.Array:
  """AvgPool2d(window): `flax.linen.avg_pool` over non-overlapping blocks."""
  return nn.avg_pool(x, (window, window), strides=(window, window))
