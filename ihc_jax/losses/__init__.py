"""Loss library: one module per loss family, a registry and `weighted_total`.

Every loss is a pure function of arrays with keyword-only options, returns a
float32 scalar (reduction="mean") or a per-example [B] vector
(reduction="none"). Feature-based losses have a `*_from_features` form for
precomputed VGG19 activations and a wrapper taking frozen `vgg_params`.
See docs/losses.md.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

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
                                       vgg_feature_pair, vgg_features)
from ihc_jax.losses.pixel import l1_loss, pixel_loss
from ihc_jax.losses.reconstruction import (halftone_task_loss,
                                           reconstruction_loss,
                                           recovery_l1_loss, reference_mse_loss)
from ihc_jax.losses.self_similarity import (self_similarity_loss,
                                            self_similarity_matrix)
from ihc_jax.losses.structure import (edge_loss, sobel_gradients,
                                      structure_loss,
                                      structure_loss_from_features)
from ihc_jax.losses.style import gram_matrix, style_loss, style_loss_from_features

LOSSES: dict[str, Callable[..., jax.Array]] = {
    "pixel": pixel_loss,
    "l1": l1_loss,
    "perceptual": perceptual_loss_from_features,
    "reconstruction": reconstruction_loss,
    "recovery_l1": recovery_l1_loss,
    "reference_mse": reference_mse_loss,
    "halftone_task": halftone_task_loss,
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


def check_loss_weights(weights: Mapping[str, float],
                       stage_terms: Iterable[str], *, stage: str) -> None:
  """Checks that a stage's `config.loss` names exactly the terms it computes.

  Every name must be a `LOSSES` key, every term of the stage must have a
  weight (0 switches it off), and no weight may name a term the stage does
  not compute: a typo or a term of another stage would otherwise be ignored
  silently.

  Args:
    weights: loss name -> weight (`config.loss`).
    stage_terms: the names of the terms the stage's step computes.
    stage: the stage's name, for the message.

  Raises:
    KeyError: naming the unknown, foreign and missing names.
  """
  names, terms = set(weights), set(stage_terms)
  problems = []
  unknown = sorted(names - set(LOSSES))
  if unknown:
    problems.append(f"unknown loss names {unknown} (valid: "
                    f"{', '.join(sorted(LOSSES))})")
  foreign = sorted((names & set(LOSSES)) - terms)
  if foreign:
    problems.append(f"weights {foreign} name no term of this stage")
  missing = sorted(terms - names)
  if missing:
    problems.append(f"terms {missing} have no weight (set 0.0 to disable)")
  if problems:
    raise KeyError(f"config.loss of stage {stage!r}: {'; '.join(problems)}; "
                   f"the stage's terms are {sorted(terms)}")


def weighted_total(weights: Mapping[str, float], terms: Mapping[str, jax.Array],
                   ) -> tuple[jax.Array, dict[str, jax.Array]]:
  """Weighted sum of loss terms, each term bound to its weight by name.

  Args:
    weights: loss name -> weight (e.g. `config.loss`, or traced scalars);
      every name must be a key of `LOSSES`. Names whose weight is the number
      0 need no term and are left out.
    terms: loss name -> scalar loss value computed in this step; every term
      must have a weight.

  Returns:
    (total, weighted) where `weighted[name] = weight * terms[name]` (float32)
    for every name with a non-zero weight, and `total` is their sum (a
    float32 zero when there is none).

  Raises:
    KeyError: a weight names an unknown loss, a non-zero weight has no term,
      or a term has no weight.
  """
  for name in weights:
    if name not in LOSSES:
      raise KeyError(f"unknown loss {name!r} in loss weights; valid names are "
                     f"{', '.join(sorted(LOSSES))}")
  unweighted = sorted(set(terms) - set(weights))
  if unweighted:
    raise KeyError(f"loss terms {unweighted} were computed but have no "
                   f"weight; weights: {', '.join(sorted(weights)) or '(none)'}")
  weighted = {}
  for name, weight in weights.items():
    # A traced weight (a weight schedule, the loss study) is never skipped.
    if isinstance(weight, (int, float)) and weight == 0:
      continue
    if name not in terms:
      raise KeyError(f"loss {name!r} has weight {weight} but no term was "
                     f"computed; terms: {', '.join(sorted(terms)) or '(none)'}")
    weighted[name] = jnp.float32(weight) * jnp.asarray(terms[name], jnp.float32)
  total = sum(weighted.values(), jnp.zeros((), jnp.float32))
  return total, weighted


__all__ = [
    "LOSSES", "check_loss_weights", "weighted_total", "binary_cross_entropy",
    "halftone_task_loss", "l1_loss",
    "discriminator_adversarial_loss", "edge_loss", "generator_adversarial_loss",
    "gram_matrix", "hard_histogram", "histogram_loss",
    "histogram_loss_from_histograms", "kl_loss", "latent_loss",
    "mode_seeking_loss", "mode_seeking_loss_from_features", "perceptual_loss",
    "perceptual_loss_from_features", "pixel_loss", "r1_penalty",
    "reconstruction_loss", "recovery_l1_loss", "reference_mse_loss",
    "self_similarity_loss", "self_similarity_matrix", "sobel_gradients",
    "soft_histogram", "structure_loss", "structure_loss_from_features",
    "style_loss", "style_loss_from_features", "vgg_feature_pair", "vgg_features",
]
