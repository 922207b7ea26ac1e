"""Tests for the VGG19 feature extractor (random weights on purpose)."""

import logging

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from ihc_jax.models import vgg


def test_layer_names_follow_torchvision_features_order():
  assert len(vgg.LAYER_NAMES) == 37
  assert vgg.LAYER_NAMES.index("relu4_1") == 20  # official features[0:21]
  assert vgg.LAYER_NAMES.index("pool4") == 27    # official features[0:28]
  assert vgg.LAYER_NAMES.index("pool1") == 4
  assert [vgg.LAYER_NAMES.index(n) for n in vgg.CONV_NAMES] == [
      0, 2, 5, 7, 10, 12, 14, 16, 19, 21, 23, 25, 28, 30, 32, 34]


def test_param_count_and_shapes_random_weights():
  params = vgg.init_vgg19_params(0)
  assert set(params) == set(vgg.CONV_NAMES)
  n = sum(x.size for x in jax.tree_util.tree_leaves(params))
  assert n == 20_024_384  # torchvision vgg19 features
  assert params["conv4_4"]["kernel"].shape == (3, 3, 512, 512)


def test_random_init_scale_kaiming_fan_out():
  params = vgg.init_vgg19_params(0)
  k = np.asarray(params["conv3_1"]["kernel"])
  assert abs(k.std() - np.sqrt(2.0 / (9 * 256))) < 0.02 * k.std()
  np.testing.assert_array_equal(params["conv3_1"]["bias"], 0.0)
  img = np.random.default_rng(0).random((1, 16, 16, 3), dtype=np.float32)
  feats = vgg.VGG19().apply({"params": params}, img, layers=("relu4_1",))
  assert float(jnp.std(feats["relu4_1"])) > 0.05  # random features do not vanish


def test_stops_at_deepest_layer_and_shapes():
  model = vgg.VGG19()
  x = jnp.zeros((2, 32, 32, 3))
  variables = jax.eval_shape(
      lambda: model.init(jax.random.PRNGKey(0), x, layers=("relu2_1",)))
  assert set(variables["params"]) == {"conv1_1", "conv1_2", "conv2_1"}
  shapes = jax.eval_shape(
      lambda: vgg.VGG19().apply(
          {"params": vgg.init_vgg19_params(0)}, x,
          layers=("pool1", "relu4_1", "pool4")))
  assert shapes["pool1"].shape == (2, 16, 16, 64)
  assert shapes["relu4_1"].shape == (2, 4, 4, 512)
  assert shapes["pool4"].shape == (2, 2, 2, 512)


def test_unknown_layer_raises():
  with pytest.raises(ValueError, match="conv4_5"):
    vgg.VGG19().init(jax.random.PRNGKey(0), jnp.zeros((1, 8, 8, 3)),
                     layers=("conv4_5",))


def test_normalizations_hand_values():
  x = jnp.full((1, 1, 1, 3), 0.5)
  imagenet = vgg.normalize_input(x, "imagenet")
  np.testing.assert_allclose(imagenet[0, 0, 0], [(0.5 - 0.485) / 0.229,
                                                 (0.5 - 0.456) / 0.224,
                                                 (0.5 - 0.406) / 0.225], rtol=1e-6)
  rgb = jnp.array([0.1, 0.2, 0.3]).reshape(1, 1, 1, 3)
  caffe = vgg.normalize_input(rgb, "caffe")
  np.testing.assert_allclose(caffe[0, 0, 0], [76.5 - 103.939, 51.0 - 116.779,
                                              25.5 - 123.68], rtol=1e-5)
  np.testing.assert_array_equal(vgg.normalize_input(rgb, "none"), rgb)
  with pytest.raises(ValueError, match="normalization"):
    vgg.normalize_input(rgb, "bgr")


def test_gray_input_equals_replicated_rgb():
  params = vgg.init_vgg19_params(1)
  gray = np.random.default_rng(2).random((1, 8, 8, 1), dtype=np.float32)
  apply = lambda im: vgg.VGG19().apply({"params": params}, im, layers=("relu1_2",))
  np.testing.assert_allclose(apply(gray)["relu1_2"],
                             apply(jnp.repeat(gray, 3, -1))["relu1_2"], atol=1e-5)


