"""Tests for ihc_jax.exemplar (Welsh et al. colour transfer)."""

import functools

import jax
import numpy as np
import pytest

from ihc_jax import colorspace
from ihc_jax import exemplar
from ihc_jax.data import demo

SIZE = 24


@pytest.fixture(scope="module")
def photos():
  """Gray targets and colour references cut from real photographs."""
  images = [image for _, image in demo.demo_images("eval")]
  targets = np.stack([images[0][100:100 + SIZE, 200:200 + SIZE],
                      images[1][150:150 + SIZE, 250:250 + SIZE]]) / 255.0
  references = np.stack([images[2][200:200 + SIZE, 300:300 + SIZE],
                         images[0][50:50 + SIZE, 60:60 + SIZE]]) / 255.0
  gray = np.asarray(colorspace.rgb_to_gray(targets.astype(np.float32)))
  return gray, references.astype(np.float32)


_transfer = jax.jit(functools.partial(exemplar.exemplar_transfer,
                                      num_samples=64, chunk_pixels=256))


def _lightness(rgb):
  return np.asarray(colorspace.rgb_to_lab(rgb))[..., 0]


def test_output_keeps_the_target_lightness(photos):
  gray, references = photos
  out = np.asarray(_transfer(gray, references))
  assert out.shape == (2, SIZE, SIZE, 3)
  assert out.min() >= 0.0 and out.max() <= 1.0
  target_l = _lightness(np.repeat(gray, 3, axis=-1))
  np.testing.assert_allclose(_lightness(out), target_l, atol=0.05)
  # It is colour, not gray: mean chroma of a few Lab units at least.
  lab = np.asarray(colorspace.rgb_to_lab(out))
  assert np.hypot(lab[..., 1], lab[..., 2]).mean() > 3.0


def test_flat_reference_gives_its_hue_everywhere():
  ramp = np.linspace(0.3, 0.7, SIZE, dtype=np.float32)
  # Batch of 2 (a ramp and its mirror) to reuse the compiled function.
  gray = np.stack([np.broadcast_to(ramp[:, None, None], (SIZE, SIZE, 1)),
                   np.broadcast_to(ramp[None, ::-1, None], (SIZE, SIZE, 1))])
  reference = np.broadcast_to(np.array([0.8, 0.4, 0.2], np.float32),
                              (2, SIZE, SIZE, 3))
  out = np.asarray(_transfer(gray, reference))
  lab = np.asarray(colorspace.rgb_to_lab(out))
  reference_lab = np.asarray(colorspace.rgb_to_lab(reference[0, 0, 0]))
  hue = np.arctan2(lab[..., 2], lab[..., 1])
  expected = np.arctan2(reference_lab[2], reference_lab[1])
  chroma = np.hypot(lab[..., 1], lab[..., 2])
  assert (chroma > 5).all()  # mid-gray targets keep the reference chroma
  np.testing.assert_allclose(hue, expected, atol=0.02)


def test_deterministic_jits_and_chunk_invariant(photos):
  gray, references = photos
  first = np.asarray(_transfer(gray, references))
  second = np.asarray(_transfer(gray, references))
  np.testing.assert_array_equal(first, second)
  odd_chunks = np.asarray(jax.jit(functools.partial(
      exemplar.exemplar_transfer, num_samples=64, chunk_pixels=100))(
          gray, references))
  np.testing.assert_allclose(odd_chunks, first, atol=1e-5)


def test_local_std_hand_values():
  values = np.arange(9, dtype=np.float32).reshape(1, 3, 3)
  std = np.asarray(exemplar.local_std(values, 3))
  # The centre window holds 0..8: population std sqrt(60 / 9).
  np.testing.assert_allclose(std[0, 1, 1], np.sqrt(60.0 / 9.0), rtol=1e-5)
  np.testing.assert_allclose(
      np.asarray(exemplar.local_std(np.ones((1, 4, 4), np.float32), 3)), 0.0)


def test_jittered_grid_has_one_sample_per_cell():
  ys, xs = exemplar.jittered_grid(jax.random.PRNGKey(3), 1, 8, 8, 4)
  assert ys.shape == (1, 4)
  cells = sorted(zip((np.asarray(ys[0]) // 4).tolist(),
                     (np.asarray(xs[0]) // 4).tolist()))
  assert cells == [(0, 0), (0, 1), (1, 0), (1, 1)]


def test_bad_shapes_are_errors():
  gray = np.zeros((1, 8, 8, 1), np.float32)
  with pytest.raises(ValueError, match="target_gray"):
    exemplar.exemplar_transfer(gray[..., 0], np.zeros((1, 8, 8, 3)))
  with pytest.raises(ValueError, match="reference_rgb"):
    exemplar.exemplar_transfer(gray, np.zeros((1, 8, 8, 1)))
  with pytest.raises(ValueError, match="batch sizes"):
    exemplar.exemplar_transfer(gray, np.zeros((2, 8, 8, 3)))
