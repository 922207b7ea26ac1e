"""Canny edge detector in JAX that reproduces OpenCV's `cv2.Canny(img, 80, 250)`.

The official code computes the edge map that G receives on the host: the gray
image times 255 cast to uint8 (truncation), then `cv2.Canny` with aperture 3
and the L1 gradient. This module does the same arithmetic on the device, in
integers, so it jits and runs inside a train step:

1. Quantise: clip to [0, 1] (deviation: the official cast wraps values outside
   [0, 1] instead), multiply by 255 in float32 and truncate to an integer.
2. 3x3 Sobel derivatives with replicated borders (OpenCV's Canny uses
   BORDER_REPLICATE), magnitude |gx| + |gy|.
3. Non-maximum suppression in OpenCV's four direction sectors, decided with
   its fixed-point tan(22.5 deg) test; magnitudes outside the image count as 0.
   Ties: horizontal and vertical sectors need > on the left/upper neighbour
   and >= on the right/lower one, diagonal sectors > on both.
4. Double threshold with strict comparisons (m > low, m > high) on the
   thresholds floored to integers.
5. Hysteresis: strong pixels grow into 8-connected weak pixels by repeated
   3x3 dilation in a `lax.while_loop` until nothing changes.

The result is {0, 1} float32 with no gradient (stop_gradient on the input).
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp

Array = jax.Array

# OpenCV's fixed-point tan(22.5 deg) with 15 fractional bits.
_SHIFT = 15
_TG22 = int(math.tan(math.radians(22.5)) * (1 << _SHIFT) + 0.5)
# Dilation steps per convergence check of the hysteresis loop.
_STEPS_PER_CHECK = 4


def quantize_uint8(gray: Array) -> Array:
  """[0, 1] float -> int32 in 0..255 by clip, x 255 and truncation."""
  return jnp.floor(jnp.clip(gray, 0.0, 1.0) * jnp.float32(255.0)).astype(jnp.int32)


def _sobel(image: Array) -> tuple[Array, Array]:
  """Sobel gx, gy of [B,H,W] int32 with replicated borders."""
  p = jnp.pad(image, ((0, 0), (1, 1), (1, 1)), mode="edge")
  row = lambda dy: p[:, 1 + dy:p.shape[1] - 1 + dy, :]
  # Horizontal derivative: smooth [1,2,1] vertically, difference horizontally.
  smooth_v = row(-1) + 2 * row(0) + row(1)  # [B,H,W+2]
  gx = smooth_v[:, :, 2:] - smooth_v[:, :, :-2]
  col = lambda dx: p[:, :, 1 + dx:p.shape[2] - 1 + dx]
  smooth_h = col(-1) + 2 * col(0) + col(1)  # [B,H+2,W]
  gy = smooth_h[:, 2:, :] - smooth_h[:, :-2, :]
  return gx, gy


def _neighbour(mag: Array, dy: int, dx: int) -> Array:
  """mag[y + dy, x + dx] with zeros outside the image."""
  p = jnp.pad(mag, ((0, 0), (1, 1), (1, 1)))
  height, width = mag.shape[1:]
  return p[:, 1 + dy:1 + dy + height, 1 + dx:1 + dx + width]


def _dilate(mask: Array) -> Array:
  """3x3 (8-connected) binary dilation of [B,H,W] bool.

  Separable shifted ORs; much faster on the CPU than `lax.reduce_window`.
  """
  p = jnp.pad(mask, ((0, 0), (0, 0), (1, 1)))
  rows = p[:, :, :-2] | p[:, :, 1:-1] | p[:, :, 2:]
  p = jnp.pad(rows, ((0, 0), (1, 1), (0, 0)))
  return p[:, :-2] | p[:, 1:-1] | p[:, 2:]


def canny_edges(gray: Array, *, low: float = 80.0, high: float = 250.0) -> Array:
  """Canny edges of a gray batch, matching `cv2.Canny(uint8, low, high)`.

  Args:
    gray: [B,H,W,1] float in [0, 1] (values outside are clipped).
    low: lower hysteresis threshold on the L1 Sobel magnitude (0..2040 scale).
    high: upper threshold; OpenCV swaps the two if low > high, so do we.

  Returns:
    [B,H,W,1] float32 in {0, 1}; no gradient flows to `gray`.
  """
  gray = jnp.asarray(gray)
  if gray.ndim != 4 or gray.shape[-1] != 1:
    raise ValueError(f"canny_edges needs gray [B,H,W,1]; got shape {gray.shape}")
  if not jnp.issubdtype(gray.dtype, jnp.floating):
    raise ValueError(f"canny_edges needs float input in [0, 1]; got {gray.dtype}")
  if low > high:
    low, high = high, low
  return _canny(jax.lax.stop_gradient(gray.astype(jnp.float32)),
                low=math.floor(low), high=math.floor(high))


@functools.partial(jax.jit, static_argnames=("low", "high"))
def _canny(gray: Array, *, low: int, high: int) -> Array:
  """`canny_edges` on float32 [B,H,W,1] with integer thresholds."""
  image = quantize_uint8(gray[..., 0])
  gx, gy = _sobel(image)
  mag = jnp.abs(gx) + jnp.abs(gy)

  ax = jnp.abs(gx)
  ay = jnp.abs(gy) << _SHIFT
  tg22x = ax * _TG22
  tg67x = tg22x + (ax << (_SHIFT + 1))
  horizontal = ay < tg22x
  vertical = jnp.logical_and(~horizontal, ay > tg67x)
  same_sign = (gx ^ gy) >= 0  # diagonal "\" when signs agree, else "/"
  keep_h = (mag > _neighbour(mag, 0, -1)) & (mag >= _neighbour(mag, 0, 1))
  keep_v = (mag > _neighbour(mag, -1, 0)) & (mag >= _neighbour(mag, 1, 0))
  keep_d = jnp.where(
      same_sign,
      (mag > _neighbour(mag, -1, -1)) & (mag > _neighbour(mag, 1, 1)),
      (mag > _neighbour(mag, -1, 1)) & (mag > _neighbour(mag, 1, -1)))
  local_max = jnp.where(horizontal, keep_h, jnp.where(vertical, keep_v, keep_d))
  weak = local_max & (mag > low)
  strong = weak & (mag > high)

  def grow(edges):
    for _ in range(_STEPS_PER_CHECK):
      edges = edges | (_dilate(edges) & weak)
    return edges

  def cond(state):
    edges, previous = state
    return jnp.any(edges != previous)

  def body(state):
    edges, _ = state
    return grow(edges), edges

  edges, _ = jax.lax.while_loop(cond, body, (grow(strong), strong))
  return edges[..., None].astype(jnp.float32)
