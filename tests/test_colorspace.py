"""Tests for ihc_jax.colorspace against hand values and scikit-image."""

import jax
import numpy as np
import pytest
from skimage import color as skcolor

from ihc_jax import colorspace
from ihc_jax.data import demo


def _photo():
  """A real photograph, subsampled to keep the test small."""
  return (demo.demo_images("eval")[0][1][::6, ::6] / 255.0).astype(np.float32)


def test_rgb_to_gray_is_itu_601_and_keeps_channel_axis():
  rgb = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0],
                  [0.2, 0.4, 0.6]], np.float32)
  gray = np.asarray(colorspace.rgb_to_gray(rgb))
  assert gray.shape == (4, 1)
  np.testing.assert_allclose(
      gray[:, 0],
      [0.299, 0.587, 0.114, 0.299 * 0.2 + 0.587 * 0.4 + 0.114 * 0.6],
      atol=1e-7)


def test_gray_to_rgb_replicates():
  gray = np.array([[[0.25]], [[0.75]]], np.float32)
  rgb = np.asarray(colorspace.gray_to_rgb(gray))
  assert rgb.shape == (2, 1, 3)
  np.testing.assert_array_equal(rgb[1, 0], [0.75, 0.75, 0.75])
  np.testing.assert_allclose(np.asarray(colorspace.rgb_to_gray(rgb)), gray,
                             atol=1e-7)


def test_lab_of_white_black_and_red():
  rgb = np.array([[1.0, 1.0, 1.0], [0.0, 0.0, 0.0], [1.0, 0.0, 0.0]],
                 np.float32)
  lab = np.asarray(colorspace.rgb_to_lab(rgb))
  # White is neutral up to the rounding of the published sRGB matrix.
  np.testing.assert_allclose(lab[0], [100.0, 0.0, 0.0], atol=0.01)
  np.testing.assert_allclose(lab[1], [0.0, 0.0, 0.0], atol=1e-4)
  # Known CIE Lab of sRGB red (D65): 53.24, 80.09, 67.20.
  np.testing.assert_allclose(lab[2], [53.24, 80.09, 67.20], atol=0.01)


def test_rgb_to_lab_matches_skimage_on_a_photo():
  photo = _photo()
  # Through jit and vmap, as a training step would call it.
  ours = np.asarray(jax.jit(jax.vmap(colorspace.rgb_to_lab))(photo[None]))[0]
  np.testing.assert_allclose(ours, skcolor.rgb2lab(photo), atol=1e-3)


def test_lab_to_rgb_matches_skimage_and_round_trips():
  photo = _photo()
  lab = skcolor.rgb2lab(photo)
  ours = np.asarray(colorspace.lab_to_rgb(lab.astype(np.float32)))
  np.testing.assert_allclose(ours, skcolor.lab2rgb(lab), atol=1e-4)
  np.testing.assert_allclose(ours, photo, atol=1e-4)


def test_lab_to_rgb_clips_out_of_gamut():
  rgb = np.asarray(colorspace.lab_to_rgb(np.array([[50.0, 120.0, -120.0]])))
  assert rgb.min() >= 0.0 and rgb.max() <= 1.0


@pytest.mark.parametrize("fn, shape", [
    (colorspace.rgb_to_gray, (2, 2, 1)), (colorspace.gray_to_rgb, (2, 2, 3)),
    (colorspace.rgb_to_lab, (2, 4)), (colorspace.lab_to_rgb, (2, 1))])
def test_wrong_channel_count_is_an_error(fn, shape):
  with pytest.raises(ValueError, match="channels"):
    fn(np.zeros(shape, np.float32))


def test_replace_luma_sets_the_luma_and_keeps_the_chroma():
  rng = np.random.default_rng(3)
  rgb = rng.uniform(0.0, 1.0, (2, 5, 5, 3)).astype(np.float32)
  gray = rng.uniform(0.0, 1.0, (2, 5, 5, 1)).astype(np.float32)
  out = np.asarray(colorspace.replace_luma(rgb, gray))
  np.testing.assert_allclose(np.asarray(colorspace.rgb_to_gray(out)), gray,
                             atol=1e-6)
  # Colour differences (what YCbCr's Cb and Cr scale) are unchanged.
  np.testing.assert_allclose(out - out[..., :1], rgb - rgb[..., :1], atol=1e-6)
  with pytest.raises(ValueError, match="replace_luma"):
    colorspace.replace_luma(gray, gray)
