"""Mode-seeking loss (paper §2.2, MSGAN).

L_ms = 1 / (d_g(G(z1), G(z2)) / d_z(z1, z2) + eps), eps = 1e-5, where d_z
is the mean L1 distance between the two codes and d_g is
* "gram" (paper, default): the mean L1 distance between the per-sample Gram
  matrices (C*H*W-normalised, see `style.gram_matrix`) of image features of
  the two outputs (VGG19 relu4_1 in the `mode_seeking_loss` wrapper), or
* "pixel" (official MSGAN form): the mean L1 distance between the outputs.

Distances and the ratio are computed per sample; reduction="mean" averages
the per-sample losses (MSGAN divides batch means instead; per-sample ratios
keep each example's term independent of the rest of the batch).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp

from ihc_jax.losses import _common
from ihc_jax.losses.perceptual import vgg_features
from ihc_jax.losses.style import gram_matrix

MS_EPS = 1e-5


def mode_seeking_loss_from_features(first: jax.Array, second: jax.Array,
                                    z1: jax.Array, z2: jax.Array, *,
                                    distance: str = "gram", eps: float = MS_EPS,
                                    reduction: str = "mean") -> jax.Array:
  """Mode-seeking loss from two outputs' features (or the outputs).

  Args:
    first: [B, h, w, C] features of G(z1) for distance="gram", or the image
      G(z1) itself for distance="pixel".
    second: the same for G(z2).
    z1: [B, nz] first code.
    z2: [B, nz] second code.
    distance: "gram" (paper) or "pixel" (MSGAN).
    eps: added to the ratio.
    reduction: "mean" or "none".

  Returns:
    float32 scalar, or [B].
  """
  _common.check_same_shape("mode_seeking_loss outputs", first, second)
  _common.check_same_shape("mode_seeking_loss codes", z1, z2)
  if distance == "gram":
    d_g = _common.distance(gram_matrix(first), gram_matrix(second), "l1")
  elif distance == "pixel":
    d_g = _common.distance(first, second, "l1")
  else:
    raise ValueError(f"mode_seeking_loss: unknown distance {distance!r}; "
                     "expected 'gram' or 'pixel'")
  d_z = _common.distance(z1, z2, "l1")
  return _common.reduce(1.0 / (d_g / d_z + eps), reduction)


def mode_seeking_loss(vgg_params: Mapping[str, Any], output1: jax.Array,
                      output2: jax.Array, z1: jax.Array, z2: jax.Array, *,
                      layer: str = "relu4_1", normalization: str = "imagenet",
                      eps: float = MS_EPS, reduction: str = "mean") -> jax.Array:
  """Paper-form mode-seeking loss with an explicit frozen VGG19.

  Args:
    vgg_params: frozen VGG19 `params`.
    output1: [B, H, W, 3] G output for z1, [0, 1] scale.
    output2: [B, H, W, 3] G output for z2.
    z1: [B, nz] first code.
    z2: [B, nz] second code.
    layer: VGG layer whose Gram matrices are compared.
    normalization: VGG input normalisation.
    eps: added to the ratio.
    reduction: "mean" or "none".

  Returns:
    float32 scalar, or [B].
  """
  _common.check_same_shape("mode_seeking_loss", output1, output2)
  feats = vgg_features(vgg_params, jnp.concatenate([output1, output2]),
                       layers=(layer,), normalization=normalization)[layer]
  batch = output1.shape[0]
  return mode_seeking_loss_from_features(feats[:batch], feats[batch:], z1, z2,
                                         distance="gram", eps=eps,
                                         reduction=reduction)
