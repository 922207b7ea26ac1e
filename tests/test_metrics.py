"""Tests for ihc_jax.metrics: hand values and parity with scikit-image."""

import jax
import numpy as np
import pytest
from scipy import ndimage
from skimage import metrics as skmetrics

from ihc_jax import metrics
from ihc_jax.data import demo


@pytest.fixture(scope="module")
def photo_pairs():
  """Two real photographs with noise and blur: (clean [2,H,W,3], degraded)."""
  rng = np.random.default_rng(0)
  clean, degraded = [], []
  for _, image in demo.demo_images("eval")[:2]:
    image = (image[:96, :128] / 255.0).astype(np.float32)
    clean.append(image)
  noisy = np.clip(clean[0] + rng.normal(0, 0.08, clean[0].shape), 0, 1)
  blurred = ndimage.gaussian_filter(clean[1], sigma=(1.5, 1.5, 0))
  degraded = [noisy.astype(np.float32), blurred.astype(np.float32)]
  return np.stack(clean), np.stack(degraded)


def test_psnr_hand_value():
  a = np.zeros((1, 4, 4, 1), np.float32)
  b = np.full((1, 4, 4, 1), 0.1, np.float32)
  # MSE 0.01 -> 10 log10(1 / 0.01) = 20 dB; with max 255 on the same data
  # 10 log10(255^2 / 0.01).
  np.testing.assert_allclose(float(metrics.psnr(a, b)), 20.0, atol=1e-4)
  np.testing.assert_allclose(float(metrics.psnr(a, b, max_val=255.0)),
                             10 * np.log10(255.0**2 / 0.01), atol=1e-3)
  assert np.isinf(float(metrics.psnr(a, a)))


def test_psnr_matches_skimage(photo_pairs):
  clean, degraded = photo_pairs
  ours = np.asarray(metrics.psnr(clean, degraded, reduction="none"))
  expected = [skmetrics.peak_signal_noise_ratio(c, d, data_range=1)
              for c, d in zip(clean, degraded)]
  assert ours.shape == (2,)
  np.testing.assert_allclose(ours, expected, atol=1e-4)
  np.testing.assert_allclose(float(metrics.psnr(clean, degraded)),
                             np.mean(expected), atol=1e-4)


def test_ssim_matches_skimage(photo_pairs):
  clean, degraded = photo_pairs
  ours = np.asarray(jax.jit(
      lambda a, b: metrics.ssim(a, b, reduction="none"))(clean, degraded))
  expected = [skmetrics.structural_similarity(
      c, d, gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
      data_range=1, channel_axis=-1) for c, d in zip(clean, degraded)]
  np.testing.assert_allclose(ours, expected, atol=1e-4)
  assert 0.1 < ours.min() and ours.max() < 0.99  # degraded, not identical


def test_ssim_gray_and_max_val(photo_pairs):
  clean, degraded = photo_pairs
  gray_clean, gray_degraded = clean[..., :1], degraded[..., :1]
  expected = skmetrics.structural_similarity(
      gray_clean[0, ..., 0] * 255, gray_degraded[0, ..., 0] * 255,
      gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
      data_range=255)
  ours = metrics.ssim(gray_clean[:1] * 255, gray_degraded[:1] * 255,
                      max_val=255.0)
  np.testing.assert_allclose(float(ours), expected, atol=1e-4)


def test_ssim_of_identical_images_is_one():
  image = np.random.default_rng(1).uniform(size=(1, 16, 16, 3))
  np.testing.assert_allclose(float(metrics.ssim(image, image)), 1.0,
                             atol=1e-6)


def test_gaussian_window_taps():
  taps = np.asarray(metrics.gaussian_window(3, 1.0))
  expected = np.exp(-0.5 * np.array([1.0, 0.0, 1.0]))
  np.testing.assert_allclose(taps, expected / expected.sum(), atol=1e-7)


def test_bad_inputs_are_errors():
  a = np.zeros((1, 8, 8, 3), np.float32)
  with pytest.raises(ValueError, match="same shape"):
    metrics.psnr(a, a[..., :1])
  with pytest.raises(ValueError, match="NHWC"):
    metrics.ssim(a[0], a[0])
  with pytest.raises(ValueError, match="at least 11x11"):
    metrics.ssim(a, a)
  with pytest.raises(ValueError, match="reduction"):
    metrics.psnr(a, a + 0.1, reduction="sum")


def test_chroma_distance_and_saturated_fraction():
  photo = np.asarray(demo.demo_images("eval")[0][1][:64, :64], np.float32)
  photo = photo[None] / 255.0
  gray = np.repeat(photo.mean(-1, keepdims=True), 3, -1)
  stats = np.asarray(metrics.chroma_statistics(photo))[0]
  # Gray has no chroma: its distance to the photo is the size of the photo's
  # chroma statistics; the photo's own distance is 0.
  assert float(metrics.chroma_distance(gray, photo)) == pytest.approx(
      float(np.linalg.norm(stats)), rel=1e-3, abs=0.05)
  assert float(metrics.chroma_distance(photo, photo)) == pytest.approx(
      0.0, abs=1e-4)
  np.testing.assert_allclose(metrics.chroma_statistics(photo[..., :1]),
                             np.zeros((1, 4)))
  red = np.zeros((1, 8, 8, 3), np.float32)
  red[..., 0] = 1.0  # C* of sRGB red is about 104
  half = red.copy()
  half[:, :4] = 0.5
  np.testing.assert_allclose(
      metrics.saturated_fraction(np.concatenate([red, gray[:, :8, :8], half]),
                                 reduction="none"), [1.0, 0.0, 0.5])
