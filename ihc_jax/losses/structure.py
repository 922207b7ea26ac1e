"""Structure loss for random-code outputs (paper §2.2).

L_struct = |grad(I_rand) - grad(I)| + ||relu4_1(I_rand) - relu4_1(I)||^2.

The edge map "grad" is a differentiable Sobel gradient of the luma
(ITU-R 601: 0.299 R + 0.587 G + 0.114 B; a 1-channel input is used as is),
so colour is discarded and only structure compared. Borders are handled by
edge replication (no artificial gradient at the image frame). The gradient
map holds both components (d/dx, d/dy), unnormalised Sobel (weights 1, 2, 1;
a unit step gives 4); the L1 term averages over pixels and both components.
The perceptual term is the mean squared error of relu4_1 features.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp

from ihc_jax.losses import _common
from ihc_jax.losses.perceptual import vgg_feature_pair

LUMA_WEIGHTS = (0.299, 0.587, 0.114)


def luma(images: jax.Array) -> jax.Array:
  """ITU-R 601 luma of [B, H, W, 3] images; [B, H, W, 1] passes through."""
  if images.ndim != 4 or images.shape[-1] not in (1, 3):
    raise ValueError(f"expected NHWC images with 1 or 3 channels, got {images.shape}")
  images = jnp.asarray(images, jnp.float32)
  if images.shape[-1] == 1:
    return images
  return jnp.sum(images * jnp.array(LUMA_WEIGHTS, jnp.float32), axis=-1,
                 keepdims=True)


def sobel_gradients(images: jax.Array) -> jax.Array:
  """Sobel gradients of the luma, differentiable.

  Args:
    images: [B, H, W, 1 or 3] float in [0, 1].

  Returns:
    [B, H, W, 2] float32: (horizontal, vertical) derivative, i.e.
    gx = (right column - left column) with row weights (1, 2, 1).
  """
  y = jnp.pad(luma(images)[..., 0], ((0, 0), (1, 1), (1, 1)), mode="edge")
  # Separable Sobel: a [1, 2, 1] smoothing across the derivative direction.
  def smooth_rows(a):
    return a[:, :-2, :] + 2.0 * a[:, 1:-1, :] + a[:, 2:, :]

  def smooth_cols(a):
    return a[:, :, :-2] + 2.0 * a[:, :, 1:-1] + a[:, :, 2:]

  gx = smooth_rows(y[:, :, 2:] - y[:, :, :-2])
  gy = smooth_cols(y[:, 2:, :] - y[:, :-2, :])
  return jnp.stack([gx, gy], axis=-1)


def edge_loss(output: jax.Array, target: jax.Array, *,
              reduction: str = "mean") -> jax.Array:
  """|sobel(output) - sobel(target)|, averaged over pixels and components.

  Args:
    output: [B, H, W, 1 or 3] in [0, 1].
    target: same shape.
    reduction: "mean" or "none".

  Returns:
    float32 scalar, or [B].
  """
  _common.check_same_shape("edge_loss", output, target)
  return _common.reduce(
      _common.distance(sobel_gradients(output), sobel_gradients(target), "l1"),
      reduction)


def structure_loss_from_features(output: jax.Array, target: jax.Array,
                                 output_features: jax.Array,
                                 target_features: jax.Array, *,
                                 reduction: str = "mean") -> jax.Array:
  """Edge L1 plus feature MSE, with precomputed (relu4_1) features.

  Args:
    output: [B, H, W, 3] random-code output in [0, 1].
    target: [B, H, W, 3] ground truth.
    output_features: [B, h, w, C] VGG relu4_1 features of `output`.
    target_features: [B, h, w, C] VGG relu4_1 features of `target`.
    reduction: "mean" or "none".

  Returns:
    float32 scalar, or [B].
  """
  _common.check_same_shape("structure_loss features", output_features,
                           target_features)
  per_example = (edge_loss(output, target, reduction="none")
                 + _common.distance(output_features, target_features, "mse"))
  return _common.reduce(per_example, reduction)


def structure_loss(vgg_params: Mapping[str, Any], output: jax.Array,
                   target: jax.Array, *, layer: str = "relu4_1",
                   normalization: str = "imagenet",
                   reduction: str = "mean") -> jax.Array:
  """Structure loss with an explicit frozen VGG19.

  Args:
    vgg_params: frozen VGG19 `params`.
    output: [B, H, W, 3] in [0, 1].
    target: [B, H, W, 3] in [0, 1].
    layer: VGG layer of the perceptual term.
    normalization: VGG input normalisation.
    reduction: "mean" or "none".

  Returns:
    float32 scalar, or [B].
  """
  _common.check_same_shape("structure_loss", output, target)
  output_feats, target_feats = vgg_feature_pair(vgg_params, output, target, layer=layer,
                                                normalization=normalization)
  return structure_loss_from_features(output, target, output_feats, target_feats,
                                      reduction=reduction)
