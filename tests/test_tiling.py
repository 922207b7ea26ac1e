"""Tests for ihc_jax.tiling: exact reconstruction and partition of unity."""

import numpy as np
import pytest

from ihc_jax import tiling


def test_round_up():
  assert tiling.round_up(1, 128) == 128
  assert tiling.round_up(128, 128) == 128
  assert tiling.round_up(129, 128) == 256


def test_tile_starts_cover_with_min_overlap():
  # 100 px, tiles of 32 overlapping >= 8: stride <= 24, so 1 + ceil(68/24) = 4
  # tiles at 0, 68/3, 136/3, 68 rounded.
  assert tiling.tile_starts(100, 32, 8) == [0, 23, 45, 68]
  assert tiling.tile_starts(32, 32, 8) == [0]
  with pytest.raises(ValueError, match="overlap"):
    tiling.tile_starts(100, 32, 32)


@pytest.mark.parametrize("blend", ["cosine", "linear"])
def test_blend_weights_sum_to_one(blend):
  starts = tiling.tile_starts(100, 32, 8)
  weights = tiling.blend_weights_1d(starts, 32, blend=blend)
  total = np.zeros(100)
  for s, w in zip(starts, weights):
    total[s:s + 32] += w
  np.testing.assert_allclose(total, 1.0, atol=1e-12)
  # Outside overlaps the weight is exactly 1, inside strictly between 0 and 1.
  assert weights[0][0] == 1.0 and weights[-1][-1] == 1.0
  overlap = starts[0] + 32 - starts[1]
  assert np.all((weights[1][:overlap] > 0) & (weights[1][:overlap] < 1))


def test_linear_ramp_values():
  # Two tiles of 4 at 0 and 2: overlap of 2, rising ramp (i + .5) / 2.
  weights = tiling.blend_weights_1d([0, 2], 4, blend="linear")
  np.testing.assert_allclose(weights[0], [1, 1, 0.75, 0.25])
  np.testing.assert_allclose(weights[1], [0.25, 0.75, 1, 1])


@pytest.mark.parametrize("shape", [(2, 50, 70, 1), (1, 20, 16, 1),
                                   (1, 33, 90, 2)])
def test_identity_and_linear_reproduce_input(shape):
  rng = np.random.default_rng(0)
  images = rng.random(shape, dtype=np.float32)
  calls = []

  def fn(tiles, index):
    calls.append(tiles.shape)
    assert tiles.shape[1] % 8 == 0 and tiles.shape[2] % 8 == 0
    return {"same": tiles, "affine": 2.0 * tiles + 1.0,
            "index": np.broadcast_to(
                index[:, None, None, None].astype(np.float32),
                tiles.shape[:3] + (1,))}

  out = tiling.tiled_apply(fn, images, tile=24, overlap=8, multiple=8,
                           tile_batch=3)
  np.testing.assert_allclose(out["same"], images, atol=1e-6)
  np.testing.assert_allclose(out["affine"], 2 * images + 1, atol=1e-5)
  # Every output pixel comes from tiles of its own image.
  want = np.arange(shape[0], dtype=np.float32)[:, None, None, None]
  np.testing.assert_allclose(out["index"], np.broadcast_to(
      want, shape[:3] + (1,)), atol=1e-6)
  assert len(set(calls)) == 1  # one shape -> one compilation


def test_small_image_is_reflect_padded_to_multiple():
  images = np.arange(10 * 12, dtype=np.float32).reshape(1, 10, 12, 1)
  seen = []

  def fn(tiles, index):
    seen.append(tiles)
    return {"y": tiles}

  out = tiling.tiled_apply(fn, images, tile=32, overlap=8, multiple=16)
  assert seen[0].shape == (1, 16, 16, 1)
  # Row 10 of the padded tile mirrors row 8 (reflection without the edge).
  np.testing.assert_array_equal(seen[0][0, 10, :12, 0], images[0, 8, :, 0])
  np.testing.assert_array_equal(out["y"], images)


def test_tile_not_multiple_raises():
  with pytest.raises(ValueError, match="multiple of 16"):
    tiling.tiled_apply(lambda t, i: {"y": t}, np.zeros((1, 40, 40, 1)),
                       tile=24, overlap=8, multiple=16)