def test_conv1_1_matches_hand_convolution():
  params = vgg.init_vgg19_params(3)
  img = np.random.RandomState(0).rand(1, 5, 5, 3).astype(np.float32)
  out = vgg.VGG19(normalization="none").apply(
      {"params": params}, img, layers=("conv1_1",))["conv1_1"]
  k = np.asarray(params["conv1_1"]["kernel"])
  b = np.asarray(params["conv1_1"]["bias"])
  padded = np.pad(img[0], ((1, 1), (1, 1), (0, 0)))
  expected = np.einsum("hwc,hwco->o", padded[1:4, 1:4], k) + b  # pixel (1,1)
  np.testing.assert_allclose(out[0, 1, 1], expected, rtol=1e-4, atol=1e-5)


def test_torchvision_mapping_round_trip_and_layout():
  rng = np.random.RandomState(0)
  shapes = vgg.vgg19_param_shapes()
  sd = {}
  for name in vgg.CONV_NAMES:
    h, w, i, o = shapes[name]["kernel"]
    idx = vgg.LAYER_NAMES.index(name)
    sd[f"features.{idx}.weight"] = rng.rand(o, i, h, w).astype(np.float32)
    sd[f"features.{idx}.bias"] = rng.rand(o).astype(np.float32)
  sd["classifier.0.weight"] = np.zeros((4, 4), np.float32)
  params = vgg.torchvision_vgg19_to_flax(sd)
  # OIHW[o, i, y, x] == HWIO[y, x, i, o]
  assert params["conv1_2"]["kernel"][2, 0, 5, 7] == sd["features.2.weight"][7, 5, 2, 0]
  back = vgg.flax_vgg19_to_torchvision(params)
  assert set(back) == {k for k in sd if k.startswith("features")}
  for k, v in back.items():
    np.testing.assert_array_equal(v, sd[k])
  del sd["features.34.bias"]
  with pytest.raises(KeyError, match="features.34.bias"):
    vgg.torchvision_vgg19_to_flax(sd)


def test_loader_errors_and_random_features(tmp_path, caplog):
  cfg = ml_collections.ConfigDict({"vgg19_weights": str(tmp_path / "vgg19.npz"),
                                   "random_features": False})
  with pytest.raises(FileNotFoundError) as err:
    vgg.load_vgg19_params(cfg)
  for text in ("vgg19_weights", "vgg19.npz", "ihc_jax.tools.convert_weights"):
    assert text in str(err.value)
  cfg.random_features = True
  with caplog.at_level(logging.WARNING):
    params = vgg.load_vgg19_params(cfg)
  assert "RANDOM" in caplog.text
  again = vgg.load_vgg19_params(cfg)
  np.testing.assert_array_equal(params["conv1_1"]["kernel"], again["conv1_1"]["kernel"])
  # A saved npz is read back and validated.
  flat = {f"params/{n}/{k}": np.asarray(v) for n, d in params.items()
          for k, v in d.items()}
  np.savez(tmp_path / "vgg19.npz", **flat)
  cfg.random_features = False
  loaded = vgg.load_vgg19_params(cfg)
  np.testing.assert_array_equal(loaded["conv5_4"]["bias"], params["conv5_4"]["bias"])
  flat["params/conv2_1/kernel"] = np.zeros((3, 3, 64, 7), np.float32)
  np.savez(tmp_path / "vgg19.npz", **flat)
  with pytest.raises(ValueError, match="conv2_1/kernel"):
    vgg.load_vgg19_params(cfg)


def test_mapping_matches_pytorch_convolutions():
  """torchvision layout: the first block computed by PyTorch (random weights)
  equals ours after `torchvision_vgg19_to_flax`."""
  torch = pytest.importorskip("torch")
  torch.manual_seed(0)
  block = torch.nn.Sequential(
      torch.nn.Conv2d(3, 64, 3, padding=1), torch.nn.ReLU(),
      torch.nn.Conv2d(64, 64, 3, padding=1), torch.nn.ReLU(),
      torch.nn.MaxPool2d(2, 2))
  sd = {f"features.{k}": v.numpy() for k, v in block.state_dict().items()}
  params = vgg.init_vgg19_params(0)
  mapped = vgg.torchvision_vgg19_to_flax(
      {**vgg.flax_vgg19_to_torchvision(params), **sd})
  img = np.random.default_rng(4).random((2, 6, 6, 3), dtype=np.float32)
  with torch.no_grad():
    expected = block(torch.from_numpy(img.transpose(0, 3, 1, 2))).numpy()
  got = vgg.VGG19(normalization="none").apply({"params": mapped}, img,
                                              layers=("pool1",))["pool1"]
  np.testing.assert_allclose(np.asarray(got).transpose(0, 3, 1, 2), expected,
                             rtol=1e-4, atol=1e-5)
