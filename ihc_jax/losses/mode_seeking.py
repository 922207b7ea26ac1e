"""Mode-seeking loss (paper §2.2, MSGAN).

With the ratio r = d_g(G(z1), G(z2)) / d_z(z1, z2), where d_z is the mean L1
distance between the two codes, two forms are offered:

* form="msgan" (the paper's and MSGAN's): L_ms = 1 / (r + eps), eps = 1e-5.
  Unbounded: at the start of training two random outputs are almost equal,
  r ~ 1e-4, and the term is ~1e4 even at weight 0.1; it then dominates every
  other term and drives G to saturated flat colours (measured in the demo,
  docs/training.md).
* form="hinge" (the default of the colour stage): L_ms = max(0, 1 - r / tau),
  in [0, 1]: 1 when the outputs collapse, 0 once the outputs differ by tau
  per unit of code distance (the clamped form of DSGAN, Yang et al., ICLR
  2019, scaled to [0, 1]). Its gradient is bounded and it stops pushing once
  the samples are diverse enough, so it cannot trade realism for ever larger
  differences.

d_g is
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
FORMS = ("hinge", "msgan")


def mode_seeking_loss_from_features(first: jax.Array, second: jax.Array,
                                    z1: jax.Array, z2: jax.Array, *,
                                    distance: str = "gram", form: str = "msgan",
                                    eps: float = MS_EPS, tau: float = 0.05,
                                    reduction: str = "mean") -> jax.Array:
  """Mode-seeking loss from two outputs' features (or the outputs).

  Args:
    first: [B, h, w, C] features of G(z1) for distance="gram", or the image
      G(z1) itself for distance="pixel".
    second: the same for G(z2).
    z1: [B, nz] first code.
    z2: [B, nz] second code.
    distance: "gram" (paper) or "pixel" (MSGAN).
    form: "msgan" (1 / (r + eps), unbounded) or "hinge" (max(0, 1 - r/tau)).
    eps: added to the ratio (form="msgan").
    tau: the ratio at which the hinge form reaches 0 (form="hinge").
    reduction: "mean" or "none".

  Returns:
    float32 scalar, or [B].
  """
  _common.check_same_shape("mode_seeking_loss outputs", first, second)
  if form not in FORMS:
    raise ValueError(f"mode_seeking_loss: unknown form {form!r}; expected "
                     f"one of {FORMS}")
  if form == "hinge" and not tau > 0:
    raise ValueError(f"mode_seeking_loss: tau must be > 0, got {tau}")
  _common.check_same_shape("mode_seeking_loss codes", z1, z2)
  if distance == "gram":
    d_g = _common.distance(gram_matrix(first), gram_matrix(second), "l1")
  elif distance == "pixel":
    d_g = _common.distance(first, second, "l1")
  else:
    raise ValueError(f"mode_seeking_loss: unknown distance {distance!r}; "
                     "expected 'gram' or 'pixel'")
  d_z = _common.distance(z1, z2, "l1")
  ratio = d_g / d_z
  if form == "hinge":
    return _common.reduce(jnp.maximum(0.0, 1.0 - ratio / tau), reduction)
  return _common.reduce(1.0 / (ratio + eps), reduction)


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
