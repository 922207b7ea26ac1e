"""Self-similarity loss (paper §2.2, official `cos_similarity`).

Each image is average-pooled over non-overlapping 4x4 patches (stride 4;
rows/columns beyond a multiple of 4 are dropped, like PyTorch's AvgPool2d),
every patch vector is L2-normalised over channels with 1e-5 added to the
norm, and S = X X^T is the [N, N] cosine self-similarity matrix, N = 4096
patches at 256x256. The loss is the mean squared difference
mean((S(output) - S(target))^2) over the N^2 entries.

Memory. S is 4096 x 4096 float32 = 64 MiB per image, and the backward pass
of the direct form keeps such matrices alive. The loss therefore walks over
blocks of `chunk_rows` rows: the block S_out[r] - S_tgt[r] =
X_out[r] X_out^T - X_tgt[r] X_tgt^T is computed, squared and summed inside
`jax.checkpoint` under `jax.lax.map`, so neither pass keeps more than two
[B, chunk_rows, N] blocks (plus the [B, N, C] patch vectors). Measured with
`compiled.memory_analysis()` on the CPU backend for value-and-gradient at
256x256 (temporaries): unchunked 64.2 MiB per image (1025.5 MiB at batch 8);
chunk_rows=256 (default) 8.4 MiB per image (67.4 MiB at batch 8);
chunk_rows=128 4.4 MiB (35.4 MiB at batch 8). The result equals the
unchunked one (zero rows pad N to a multiple of chunk_rows and contribute
exactly 0).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from ihc_jax.losses import _common

PATCH = 4
NORM_EPS = 1e-5


def patch_vectors(images: jax.Array, *, patch: int = PATCH,
                  eps: float = NORM_EPS) -> jax.Array:
  """Unit-norm patch descriptors.

  Args:
    images: [B, H, W, C] (H, W >= patch).
    patch: pooling size and stride.
    eps: added to each vector's L2 norm before dividing.

  Returns:
    [B, N, C] float32, N = (H // patch) * (W // patch), row-major patches.
  """
  if images.ndim != 4:
    raise ValueError(f"self-similarity expects NHWC images, got shape {images.shape}")
  b, h, w, c = images.shape
  gh, gw = h // patch, w // patch
  if gh == 0 or gw == 0:
    raise ValueError(f"self-similarity: image {h}x{w} is smaller than one {patch}x{patch} patch")
  x = jnp.asarray(images, jnp.float32)[:, :gh * patch, :gw * patch]
  x = x.reshape(b, gh, patch, gw, patch, c).mean(axis=(2, 4)).reshape(b, gh * gw, c)
  # The norm's gradient is 0/0 at a zero vector (a black patch, which tanh
  # outputs give exactly); the double `where` keeps the value and makes
  # that gradient 0 instead of NaN.
  squared = jnp.sum(jnp.square(x), axis=-1, keepdims=True)
  positive = squared > 0
  norm = jnp.where(positive, jnp.sqrt(jnp.where(positive, squared, 1.0)), 0.0)
  return x / (norm + eps)


def self_similarity_matrix(images: jax.Array, *, patch: int = PATCH,
                           eps: float = NORM_EPS) -> jax.Array:
  """The full cosine self-similarity matrix (unchunked; 64 MiB at 256x256).

  Args:
    images: [B, H, W, C].
    patch: pooling size and stride.
    eps: norm epsilon.

  Returns:
    [B, N, N] float32.
  """
  x = patch_vectors(images, patch=patch, eps=eps)
  return jnp.einsum("bnc,bmc->bnm", x, x)


def self_similarity_loss(output: jax.Array, target: jax.Array, *,
                         chunk_rows: int | None = 256, patch: int = PATCH,
                         eps: float = NORM_EPS,
                         reduction: str = "mean") -> jax.Array:
  """mean((S(output) - S(target))^2), computed in row blocks.

  Args:
    output: [B, H, W, C] in [0, 1].
    target: same shape.
    chunk_rows: rows of S per block; None computes the full matrices at once.
    patch: pooling size and stride.
    eps: norm epsilon.
    reduction: "mean" or "none".

  Returns:
    float32 scalar, or [B].
  """
  _common.check_same_shape("self_similarity_loss", output, target)
  x_out = patch_vectors(output, patch=patch, eps=eps)
  x_tgt = patch_vectors(target, patch=patch, eps=eps)
  batch, n, _ = x_out.shape
  if chunk_rows is None or chunk_rows >= n:
    diff = (jnp.einsum("bnc,bmc->bnm", x_out, x_out)
            - jnp.einsum("bnc,bmc->bnm", x_tgt, x_tgt))
    return _common.reduce(jnp.mean(jnp.square(diff), axis=(1, 2)), reduction)
  if chunk_rows < 1:
    raise ValueError(f"self_similarity_loss: chunk_rows must be >= 1, got {chunk_rows}")
  n_chunks = -(-n // chunk_rows)
  pad = ((0, 0), (0, n_chunks * chunk_rows - n), (0, 0))

  def as_blocks(x):  # [B, N, C] -> [n_chunks, B, chunk_rows, C], zero-padded
    x = jnp.pad(x, pad).reshape(batch, n_chunks, chunk_rows, -1)
    return jnp.moveaxis(x, 1, 0)

  @jax.checkpoint
  def block_sum(rows):
    rows_out, rows_tgt = rows
    diff = (jnp.einsum("brc,bmc->brm", rows_out, x_out)
            - jnp.einsum("brc,bmc->brm", rows_tgt, x_tgt))
    return jnp.sum(jnp.square(diff), axis=(1, 2))

  block_sums = jax.lax.map(block_sum, (as_blocks(x_out), as_blocks(x_tgt)))
  per_example = jnp.sum(block_sums, axis=0) / (n * n)
  return _common.reduce(per_example, reduction)
