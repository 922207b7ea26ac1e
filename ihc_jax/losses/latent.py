"""Latent regression loss (paper §2.2).

L_latent = ||z - E(G(.., z))||: the code re-encoded from an output must equal
the code that produced it. Default "l2": the mean squared difference over the
code dimensions (the paper writes ||.||^2); "l1" gives BicycleGAN's mean
absolute form.
"""

from __future__ import annotations

import jax

from ihc_jax.losses import _common


def latent_loss(z: jax.Array, z_reencoded: jax.Array, *, norm: str = "l2",
                reduction: str = "mean") -> jax.Array:
  """Distance between a code and its re-encoding.

  Args:
    z: [B, nz] code used to generate.
    z_reencoded: [B, nz] E's estimate (its mu) from the generated image.
    norm: "l2" (mean squared, default) or "l1" (mean absolute).
    reduction: "mean" or "none".

  Returns:
    float32 scalar, or [B].
  """
  _common.check_same_shape("latent_loss", z, z_reencoded)
  if norm not in ("l1", "l2"):
    raise ValueError(f"latent_loss: unknown norm {norm!r}; expected 'l2' or 'l1'")
  return _common.reduce(_common.distance(z, z_reencoded, norm), reduction)
