"""Tests of the LPIPS metric (ihc_jax.eval.lpips).

All tests use RANDOM backbone weights and random non-negative heads (no
ImageNet weights exist on the test machines), so they check the computation,
not the calibrated values of the published metric.
"""

import ml_collections
import numpy as np
import pytest

from ihc_jax import weights
from ihc_jax.eval import lpips
from ihc_jax.eval import weights_io


def _random_lpips(net, seed=0):
  variables = weights.random_variables_like(lpips.expected_shapes(net),
                                            seed=seed, init="he_normal")
  for k in range(5):  # Published heads are non-negative; keep that.
    head = variables["params"][f"lin{k}"]
    head["kernel"] = np.abs(head["kernel"])
  return variables


@pytest.fixture(scope="module")
def vgg_variables():
  return _random_lpips("vgg")


def test_layer_shapes_match_the_published_channels():
  for net, channels in lpips.LAYER_CHANNELS.items():
    shapes = lpips.expected_shapes(net)["params"]
    got = tuple(shapes[f"lin{k}"]["kernel"].shape for k in range(5))
    assert got == tuple((1, 1, c, 1) for c in channels)


def test_identical_images_have_zero_distance_and_noise_increases_it(
    vgg_variables):
  rng = np.random.default_rng(0)
  images = rng.uniform(0.2, 0.8, size=(2, 32, 32, 3)).astype(np.float32)
  noise = rng.normal(size=images.shape).astype(np.float32)
  distances = [np.asarray(lpips.lpips_distance(
      vgg_variables, images, np.clip(images + level * noise, 0, 1)))
               for level in (0.0, 0.05, 0.15, 0.4)]
  assert distances[0].shape == (2,)
  np.testing.assert_allclose(distances[0], 0.0, atol=1e-6)
  for smaller, larger in zip(distances, distances[1:]):
    assert np.all(larger > smaller)


def test_alexnet_variant_zero_and_monotonic():
  variables = _random_lpips("alex", seed=1)
  rng = np.random.default_rng(1)
  images = rng.uniform(0.2, 0.8, size=(1, 40, 40, 3)).astype(np.float32)
  noise = rng.normal(size=images.shape).astype(np.float32)
  distances = [float(lpips.lpips_distance(
      variables, images, np.clip(images + level * noise, 0, 1), net="alex")[0])
               for level in (0.0, 0.1, 0.3)]
  assert abs(distances[0]) < 1e-6
  assert distances[0] < distances[1] < distances[2]


def test_distance_is_symmetric_and_accepts_gray(vgg_variables):
  rng = np.random.default_rng(2)
  a = rng.uniform(size=(1, 16, 16, 1)).astype(np.float32)
  b = rng.uniform(size=(1, 16, 16, 1)).astype(np.float32)
  ab = lpips.lpips_distance(vgg_variables, a, b)
  ba = lpips.lpips_distance(vgg_variables["params"], b, a)  # bare params too
  np.testing.assert_allclose(ab, ba, rtol=1e-5)
  rgb = lpips.lpips_distance(vgg_variables, np.repeat(a, 3, -1),
                             np.repeat(b, 3, -1))
  np.testing.assert_allclose(ab, rgb, rtol=1e-6)


def test_bad_inputs_are_named():
  variables = {"params": {}}
  with pytest.raises(ValueError, match="equal shapes"):
    lpips.lpips_distance(variables, np.zeros((1, 32, 32, 3)),
                         np.zeros((1, 32, 16, 3)))
  with pytest.raises(ValueError, match="at least 31x31"):
    lpips.lpips_distance(variables, np.zeros((1, 24, 24, 3)),
                         np.zeros((1, 24, 24, 3)), net="alex")
  with pytest.raises(ValueError, match="'vgg' or 'alex'"):
    lpips.lpips_distance(variables, np.zeros((1, 32, 32, 3)),
                         np.zeros((1, 32, 32, 3)), net="squeeze")


def test_load_lpips_missing_file_names_metric_file_and_converter(tmp_path):
  path = str(tmp_path / "lpips_alex.npz")
  config = ml_collections.ConfigDict(
      {"eval": {"lpips_weights": path, "lpips_net": "alex"}})
  with pytest.raises(weights_io.MissingWeightsError) as info:
    lpips.load_lpips(config)
  assert info.value.metric == "lpips-alex"
  assert info.value.path == path
  assert "convert_eval_weights lpips --net=alex" in str(info.value)
  assert "alexnet-owt-7be5be79.pth" in str(info.value)


def test_load_lpips_reads_and_validates_a_file(tmp_path):
  variables = _random_lpips("alex", seed=3)
  path = str(tmp_path / "lpips_alex.npz")
  weights.save_variables(path, variables)
  section = ml_collections.ConfigDict(
      {"lpips_weights": path, "lpips_net": "alex"})
  net, loaded = lpips.load_lpips(section)
  assert net == "alex"
  np.testing.assert_array_equal(
      np.asarray(loaded["params"]["net"]["conv3"]["kernel"]),
      variables["params"]["net"]["conv3"]["kernel"])
  section.lpips_net = "vgg"  # The file holds AlexNet weights.
  with pytest.raises(ValueError, match="missing"):
    lpips.load_lpips(section)


def test_distance_matches_the_formula_on_backbone_features():
  """Recomputes LPIPS in numpy from the backbone's features (random weights)."""
  variables = _random_lpips("alex", seed=4)
  rng = np.random.default_rng(4)
  a = rng.uniform(size=(1, 31, 31, 3)).astype(np.float32)
  b = rng.uniform(size=(1, 31, 31, 3)).astype(np.float32)
  shift = np.array([-0.030, -0.088, -0.188], np.float32)
  scale = np.array([0.458, 0.448, 0.450], np.float32)
  params = variables["params"]
  feats = [lpips.AlexNetFeatures().apply({"params": params["net"]},
                                         ((2 * x - 1) - shift) / scale)
           for x in (a, b)]
  expected = 0.0
  for k, (fa, fb) in enumerate(zip(*feats)):
    fa, fb = np.asarray(fa, np.float64), np.asarray(fb, np.float64)
    na = fa / (np.sqrt((fa ** 2).sum(-1, keepdims=True)) + 1e-10)
    nb = fb / (np.sqrt((fb ** 2).sum(-1, keepdims=True)) + 1e-10)
    weight = np.asarray(params[f"lin{k}"]["kernel"], np.float64)[0, 0, :, 0]
    expected += ((na - nb) ** 2 @ weight).mean()
  got = float(lpips.lpips_distance(variables, a, b, net="alex")[0])
  assert got == pytest.approx(expected, rel=1e-4)
  assert expected > 0
