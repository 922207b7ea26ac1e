"""Ordered (Bayer) dither and error diffusion (Floyd-Steinberg, Jarvis)."""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from ihc_jax.halftone import arrays

Array = jax.Array
ArrayLike = Any

# Weights as (row offset, column offset, numerator); the column offset is in
# the processing direction (mirrored on right-to-left rows in serpentine mode).
DIFFUSION_KERNELS = {
    "floyd_steinberg": (16, ((0, 1, 7), (1, -1, 3), (1, 0, 5), (1, 1, 1))),
    "jarvis": (48, ((0, 1, 7), (0, 2, 5),
                    (1, -2, 3), (1, -1, 5), (1, 0, 7), (1, 1, 5), (1, 2, 3),
                    (2, -2, 1), (2, -1, 3), (2, 0, 5), (2, 1, 3), (2, 2, 1))),
}


def bayer_matrix(size: int) -> np.ndarray:
  """The Bayer index matrix of side `size` (2, 4 or 8), values 0..size^2-1."""
  if size not in (2, 4, 8):
    raise ValueError(f"Bayer matrix size must be 2, 4 or 8; got {size}")
  matrix = np.zeros((1, 1), np.int32)
  while matrix.shape[0] < size:
    matrix = np.block([[4 * matrix, 4 * matrix + 2],
                       [4 * matrix + 3, 4 * matrix + 1]])
  return matrix


def ordered_dither(gray: ArrayLike, *, size: int = 8) -> Array:
  """Ordered dither with a Bayer matrix; a pixel is white if g > (M + 1/2)/n^2.

  A flat patch of gray k/n^2 thus turns exactly k pixels of every n x n tile
  white.

  Args:
    gray: [B,H,W,C] float in [0, 1].
    size: Bayer matrix side n, 2, 4 or 8.

  Returns:
    [B,H,W,C] float32 in {0, 1}.
  """
  gray = arrays.check_nhwc(gray, "gray", None)
  _, height, width, _ = gray.shape
  threshold = (bayer_matrix(size).astype(np.float32) + 0.5) / (size * size)
  reps = (-(-height // size), -(-width // size))
  threshold = np.tile(threshold, reps)[:height, :width]
  return (gray > jnp.asarray(threshold)[None, :, :, None]).astype(jnp.float32)


def _shift_right(row: Array, k: int) -> Array:
  """row[..., x - k] along the last axis, zeros shifted in (k may be < 0)."""
  if k == 0:
    return row
  if abs(k) >= row.shape[-1]:
    return jnp.zeros_like(row)
  zeros = jnp.zeros(row.shape[:-1] + (abs(k),), row.dtype)
  if k > 0:
    return jnp.concatenate([zeros, row[..., :-k]], axis=-1)
  return jnp.concatenate([row[..., -k:], zeros], axis=-1)


def error_diffusion(gray: ArrayLike, *, kernel: str = "floyd_steinberg",
                    serpentine: bool = False) -> Array:
  """Error-diffusion halftone (Floyd-Steinberg or Jarvis-Judice-Ninke).

  Pixels are visited row by row (right to left on odd rows when `serpentine`,
  with the kernel mirrored); a pixel becomes 1 when its value plus diffused
  error is >= 0.5, and the error (value - output) is spread to the unvisited
  neighbours with the kernel weights; error that would leave the image is
  dropped. All arithmetic is float32 and every pixel receives its error terms
  in visiting order, so the result is bit-identical to the straightforward
  per-pixel loop (see tests/test_halftone.py). Rows are a `lax.scan`, the
  pixels of a row an inner `lax.scan` over the batch in parallel; the error
  sent to later rows is added with whole-row vector operations.

  Args:
    gray: [B,H,W,C] float in [0, 1]; channels are halftoned independently.
    kernel: "floyd_steinberg" or "jarvis".
    serpentine: alternate the scan direction from row to row.

  Returns:
    [B,H,W,C] float32 in {0, 1}.
  """
  gray = arrays.check_nhwc(gray, "gray", None)
  if kernel not in DIFFUSION_KERNELS:
    raise ValueError(
        f"kernel must be one of {tuple(DIFFUSION_KERNELS)}; got {kernel!r}")
  return _error_diffusion(gray, kernel=kernel, serpentine=bool(serpentine))


@functools.partial(jax.jit, static_argnames=("kernel", "serpentine"))
def _error_diffusion(gray: Array, *, kernel: str, serpentine: bool) -> Array:
  """`error_diffusion` on validated float32 NHWC input."""
  denominator, taps = DIFFUSION_KERNELS[kernel]
  weights = {(dy, dx): np.float32(n) / np.float32(denominator)
             for dy, dx, n in taps}
  depth = max(dy for dy, _, _ in taps)  # rows below that receive error
  reach = max(dx for dy, dx, _ in taps if dy == 0)  # pixels ahead in the row
  batch, height, width, channels = gray.shape
  # Rows first, then columns, then the flattened batch x channel axis.
  rows = jnp.transpose(gray, (1, 2, 0, 3)).reshape(height, width, -1)
  rows = jnp.transpose(rows, (0, 2, 1))  # [H, N, W]
  n = rows.shape[1]

  def pixel_step(pending, value):
    # pending[k] is the error of the pixel k + 1 places back.
    total = value
    for k in range(reach, 0, -1):  # the oldest error arrived first
      total = total + pending[k - 1] * weights[(0, k)]
    out = jnp.where(total >= 0.5, jnp.float32(1.0), jnp.float32(0.0))
    error = total - out
    pending = (error,) + pending[:-1]
    return pending, (out, error)

  def row_step(carry, row_index):
    buffers = carry  # [depth, N, W]: image + error already sent to next rows
    current = buffers[0]
    if serpentine:
      reverse = row_index % 2 == 1
      flip = lambda x: jnp.where(reverse, x[..., ::-1], x)
    else:
      flip = lambda x: x
    current = flip(current)
    init = tuple(jnp.zeros((n,), jnp.float32) for _ in range(reach))
    _, (out, error) = jax.lax.scan(pixel_step, init, current.T)
    out, error = out.T, error.T  # [N, W] in visiting order
    nxt = []
    for dy in range(1, depth + 1):
      target = flip(buffers[dy]) if dy < depth else flip(
          rows[jnp.minimum(row_index + depth, height - 1)])
      # Sources from left to right in visiting order: a source at x - k sends
      # its error to x with tap (dy, k); the leftmost source comes first.
      for k in sorted({dx for ddy, dx, _ in taps if ddy == dy}, reverse=True):
        target = target + _shift_right(error, k) * weights[(dy, k)]
      nxt.append(flip(target))
    return jnp.stack(nxt), flip(out)

  init_rows = jnp.stack(
      [rows[min(i, height - 1)] for i in range(depth)])  # [depth, N, W]
  _, out = jax.lax.scan(row_step, init_rows, jnp.arange(height))
  out = jnp.transpose(out, (0, 2, 1)).reshape(height, width, batch, channels)
  return jnp.transpose(out, (2, 0, 1, 3))
