"""Tests for ihc_jax.halftone: AM screens, dither, error diffusion, degradations."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ihc_jax import halftone


def _flat(values, size=48):
  values = np.asarray(values, np.float32)
  return jnp.asarray(np.broadcast_to(values[:, None, None, None],
                                     (len(values), size, size, 1)))


def _curve(gray, tone_curve, dot):
  scale = math.pi / 4 if tone_curve == "official" else 1.0
  if dot == "white":
    return scale * gray
  return 1.0 - scale * (1.0 - gray)


# --- AM screen -------------------------------------------------------------


def test_disc_in_square_area_hand_values():
  area = halftone.disc_in_square_area(jnp.array([0.0, 0.25, 0.5, 0.6, 0.75]))
  # r = 0.6: pi r^2 minus four segments r^2 acos(0.5/r) - 0.5 sqrt(r^2-1/4).
  segment = 0.36 * math.acos(0.5 / 0.6) - 0.5 * math.sqrt(0.36 - 0.25)
  expected = [0.0, math.pi / 16, math.pi / 4, math.pi * 0.36 - 4 * segment, 1.0]
  np.testing.assert_allclose(area, expected, atol=1e-6)


@pytest.mark.parametrize("tone_curve", ["official", "linear"])
@pytest.mark.parametrize("dot", ["white", "black"])
def test_am_flat_patch_mean_follows_tone_curve(tone_curve, dot):
  grays = np.array([0.0, 0.1, 0.25, 0.5, 0.7, 0.85, 1.0], np.float32)
  # Per-sample periods and angles in one batch.
  periods = np.array([3.0, 2.5, 4.0, 3.0, 3.5, 2.7, 3.0], np.float32)
  angles = np.array([0.0, 15.0, 37.0, 45.0, 60.0, 82.0, 30.0], np.float32)
  out = halftone.am_screen(_flat(grays), period=periods, angle=angles,
                           tone_curve=tone_curve, dot=dot)
  assert out.shape == (7, 48, 48, 1) and out.dtype == jnp.float32
  assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0
  means = np.asarray(out.mean(axis=(1, 2, 3)))
  np.testing.assert_allclose(means, _curve(grays, tone_curve, dot), atol=0.02)


def test_am_is_antialiased_by_default_and_binary_on_request():
  gray = _flat([0.5], size=64)
  soft = halftone.am_screen(gray, period=3.0, angle=30.0)
  hard = halftone.am_screen(gray, period=3.0, angle=30.0, binary=True)
  assert np.unique(np.asarray(soft)).size > 2  # fractional edge pixels
  assert set(np.unique(np.asarray(hard)).tolist()) == {0.0, 1.0}
  assert abs(float(hard.mean()) - math.pi / 8) < 0.03


def test_am_dots_are_white_on_black_and_bounded_by_inscribed_disc():
  out = halftone.am_screen(_flat([1.0], size=60), period=3.0, angle=0.0,
                           tone_curve="official")
  # Axis-aligned 3 px cells with pixel centres on cell corners and centres:
  # the brightest mean is the inscribed disc, pi/4.
  assert abs(float(out.mean()) - math.pi / 4) < 0.01
  dark = halftone.am_screen(_flat([0.0]), period=3.0, angle=20.0)
  assert float(dark.max()) == 0.0


@pytest.mark.parametrize("period,angle", [(3.0, 37.0), (2.5, 15.0),
                                          (4.0, 60.0), (3.3, 8.0)])
def test_estimate_screen_recovers_period_and_angle(period, angle):
  gray = _flat([0.5], size=256)
  out = halftone.am_screen(gray, period=period, angle=angle)
  est_period, est_angle = halftone.estimate_screen(out)
  assert abs(est_period - period) <= 0.05 * period
  assert abs(est_angle - angle) <= 0.05 * angle


def test_estimate_screen_on_a_halftoned_photo():
  skimage_data = pytest.importorskip("skimage.data")
  photo = skimage_data.camera()[128:384, 128:384].astype(np.float32) / 255.0
  out = halftone.am_screen(jnp.asarray(photo)[None, :, :, None], period=3.0,
                           angle=127.0 % 90.0)
  est_period, est_angle = halftone.estimate_screen(np.asarray(out)[0, :, :, 0])
  assert abs(est_period - 3.0) <= 0.15
  assert abs(est_angle - 37.0) <= 1.85


def test_estimate_screen_rejects_tiny_input():
  with pytest.raises(ValueError, match="16x16"):
    halftone.estimate_screen(np.zeros((8, 8)))


def test_am_jit_and_vmap_match_batched_call():
  key = jax.random.PRNGKey(0)
  gray = jax.random.uniform(key, (3, 24, 20, 1))
  periods = jnp.array([2.5, 3.0, 4.0])
  angles = jnp.array([10.0, 45.0, 70.0])
  batched = halftone.am_screen(gray, period=periods, angle=angles)
  jitted = jax.jit(lambda g, p, a: halftone.am_screen(g, period=p, angle=a))(
      gray, periods, angles)
  mapped = jax.vmap(lambda g, p, a: halftone.am_screen(
      g[None], period=p, angle=a)[0])(gray, periods, angles)
  np.testing.assert_allclose(jitted, batched, atol=1e-6)
  np.testing.assert_allclose(mapped, batched, atol=1e-6)


def test_am_color_uses_its_angle_per_channel():
  # A batch of 3 must not read the 3 angles as one per sample.
  rgb = jnp.full((3, 256, 256, 3), 0.5)
  out = halftone.am_screen_color(rgb, period=3.0, angles=(15.0, 75.0, 0.0))
  assert out.shape == (3, 256, 256, 3)
  np.testing.assert_array_equal(out[2], out[0])
  found = [halftone.estimate_screen(np.asarray(out)[0, :, :, c])[1]
           for c in range(3)]
  # 0 degrees may come back as ~90 (same square grid).
  found[2] = found[2] % 90.0 if found[2] < 45 else found[2] - 90.0
  np.testing.assert_allclose(found, [15.0, 75.0, 0.0], atol=1.0)
  assert not np.array_equal(out[..., 0], out[..., 1])


def test_am_bad_options_raise():
  gray = _flat([0.5], size=8)
  with pytest.raises(ValueError, match="tone_curve"):
    halftone.am_screen(gray, tone_curve="gamma")
  with pytest.raises(ValueError, match="dot"):
    halftone.am_screen(gray, dot="grey")
  with pytest.raises(ValueError, match="NHWC"):
    halftone.am_screen(jnp.zeros((8, 8, 1)))
  with pytest.raises(ValueError, match="period"):
    halftone.am_screen(gray, period=jnp.ones((5,)))
  with pytest.raises(ValueError, match="period must be > 0"):
    halftone.am_screen(gray, period=0.0)
  with pytest.raises(ValueError, match="3 channel"):
    halftone.am_screen_color(gray)


def test_random_screen_params_ranges():
  period, angle = halftone.random_screen_params(
      jax.random.PRNGKey(1), 64, period_range=(2.5, 4.0), angle_range=(10., 20.))
  assert period.shape == angle.shape == (64,)
  assert 2.5 <= float(period.min()) and float(period.max()) <= 4.0
  assert 10.0 <= float(angle.min()) and float(angle.max()) <= 20.0
  assert float(period.std()) > 0.1
  fixed, _ = halftone.random_screen_params(jax.random.PRNGKey(2), 4,
                                           period_range=(3.0, 3.0))
  np.testing.assert_array_equal(fixed, 3.0)
  with pytest.raises(ValueError, match="period_range"):
    halftone.random_screen_params(jax.random.PRNGKey(0), 2, period_range=(4, 3))


# --- Ordered dither --------------------------------------------------------


def test_bayer_matrices_are_the_classic_ones():
  np.testing.assert_array_equal(halftone.bayer_matrix(2), [[0, 2], [3, 1]])
  np.testing.assert_array_equal(
      halftone.bayer_matrix(4),
      [[0, 8, 2, 10], [12, 4, 14, 6], [3, 11, 1, 9], [15, 7, 13, 5]])
  m8 = halftone.bayer_matrix(8)
  assert sorted(m8.ravel().tolist()) == list(range(64))
  np.testing.assert_array_equal(m8[:4, :4], halftone.bayer_matrix(4) * 4)
  np.testing.assert_array_equal(m8[4:, 4:], halftone.bayer_matrix(4) * 4 + 1)
  with pytest.raises(ValueError, match="2, 4 or 8"):
    halftone.bayer_matrix(3)


@pytest.mark.parametrize("size", [2, 4, 8])
def test_ordered_dither_flat_levels(size):
  levels = np.arange(size * size + 1) / (size * size)
  out = np.asarray(halftone.ordered_dither(_flat(levels, size=2 * size),
                                           size=size))
  assert set(np.unique(out).tolist()) <= {0.0, 1.0}
  # Gray k/n^2 whitens exactly k pixels of each n x n tile.
  np.testing.assert_array_equal(out[:, :size, :size].sum(axis=(1, 2, 3)),
                                np.arange(size * size + 1))
  # The pixel with Bayer index 0 turns white first.
  index0 = np.argwhere(halftone.bayer_matrix(size) == 0)[0]
  assert out[1, index0[0], index0[1], 0] == 1.0


def test_ordered_dither_crops_tiles_to_odd_sizes():
  out = halftone.ordered_dither(jnp.full((1, 5, 7, 1), 0.5), size=4)
  assert out.shape == (1, 5, 7, 1)
  np.testing.assert_array_equal(out[0, :4, :4, 0],
                                halftone.bayer_matrix(4) < 8)


# --- Error diffusion -------------------------------------------------------


def _error_diffusion_reference(image, kernel, serpentine):
  """Plain per-pixel loop in float32 (the specification)."""
  denominator, taps = halftone.DIFFUSION_KERNELS[kernel]
  buffer = np.array(image, np.float32)
  height, width = buffer.shape
  out = np.zeros_like(buffer)
  for y in range(height):
    backwards = serpentine and y % 2 == 1
    for x in (range(width - 1, -1, -1) if backwards else range(width)):
      value = buffer[y, x]
      out[y, x] = np.float32(1.0) if value >= np.float32(0.5) else np.float32(0.0)
      error = np.float32(value - out[y, x])
      for dy, dx, numerator in taps:
        yy, xx = y + dy, (x - dx if backwards else x + dx)
        if yy < height and 0 <= xx < width:
          weight = np.float32(numerator) / np.float32(denominator)
          buffer[yy, xx] = np.float32(buffer[yy, xx] + np.float32(error * weight))
  return out


def test_error_diffusion_hand_computed_row():
  # 0.5 -> 1 (error -0.5); 0.5 - 0.5*7/16 = 0.28125 -> 0;
  # 0.5 + 0.28125*7/16 = 0.623 -> 1.
  out = halftone.error_diffusion(jnp.full((1, 1, 3, 1), 0.5))
  np.testing.assert_array_equal(out[0, 0, :, 0], [1.0, 0.0, 1.0])


@pytest.mark.parametrize("kernel", ["floyd_steinberg", "jarvis"])
@pytest.mark.parametrize("serpentine", [False, True])
def test_error_diffusion_bit_identical_to_reference(kernel, serpentine):
  rng = np.random.default_rng(0)
  ramp = np.tile(np.linspace(0.0, 1.0, 21, dtype=np.float32), (17, 1))
  images = np.stack([rng.random((17, 21), np.float32), ramp,
                     np.full((17, 21), 1.0 / 3.0, np.float32)])
  out = jax.jit(lambda g: halftone.error_diffusion(
      g, kernel=kernel, serpentine=serpentine))(jnp.asarray(images)[..., None])
  expected = np.stack([_error_diffusion_reference(i, kernel, serpentine)
                       for i in images])
  np.testing.assert_array_equal(np.asarray(out)[..., 0], expected)
  # Error diffusion preserves the mean up to the error lost at the borders.
  assert abs(float(out[1].mean()) - ramp.mean()) < 0.05


@pytest.mark.parametrize("shape", [(1, 1), (3, 2)])
def test_error_diffusion_tiny_images(shape):
  image = np.random.default_rng(1).random(shape, np.float32)
  out = halftone.error_diffusion(jnp.asarray(image)[None, :, :, None],
                                 kernel="jarvis", serpentine=True)
  np.testing.assert_array_equal(
      out[0, :, :, 0], _error_diffusion_reference(image, "jarvis", True))


def test_error_diffusion_channels_and_vmap():
  gray = jax.random.uniform(jax.random.PRNGKey(3), (2, 9, 11, 3))
  batched = halftone.error_diffusion(gray)
  mapped = jax.vmap(lambda g: halftone.error_diffusion(g[None])[0])(gray)
  np.testing.assert_array_equal(batched, mapped)
  np.testing.assert_array_equal(  # channels are independent images
      batched[1, :, :, 1],
      _error_diffusion_reference(np.asarray(gray[1, :, :, 1]),
                                 "floyd_steinberg", False))
  with pytest.raises(ValueError, match="kernel"):
    halftone.error_diffusion(gray, kernel="atkinson")


# --- Degradations and entry points -----------------------------------------


def test_degrade_is_identity_by_default_and_each_part_works():
  key = jax.random.PRNGKey(0)
  image = halftone.am_screen(_flat([0.5], size=32), period=3.0, angle=45.0)
  np.testing.assert_array_equal(halftone.degrade(image, key), image)
  blurred = halftone.degrade(image, key, blur_sigma=2.0)
  assert float(blurred.std()) < 0.5 * float(image.std())
  np.testing.assert_allclose(
      halftone.degrade(jnp.full((1, 8, 8, 1), 0.3), key, blur_sigma=1.0), 0.3,
      atol=1e-6)
  noisy = halftone.degrade(jnp.full((1, 64, 64, 1), 0.5), key, noise_std=0.05)
  assert abs(float(noisy.std()) - 0.05) < 0.005
  jpeg = jax.jit(lambda x: halftone.degrade(x, key, jpeg_quality=50))(image)
  assert jpeg.shape == image.shape
  assert 0.0 < float(jnp.abs(jpeg - image).mean()) < 0.2
  np.testing.assert_allclose(np.asarray(jpeg) * 255.0,
                             np.rint(np.asarray(jpeg) * 255.0), atol=1e-3)
  with pytest.raises(ValueError, match="jpeg_quality"):
    halftone.degrade(image, key, jpeg_quality=0)


def test_synthesize_under_jit_for_every_method():
  key = jax.random.PRNGKey(4)
  gray = jax.random.uniform(key, (2, 16, 16, 1))
  config = halftone.default_halftone_config()
  assert config.method == "am" and tuple(config.period_range) == (3.0, 3.0)
  out = jax.jit(lambda k, g: halftone.synthesize(k, g, config))(key, gray)
  assert out.shape == (2, 16, 16, 1) and out.dtype == jnp.float32
  expected = halftone.am_screen(
      gray, period=3.0, angle=halftone.random_screen_params(
          jax.random.split(key)[0], 2, period_range=(3., 3.),
          angle_range=(0., 90.))[1], tone_curve="official")
  np.testing.assert_allclose(out, expected, atol=1e-6)
  for method in ("bayer", "error_diffusion"):
    config = halftone.default_halftone_config()
    config.method = method
    out = halftone.synthesize(key, gray, config)
    assert set(np.unique(np.asarray(out)).tolist()) <= {0.0, 1.0}
  config.method = "stochastic"
  with pytest.raises(ValueError, match="method"):
    halftone.synthesize(key, gray, config)
  with pytest.raises(ValueError, match="1 channel"):
    halftone.synthesize(key, jnp.zeros((1, 8, 8, 3)), config)


def test_synthesize_color_uses_different_angles_per_channel():
  config = halftone.default_halftone_config()
  config.angle_range = (10.0, 10.0)
  out = halftone.synthesize_color(jax.random.PRNGKey(5),
                                  jnp.full((1, 128, 128, 3), 0.5), config)
  assert out.shape == (1, 128, 128, 3)
  angles = [halftone.estimate_screen(np.asarray(out)[0, :, :, c])[1]
            for c in range(3)]
  np.testing.assert_allclose(angles, [25.0, 85.0, 10.0], atol=1.5)


def test_synthesize_with_color_puts_every_channel_on_the_gray_lattice():
  config = halftone.default_halftone_config()
  key = jax.random.PRNGKey(11)
  rng = np.random.default_rng(0)
  rgb = jnp.asarray(rng.uniform(0.1, 0.9, (2, 48, 48, 3)), jnp.float32)
  gray = jnp.sum(rgb * jnp.asarray([0.299, 0.587, 0.114]), -1, keepdims=True)
  gray_ht, color_ht = halftone.synthesize_with_color(key, gray, rgb, config)
  # The gray halftone is the one the IHN stage draws with the same key.
  np.testing.assert_array_equal(gray_ht, halftone.synthesize(key, gray, config))
  # A channel equal to the gray is screened exactly as the gray: same period,
  # angle and origin; only the dot sizes follow each channel's values.
  same = jnp.concatenate([gray, rgb[..., 1:]], axis=-1)
  _, same_ht = halftone.synthesize_with_color(key, gray, same, config)
  np.testing.assert_array_equal(same_ht[..., :1], gray_ht)
  # Flat channels of different tones: one lattice (the gray's angle), dot
  # sizes that follow the tone curve.
  config.angle_range = (20.0, 20.0)
  flat = jnp.broadcast_to(jnp.asarray([0.2, 0.5, 0.8]), (1, 128, 128, 3))
  flat_gray = jnp.full((1, 128, 128, 1), 0.5)
  _, flat_ht = halftone.synthesize_with_color(key, flat_gray, flat, config)
  angles = [halftone.estimate_screen(np.asarray(flat_ht)[0, :, :, c])[1]
            for c in range(3)]
  np.testing.assert_allclose(angles, [20.0, 20.0, 20.0], atol=1.5)
  means = np.asarray(flat_ht).mean(axis=(0, 1, 2))
  np.testing.assert_allclose(means, np.pi / 4 * np.array([0.2, 0.5, 0.8]),
                             atol=0.02)
