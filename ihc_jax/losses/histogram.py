"""Histogram loss (paper §2.2) and the histograms it is built on.

L_hist = BCE(H(output), H(reference)) per RGB channel, where H is the frozen
histogram estimator (`ihc_jax.models.histogram.HistogramNet`, applied per
channel by `channel_histograms`); the target distribution is H(reference)
and the prediction H(output). BCE is the element-wise binary cross-entropy
-(t log p + (1 - t) log(1 - p)), p clipped to [eps, 1 - eps], averaged over
channels and bins (PyTorch `BCELoss` on the [C, bins] rows).

Two direct histograms of [0, 1] images are also provided:
* `hard_histogram`: the np.histogram-equivalent per-channel histogram
  (equal bins over [0, 1], the last bin closed; values outside [0, 1] are
  ignored), normalised to sum 1 - H's pretraining target; no gradient.
* `soft_histogram`: a differentiable Gaussian kernel density evaluated at the
  bin centres (bandwidth half a bin width by default), normalised to sum 1
  per channel - an H-free alternative for the loss.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp

from ihc_jax.losses import _common
from ihc_jax.models.histogram import channel_histograms

BCE_EPS = 1e-7


def _check_images(name: str, images: jax.Array) -> None:
  if images.ndim != 4:
    raise ValueError(f"{name} expects NHWC images, got shape {images.shape}")


def hard_histogram(images: jax.Array, *, bins: int = 64) -> jax.Array:
  """Per-channel normalised histogram, like np.histogram(x, bins, (0, 1)).

  Args:
    images: [B, H, W, C] float in [0, 1].
    bins: number of equal-width bins over [0, 1].

  Returns:
    [B, C, bins] float32, each row sums to 1 (0 if no value lies in [0, 1]).
  """
  _check_images("hard_histogram", images)
  b, h, w, c = images.shape
  x = jnp.transpose(jnp.asarray(images, jnp.float32), (0, 3, 1, 2)).reshape(b * c, h * w)
  inside = (x >= 0.0) & (x <= 1.0)
  index = jnp.clip(jnp.floor(x * bins), 0, bins - 1).astype(jnp.int32)
  counts = jax.vmap(lambda i, m: jnp.bincount(i, weights=m, length=bins))(
      index, inside.astype(jnp.float32))
  totals = jnp.maximum(jnp.sum(counts, axis=-1, keepdims=True), 1.0)
  return jax.lax.stop_gradient((counts / totals).reshape(b, c, bins))


def soft_histogram(images: jax.Array, *, bins: int = 64,
                   bandwidth: float | None = None) -> jax.Array:
  """Differentiable per-channel histogram by Gaussian kernels at bin centres.

  Bin k (centre (k + 0.5) / bins) receives sum_x exp(-(x - c_k)^2 / (2 s^2))
  over the pixels of a channel; the bins are then normalised to sum 1. The
  bins are visited one at a time (`jax.lax.map` + `jax.checkpoint`) so memory
  stays at one [B, C, H*W] array instead of [B, C, H*W, bins].

  Args:
    images: [B, H, W, C] float in [0, 1].
    bins: number of bins.
    bandwidth: Gaussian s; default half a bin width, 0.5 / bins.

  Returns:
    [B, C, bins] float32, rows sum to 1.
  """
  _check_images("soft_histogram", images)
  sigma = 0.5 / bins if bandwidth is None else float(bandwidth)
  if sigma <= 0:
    raise ValueError(f"soft_histogram: bandwidth must be > 0, got {bandwidth}")
  b, h, w, c = images.shape
  x = jnp.transpose(jnp.asarray(images, jnp.float32), (0, 3, 1, 2)).reshape(b, c, h * w)
  centres = (jnp.arange(bins, dtype=jnp.float32) + 0.5) / bins

  @jax.checkpoint
  def bin_mass(centre):
    return jnp.sum(jnp.exp(-0.5 * jnp.square((x - centre) / sigma)), axis=-1)

  mass = jnp.moveaxis(jax.lax.map(bin_mass, centres), 0, -1)  # [B, C, bins]
  return mass / (jnp.sum(mass, axis=-1, keepdims=True) + 1e-12)


def binary_cross_entropy(prediction: jax.Array, target: jax.Array, *,
                         eps: float = BCE_EPS,
                         reduction: str = "mean") -> jax.Array:
  """Element-wise BCE with clipping, averaged over all but the batch axis.

  Args:
    prediction: [B, ...] probabilities.
    target: [B, ...] probabilities (same shape).
    eps: `prediction` is clipped to [eps, 1 - eps].
    reduction: "mean" or "none".

  Returns:
    float32 scalar, or [B].
  """
  _common.check_same_shape("binary_cross_entropy", prediction, target)
  p = jnp.clip(jnp.asarray(prediction, jnp.float32), eps, 1.0 - eps)
  t = jnp.asarray(target, jnp.float32)
  bce = -(t * jnp.log(p) + (1.0 - t) * jnp.log1p(-p))
  return _common.reduce(_common.per_example_mean(bce), reduction)


def histogram_loss_from_histograms(output_hist: jax.Array,
                                   reference_hist: jax.Array, *,
                                   eps: float = BCE_EPS,
                                   reduction: str = "mean") -> jax.Array:
  """BCE(prediction = output histograms, target = reference histograms).

  Args:
    output_hist: [B, C, bins] histograms of the output (H or soft_histogram).
    reference_hist: [B, C, bins] histograms of the colour reference.
    eps: BCE clipping.
    reduction: "mean" or "none".

  Returns:
    float32 scalar, or [B].
  """
  return binary_cross_entropy(output_hist, reference_hist, eps=eps,
                              reduction=reduction)


def histogram_loss(h_apply: Callable[..., jax.Array], h_params: Mapping[str, Any],
                   output: jax.Array, reference: jax.Array, *,
                   eps: float = BCE_EPS, reduction: str = "mean") -> jax.Array:
  """Histogram loss through the frozen estimator H.

  Args:
    h_apply: `HistogramNet(...).apply`.
    h_params: H's frozen `params`.
    output: [B, H, W, 3] colorized output in [0, 1].
    reference: [B, H, W, 3] colour reference in [0, 1].
    eps: BCE clipping.
    reduction: "mean" or "none".

  Returns:
    float32 scalar, or [B].
  """
  _common.check_same_shape("histogram_loss", output, reference)
  # Two calls, so that a constant reference has no backward pass through H.
  return histogram_loss_from_histograms(channel_histograms(h_apply, h_params, output),
                                        channel_histograms(h_apply, h_params, reference),
                                        eps=eps, reduction=reduction)
