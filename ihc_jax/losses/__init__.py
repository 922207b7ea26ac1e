"""Loss library: one module per loss family, a registry and `weighted_total`.

Every loss is a pure function of arrays with keyword-only options, returns a
float32 scalar (reduction="mean") or a per-example [B] vector
(reduction="none"). Feature-based losses have a `*_from_features` form for
precomputed VGG19 activations and a wrapper taking frozen `vgg_params`.
See docs/losses.md.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import jax
import jax.numpy as jnp

from ihc_jax.losses.adversarial import (discriminator_adversarial_loss,
                                        generator_adversarial_loss, r1_penalty)
from ihc_jax.losses.histogram import (binary_cross_entropy, hard_histogram,
                                      histogram_loss,
                                      histogram_loss_from_histograms,
                                      soft_histogram)
from ihc_jax.losses.kl import kl_loss
from ihc_jax.losses.latent import latent_loss
from ihc_jax.losses.mode_seeking import (mode_seeking_loss,
                                         mode_seeking_loss_from_features)
from ihc_jax.losses.perceptual import (perceptual_loss,
                                       perceptual_loss_from_features,
                                       vgg_features)
from ihc_jax.losses.pixel import pixel_loss
from ihc_jax.losses.reconstruction import (reconstruction_loss,
                                           recovery_l1_loss, reference_mse_loss)
from ihc_jax.losses.self_similarity import (self_similarity_loss,
                                            self_similarity_matrix)
from ihc_jax.losses.structure import (edge_loss, sobel_gradients,
                                      structure_loss,
                                      structure_loss_from_features)
from ihc_jax.losses.style import gram_matrix, style_loss, style_loss_from_features

LOSSES: dict[str, Callable[..., jax.Array]] = {
    "pixel": pixel_loss,
    "perceptual": perceptual_loss_from_features,
    "reconstruction": reconstruction_loss,
    "recovery_l1": recovery_l1_loss,
    "reference_mse": reference_mse_loss,
    "structure": structure_loss_from_features,
    "edge": edge_loss,
    "style": style_loss_from_features,
    "latent": latent_loss,
    "kl": kl_loss,
    "adversarial": generator_adversarial_loss,
    "discriminator": discriminator_adversarial_loss,
    "r1": r1_penalty,
    "self_similarity": self_similarity_loss,
    "histogram": histogram_loss_from_histograms,
    "mode_seeking": mode_seeking_loss_from_features,
}
"""Loss name (as used in `config.loss`) -> function (feature-based losses in
their `*_from_features` form)."""


def weighted_total(weights: Mapping[str, float], terms: Mapping[str, jax.Array],
                   *, require_all: bool = False
                   ) -> tuple[jax.Array, dict[str, jax.Array]]:
  """Weighted sum of loss terms.

  Args:
    weights: loss name -> weight (e.g. `config.loss`); every name must be a
      key of `LOSSES`. Names with weight 0 are skipped.
    terms: loss name -> scalar loss value computed in this step; terms
      without a weight (or with weight 0) are left out of the total and of
      the returned terms.
    require_all: raise if a name with a non-zero weight has no term (by
      default such names are skipped, so one `config.loss` can serve both
      the generator step and the discriminator step).

  Returns:
    (total, weighted) where `weighted[name] = weight * terms[name]` (float32)
    for every name with a non-zero weight and a term, and `total` is their
    sum (a float32 zero when there is none).

  Raises:
    KeyError: a weight names an unknown loss, or (require_all) a non-zero
      weight has no term.
  """
  for name in weights:
    if name not in LOSSES:
      raise KeyError(f"unknown loss {name!r} in loss weights; valid names are "
                     f"{', '.join(sorted(LOSSES))}")
  weighted = {}
  for name, weight in weights.items():
    if weight == 0:
      continue
    if name not in terms:
      if require_all:
        raise KeyError(f"loss {name!r} has weight {weight} but no term was "
                       f"computed; terms: {', '.join(sorted(terms)) or '(none)'}")
      continue
    weighted[name] = jnp.float32(weight) * jnp.asarray(terms[name], jnp.float32)
  total = sum(weighted.values(), jnp.zeros((), jnp.float32))
  return total, weighted


__all__ = [
    "LOSSES", "weighted_total", "binary_cross_entropy",
    "discriminator_adversarial_loss", "edge_loss", "generator_adversarial_loss",
    "gram_matrix", "hard_histogram", "histogram_loss",
    "histogram_loss_from_histograms", "kl_loss", "latent_loss",
    "mode_seeking_loss", "mode_seeking_loss_from_features", "perceptual_loss",
    "perceptual_loss_from_features", "pixel_loss", "r1_penalty",
    "reconstruction_loss", "recovery_l1_loss", "reference_mse_loss",
    "self_similarity_loss", "self_similarity_matrix", "sobel_gradients",
    "soft_histogram", "structure_loss", "structure_loss_from_features",
    "style_loss", "style_loss_from_features", "vgg_features",
]
