"""Tests for the array-only losses: pixel, reconstruction, latent, KL,
adversarial, the registry and weighted_total. Hand-computed values."""

import math

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from ihc_jax import losses
from ihc_jax.losses import adversarial, kl, latent, pixel, reconstruction


def test_pixel_loss_hand_value_and_per_example():
  target = jnp.array([0.5, 1.0]).reshape(1, 1, 2, 1)
  content = jnp.zeros((1, 1, 2, 1))
  output = jnp.array([0.5, 0.0]).reshape(1, 1, 2, 1)
  # 5 * mean([0.25, 1]) + 1 * mean([0, 1]) = 3.125 + 0.5
  assert float(pixel.pixel_loss(content, output, target)) == pytest.approx(3.625)
  assert float(pixel.pixel_loss(content, output, target, content_weight=1.0,
                                output_weight=0.0)) == pytest.approx(0.625)
  batch = jnp.concatenate([target, target])
  per = pixel.pixel_loss(jnp.concatenate([content, target]),
                         jnp.concatenate([output, target]), batch, reduction="none")
  np.testing.assert_allclose(per, [3.625, 0.0], rtol=1e-6)
  with pytest.raises(ValueError, match="shapes differ"):
    pixel.pixel_loss(content, output, jnp.zeros((1, 2, 2, 1)))
  with pytest.raises(ValueError, match="reduction"):
    pixel.pixel_loss(content, output, target, reduction="sum")


def test_reconstruction_terms():
  image = jnp.zeros((2, 1, 2, 3))
  rec = image.at[0].set(0.5)           # L1 per example: [0.5, 0]
  ref = image.at[1].set(2.0)           # MSE per example: [0, 4]
  np.testing.assert_allclose(
      reconstruction.recovery_l1_loss(rec, image, reduction="none"), [0.5, 0.0])
  np.testing.assert_allclose(
      reconstruction.reference_mse_loss(ref, image, reduction="none"), [0.0, 4.0])
  assert float(reconstruction.reconstruction_loss(rec, image, ref, image)) == (
      pytest.approx((0.5 + 4.0) / 2))


def test_latent_loss_l2_default_and_l1():
  z = jnp.array([[1.0, 2.0]])
  zero = jnp.zeros_like(z)
  assert float(latent.latent_loss(z, zero)) == pytest.approx(2.5)
  assert float(latent.latent_loss(z, zero, norm="l1")) == pytest.approx(1.5)
  assert float(latent.latent_loss(z, z)) == 0.0
  with pytest.raises(ValueError, match="norm"):
    latent.latent_loss(z, zero, norm="l3")


def test_kl_hand_values():
  assert float(kl.kl_loss(jnp.zeros((3, 8)), jnp.zeros((3, 8)))) == 0.0
  mu = jnp.array([[1.0, 0.0], [0.0, 0.0]])
  logvar = jnp.array([[0.0, 0.0], [math.log(2.0), 0.0]])
  per = kl.kl_loss(mu, logvar, reduction="none")
  np.testing.assert_allclose(per, [0.5, 0.5 * (1 - math.log(2.0))], rtol=1e-6)
  assert float(kl.kl_loss(mu, logvar)) == pytest.approx(float(per.mean()))


def test_adversarial_modes_hand_values():
  scale0 = jnp.array([1.0, 3.0]).reshape(1, 1, 2, 1)
  scale1 = jnp.zeros((1, 1, 1, 1))
  # lsgan G: mean((x-1)^2) per scale, summed: 2 + 1.
  assert float(adversarial.generator_adversarial_loss([scale0, scale1])) == 3.0
  assert float(adversarial.generator_adversarial_loss(
      scale1, mode="vanilla")) == pytest.approx(math.log(2.0))
  assert float(adversarial.generator_adversarial_loss(
      scale0, mode="hinge")) == pytest.approx(-2.0)
  ones, zeros = jnp.ones((2, 3, 3, 1)), jnp.zeros((2, 3, 3, 1))
  assert float(adversarial.discriminator_adversarial_loss(ones, zeros)) == 0.0
  assert float(adversarial.discriminator_adversarial_loss(
      zeros, ones, mode="lsgan")) == 2.0
  assert float(adversarial.discriminator_adversarial_loss(
      [zeros], [zeros], mode="vanilla")) == pytest.approx(2 * math.log(2.0))
  assert float(adversarial.discriminator_adversarial_loss(
      2 * ones, -2 * ones, mode="hinge")) == 0.0
  assert float(adversarial.discriminator_adversarial_loss(
      zeros, zeros, mode="hinge")) == 2.0
  with pytest.raises(ValueError, match="GAN mode"):
    adversarial.generator_adversarial_loss(zeros, mode="wgan")


