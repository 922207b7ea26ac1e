"""Gram-matrix style loss (paper §2.2).

L_style = ||g(relu4_1(I_out)) - g(relu4_1(I_ref))||^2 with g the Gram matrix.

Default: per-sample Grams G_b = F_b^T F_b / (C * H * W) with F_b the
[H*W, C] features of sample b, and the mean squared error between the two
[C, C] Grams of each sample.

`cross_batch=True` reproduces the official `gram_matrix` helper: the
features are reshaped to (B*C, H*W) and G = F F^T / (B*C*H*W), a
[B*C, B*C] matrix that also correlates different samples of the batch (the
same as the per-sample form only for B = 1); the loss is then the MSE over
that whole matrix, so it has no per-example form.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp

from ihc_jax.losses import _common
from ihc_jax.losses.perceptual import vgg_feature_pair


def gram_matrix(features: jax.Array, *, cross_batch: bool = False) -> jax.Array:
  """Gram matrix of NHWC features.

  Args:
    features: [B, H, W, C].
    cross_batch: official cross-batch form (see module docstring).

  Returns:
    [B, C, C] (per sample, / (C*H*W)) or [B*C, B*C] (cross_batch,
    / (B*C*H*W)), float32.
  """
  if features.ndim != 4:
    raise ValueError(f"gram_matrix expects NHWC features, got shape {features.shape}")
  b, h, w, c = features.shape
  f = jnp.asarray(features, jnp.float32).reshape(b, h * w, c)
  if cross_batch:
    rows = jnp.transpose(f, (0, 2, 1)).reshape(b * c, h * w)
    return rows @ rows.T / (b * c * h * w)
  return jnp.einsum("bnc,bnd->bcd", f, f) / (c * h * w)


def style_loss_from_features(features: jax.Array, target_features: jax.Array, *,
                             cross_batch: bool = False,
                             reduction: str = "mean") -> jax.Array:
  """MSE between Gram matrices of two feature maps.

  Args:
    features: [B, h, w, C] features of the output.
    target_features: [B, h, w, C] features of the style source.
    cross_batch: official cross-batch Gram (only reduction="mean").
    reduction: "mean" or "none".

  Returns:
    float32 scalar, or [B].
  """
  _common.check_same_shape("style_loss", features, target_features)
  diff = (gram_matrix(features, cross_batch=cross_batch)
          - gram_matrix(target_features, cross_batch=cross_batch))
  if cross_batch:
    if reduction != "mean":
      raise ValueError("style_loss: cross_batch=True mixes samples and has no "
                       "per-example form; use reduction='mean'")
    return jnp.mean(jnp.square(diff))
  return _common.reduce(_common.per_example_mean(jnp.square(diff)), reduction)


def style_loss(vgg_params: Mapping[str, Any], output: jax.Array,
               style_image: jax.Array, *, layer: str = "relu4_1",
               cross_batch: bool = False, normalization: str = "imagenet",
               reduction: str = "mean") -> jax.Array:
  """Style loss with an explicit frozen VGG19.

  Args:
    vgg_params: frozen VGG19 `params`.
    output: [B, H, W, 3] in [0, 1].
    style_image: [B, H, W, 3] in [0, 1], the same shape as `output`.
    layer: VGG layer (relu4_1 per the paper and the code).
    cross_batch: official cross-batch Gram.
    normalization: VGG input normalisation.
    reduction: "mean" or "none".

  Returns:
    float32 scalar, or [B].
  """
  _common.check_same_shape("style_loss", output, style_image)
  output_feats, style_feats = vgg_feature_pair(vgg_params, output, style_image, layer=layer,
                                               normalization=normalization)
  return style_loss_from_features(output_feats, style_feats,
                                  cross_batch=cross_batch, reduction=reduction)
