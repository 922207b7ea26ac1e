"""KL divergence of the encoder's Gaussian to N(0, I) (paper §2.2).

For a diagonal Gaussian with mean mu and log-variance logvar,
KL = -0.5 * sum_j (1 + logvar_j - mu_j^2 - exp(logvar_j)): summed over the
code dimensions of each sample (BicycleGAN's form), then averaged over the
batch (BicycleGAN sums over the batch too; the mean keeps the value
independent of the batch size and of how the batch is sharded).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from ihc_jax.losses import _common


def kl_loss(mu: jax.Array, logvar: jax.Array, *,
            reduction: str = "mean") -> jax.Array:
  """KL(N(mu, exp(logvar)) || N(0, I)) per sample.

  Args:
    mu: [B, nz] means.
    logvar: [B, nz] log-variances.
    reduction: "mean" or "none".

  Returns:
    float32 scalar, or [B].
  """
  _common.check_same_shape("kl_loss", mu, logvar)
  mu = jnp.asarray(mu, jnp.float32).reshape(mu.shape[0], -1)
  logvar = jnp.asarray(logvar, jnp.float32).reshape(logvar.shape[0], -1)
  per_example = -0.5 * jnp.sum(1.0 + logvar - jnp.square(mu) - jnp.exp(logvar),
                               axis=1)
  return _common.reduce(per_example, reduction)