def test_r1_penalty_linear_discriminator():
  images = jnp.ones((2, 2, 2, 1))
  d_fn = lambda x: [3.0 * x, jnp.sum(x, axis=(1, 2, 3))]  # grads 3 and 1
  # per example: 0.5 * 4 pixels * (3 + 1)^2 = 32
  np.testing.assert_allclose(
      adversarial.r1_penalty(d_fn, images, reduction="none"), [32.0, 32.0])
  assert float(adversarial.r1_penalty(d_fn, images, gamma=10.0)) == 320.0


def test_losses_are_jittable_and_differentiable():
  rng = np.random.default_rng(0)
  a, b, c = rng.random((3, 2, 4, 4, 3), dtype=np.float32)
  z1, z2 = rng.standard_normal((2, 2, 8), dtype=np.float32)
  cases = [
      (pixel.pixel_loss, (a, b, c)),
      (reconstruction.reconstruction_loss, (a, c, b, c)),
      (latent.latent_loss, (z1, z2)),
      (kl.kl_loss, (z1, z2)),
      (adversarial.generator_adversarial_loss, ([a[..., :1], b[..., :1]],)),
      (adversarial.discriminator_adversarial_loss, ([a], [b])),
  ]
  for fn, args in cases:
    eager = fn(*args)
    value, grads = jax.jit(jax.value_and_grad(fn))(*args)
    np.testing.assert_allclose(value, eager, rtol=1e-6)
    assert all(np.isfinite(g).all() for g in jax.tree_util.tree_leaves(grads))
    assert any(np.abs(g).sum() > 0 for g in jax.tree_util.tree_leaves(grads))
    assert eager.dtype == jnp.float32 and eager.shape == ()


def test_weighted_total():
  terms = {"pixel": jnp.float32(2.0), "kl": jnp.float32(3.0),
           "style": jnp.float32(7.0)}
  total, weighted = losses.weighted_total({"pixel": 0.5, "kl": 2.0, "style": 0.0},
                                          terms)
  assert float(total) == 7.0
  assert set(weighted) == {"pixel", "kl"}
  assert float(weighted["kl"]) == 6.0
  # A weight > 0 whose term was not computed is an error...
  with pytest.raises(KeyError, match="'discriminator' has weight 1.0"):
    losses.weighted_total({"pixel": 1.0, "kl": 1.0, "style": 1.0,
                           "discriminator": 1.0}, terms)
  # ... and so is a computed term without a weight.
  with pytest.raises(KeyError, match=r"\['kl', 'style'\].*no weight"):
    losses.weighted_total({"pixel": 1.0}, terms)
  with pytest.raises(KeyError) as err:
    losses.weighted_total({"pixle": 1.0}, terms)
  assert "pixle" in str(err.value) and "self_similarity" in str(err.value)
  total, weighted = losses.weighted_total({}, {})
  assert float(total) == 0.0 and weighted == {}
  config_weights = ml_collections.ConfigDict({"pixel": 5.0, "kl": 0.0})
  total, weighted = losses.weighted_total(config_weights,
                                          {"pixel": terms["pixel"]})
  assert float(total) == 10.0 and set(weighted) == {"pixel"}


def test_check_loss_weights_names_each_problem():
  losses.check_loss_weights({"pixel": 1.0, "perceptual": 0.0},
                            ("pixel", "perceptual"), stage="ihn")
  with pytest.raises(KeyError) as err:
    losses.check_loss_weights({"pixel": 1.0, "stlye": 1.0, "kl": 1.0},
                              ("pixel", "perceptual"), stage="ihn")
  message = str(err.value)
  assert "unknown loss names ['stlye']" in message
  assert "weights ['kl'] name no term of this stage" in message
  assert "terms ['perceptual'] have no weight" in message
  assert "stage 'ihn'" in message


def test_registry_names_callables():
  assert {"pixel", "perceptual", "reconstruction", "structure", "style", "latent",
          "kl", "adversarial", "self_similarity", "histogram",
          "mode_seeking", "halftone_task", "l1"} <= set(losses.LOSSES)
  assert all(callable(f) for f in losses.LOSSES.values())
