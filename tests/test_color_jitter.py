"""Colour augmentation (`ihc_jax.data.color_jitter`)."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from ihc_jax import colorspace
from ihc_jax.data import color_jitter


def _images(seed=0, b=4):
  # Mid-range colours, so that no rotation or scale below reaches the clip.
  rng = np.random.default_rng(seed)
  return jnp.asarray(0.35 + 0.3 * rng.random((b, 8, 8, 3)), jnp.float32)


def test_off_is_the_identity():
  images = _images()
  out = color_jitter.color_jitter(jax.random.PRNGKey(0), images)
  np.testing.assert_array_equal(np.asarray(out), np.asarray(images))
  assert not color_jitter.is_active(color_jitter.default_config())


def test_hue_and_saturation_keep_the_luma_and_change_the_colour():
  images = _images()
  out = color_jitter.color_jitter(jax.random.PRNGKey(1), images,
                                  hue_degrees=30.0, saturation=0.3)
  np.testing.assert_allclose(colorspace.rgb_to_gray(out),
                             colorspace.rgb_to_gray(images), atol=1e-5)
  assert float(jnp.abs(out - images).mean()) > 1e-3
  # Each image gets its own draw: the per-image changes differ.
  change = jnp.abs(out - images).mean(axis=(1, 2, 3))
  assert float(change.max() - change.min()) > 1e-4


def test_zero_hue_full_rotation_and_unit_saturation_are_exact():
  images = _images()
  rotation = color_jitter.color_jitter(
      jax.random.PRNGKey(2), images, hue_degrees=1e-6, saturation=1e-6)
  np.testing.assert_allclose(rotation, images, atol=1e-5)


def test_gain_scales_channels_within_its_range():
  images = _images()
  out = color_jitter.color_jitter(jax.random.PRNGKey(3), images, gain=0.2)
  ratio = np.asarray(out / images)
  # One gain per image and channel, inside [0.8, 1.2].
  assert np.allclose(ratio, ratio[:, :1, :1, :], atol=1e-5)
  assert ratio.min() >= 0.8 - 1e-5 and ratio.max() <= 1.2 + 1e-5
  assert np.ptp(ratio[:, 0, 0, :], axis=1).max() > 0.01


def test_deterministic_per_key_and_clipped():
  images = jnp.concatenate([_images(), jnp.ones((1, 8, 8, 3))])
  a = color_jitter.color_jitter(jax.random.PRNGKey(4), images, gain=0.5,
                                hue_degrees=90.0, saturation=0.5)
  b = color_jitter.color_jitter(jax.random.PRNGKey(4), images, gain=0.5,
                                hue_degrees=90.0, saturation=0.5)
  c = color_jitter.color_jitter(jax.random.PRNGKey(5), images, gain=0.5,
                                hue_degrees=90.0, saturation=0.5)
  np.testing.assert_array_equal(a, b)
  assert not np.allclose(a, c)
  assert float(a.min()) >= 0.0 and float(a.max()) <= 1.0


def test_differentiable_and_jittable():
  images = _images()
  fn = jax.jit(lambda x: color_jitter.color_jitter(
      jax.random.PRNGKey(0), x, gain=0.1, hue_degrees=10.0,
      saturation=0.1).sum())
  grad = jax.grad(fn)(images)
  assert grad.shape == images.shape and bool(jnp.all(jnp.isfinite(grad)))
  assert float(jnp.abs(grad).sum()) > 0


@pytest.mark.parametrize("key,value,match", [
    ("gain", -0.1, ">= 0"), ("saturation", 1.0, "< 1"),
    ("hue_degrees", 200.0, "<= 180")])
def test_check_names_the_bad_range(key, value, match):
  config = color_jitter.default_config()
  config[key] = value
  with pytest.raises(ValueError, match=f"augment.{key}.*{match}"):
    color_jitter.check(config)


def test_from_config_matches_the_function():
  config = ml_collections.ConfigDict(dict(gain=0.1, hue_degrees=20.0,
                                          saturation=0.2))
  key, images = jax.random.PRNGKey(7), _images()
  np.testing.assert_array_equal(
      color_jitter.jitter_from_config(key, images, config),
      color_jitter.color_jitter(key, images, gain=0.1, hue_degrees=20.0,
                                saturation=0.2))
  with pytest.raises(ValueError, match=r"\[B,H,W,3\]"):
    color_jitter.color_jitter(key, images[..., :1], gain=0.1)
