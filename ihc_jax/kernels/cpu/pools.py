"""XLA:CPU's fast forms of `reference.max_pool_blocks` and `avg_pool_blocks`.

Both pool non-overlapping blocks as a reshape and a reduction. XLA:CPU ran
the gradients of the `reduce_window` forms on slow paths inside the training
steps: the select-and-scatter of VGG19's max pools about 130 ms of the IHN
step at 256 px, E's 8x8 average pool 26 ms of the colour step
(benchmarks/RESULTS.md). Here the average pool's gradient is a broadcast
and the max pool's one elementwise pass.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np


def blocks(x: jax.Array, window: int) -> jax.Array:
  """[B, H, W, C] -> [B, H // window, window, W // window, window, C]; rows
  and columns past the last whole block are dropped."""
  b, h, w, c = x.shape
  out_h, out_w = h // window, w // window
  return x[:, :out_h * window, :out_w * window].reshape(b, out_h, window, out_w, window, c)


def avg_pool_blocks(x: jax.Array, window: int) -> jax.Array:
  """The mean of each block (the same sums as `flax.linen.avg_pool`, float
  rounding apart)."""
  return blocks(x, window).mean(axis=(2, 4))


@functools.partial(jax.custom_jvp, nondiff_argnums=(1,))
def max_pool_blocks(x: jax.Array, window: int) -> jax.Array:
  """The maximum of each block, bit for bit `flax.linen.max_pool`'s.

  Its derivative takes each block's tangent at the block's first maximum in
  row-major order: the choice of XLA's select-and-scatter gradient and of
  PyTorch (`jnp.max` alone would split it between tied maxima, which the
  zeros after a ReLU make common in VGG's features). The tangent is a
  masked sum, so its transpose, the gradient, is one elementwise pass; both
  are `jax.numpy` ops, differentiable again.
  """
  return blocks(x, window).max(axis=(2, 4))


def first_maximum(cells: jax.Array, top: jax.Array) -> jax.Array:
  """[B, H', window, W', window, C] bool: each block's first maximum (none in
  a block with a NaN), for `cells = blocks(x, window)` and their maxima
  `top` (keepdims)."""
  window = cells.shape[2]
  # Row-major rank of each cell in its block; the first maximum has the least.
  rank = (np.arange(window)[:, None, None] * window
          + np.arange(window)[None, None, :]).astype(np.int32)[:, :, :, None]
  ranks = jnp.where(cells == top, rank, window * window)
  first = ranks.min(axis=(2, 4), keepdims=True)
  return (ranks == first) & (first < window * window)


@max_pool_blocks.defjvp
def _max_pool_blocks_jvp(window, primals, tangents):
  (x,), (dx,) = primals, tangents
  cells = blocks(x, window)
  top = cells.max(axis=(2, 4), keepdims=True)
  hit = jax.lax.stop_gradient(first_maximum(cells, top))
  tangent = jnp.where(hit, blocks(dx, window), jnp.zeros((), dx.dtype)).sum(axis=(2, 4))
  return top.squeeze(axis=(2, 4)), tangent
