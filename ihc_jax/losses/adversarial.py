"""Adversarial losses for the multi-scale discriminator, and an R1 penalty.

D returns a list of patch logits, one [B, h, w, 1] array per scale; every
loss here takes such a list (or a single array), averages each scale over
its patches and sums over scales, like the official `GANLoss`.

Modes:
  * "lsgan" (default, BicycleGAN's): D: (D(real) - 1)^2 + D(fake)^2;
    G: (D(fake) - 1)^2.
  * "vanilla": binary cross-entropy with logits; D: softplus(-D(real)) +
    softplus(D(fake)); G non-saturating: softplus(-D(fake)).
  * "hinge": D: relu(1 - D(real)) + relu(1 + D(fake)); G: -D(fake).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp

from ihc_jax.losses import _common

GAN_MODES = ("lsgan", "vanilla", "hinge")

Logits = jax.Array | Sequence[jax.Array]


def _as_list(logits: Logits) -> list[jax.Array]:
  if isinstance(logits, (list, tuple)):
    if not logits:
      raise ValueError("adversarial loss: empty list of discriminator outputs")
    return [jnp.asarray(x, jnp.float32) for x in logits]
  return [jnp.asarray(logits, jnp.float32)]


def _check_mode(mode: str) -> None:
  if mode not in GAN_MODES:
    raise ValueError(f"unknown GAN mode {mode!r}; expected one of {GAN_MODES}")


def _sum_over_scales(logits: Logits, fn: Callable[[jax.Array], jax.Array]
                     ) -> jax.Array:
  return sum(_common.per_example_mean(fn(x)) for x in _as_list(logits))


def generator_adversarial_loss(fake_logits: Logits, *, mode: str = "lsgan",
                               reduction: str = "mean") -> jax.Array:
  """Generator side: make D call the fakes real.

  Args:
    fake_logits: D's outputs on generated images, one array per scale.
    mode: "lsgan", "vanilla" (non-saturating) or "hinge".
    reduction: "mean" or "none".

  Returns:
    float32 scalar, or [B].
  """
  _check_mode(mode)
  fn = {"lsgan": lambda x: jnp.square(x - 1.0),
        "vanilla": lambda x: jax.nn.softplus(-x),
        "hinge": lambda x: -x}[mode]
  return _common.reduce(_sum_over_scales(fake_logits, fn), reduction)


def discriminator_adversarial_loss(real_logits: Logits, fake_logits: Logits, *,
                                   mode: str = "lsgan",
                                   reduction: str = "mean") -> jax.Array:
  """Discriminator side: real -> real, fake -> fake (terms summed).

  Args:
    real_logits: D's outputs on real images, one array per scale.
    fake_logits: D's outputs on generated images (stop their gradient to G).
    mode: "lsgan", "vanilla" or "hinge".
    reduction: "mean" or "none".

  Returns:
    float32 scalar, or [B].
  """
  _check_mode(mode)
  real_fn = {"lsgan": lambda x: jnp.square(x - 1.0),
             "vanilla": lambda x: jax.nn.softplus(-x),
             "hinge": lambda x: jax.nn.relu(1.0 - x)}[mode]
  fake_fn = {"lsgan": jnp.square,
             "vanilla": jax.nn.softplus,
             "hinge": lambda x: jax.nn.relu(1.0 + x)}[mode]
  per_example = (_sum_over_scales(real_logits, real_fn)
                 + _sum_over_scales(fake_logits, fake_fn))
  return _common.reduce(per_example, reduction)


def r1_penalty(discriminator_fn: Callable[[jax.Array], Logits],
               real_images: jax.Array, *, gamma: float = 1.0,
               reduction: str = "mean") -> jax.Array:
  """R1 gradient penalty gamma/2 * ||d sum(D(x)) / dx||^2 on real images.

  The discriminator output summed over patches and scales is differentiated
  with respect to each real image (the samples are independent, so one
  gradient of the batch sum gives every per-sample gradient).

  Args:
    discriminator_fn: images [B, H, W, C] -> logits (array or list), e.g.
      `lambda x: D.apply(d_vars, x, z, train=False)`.
    real_images: [B, H, W, C] in [0, 1].
    gamma: penalty weight.
    reduction: "mean" or "none".

  Returns:
    float32 scalar, or [B].
  """
  def total(images):
    return sum(jnp.sum(x) for x in _as_list(discriminator_fn(images)))

  grads = jax.grad(total)(jnp.asarray(real_images, jnp.float32))
  per_example = 0.5 * gamma * jnp.sum(
      jnp.square(grads).reshape(grads.shape[0], -1), axis=1)
  return _common.reduce(per_example, reduction)
