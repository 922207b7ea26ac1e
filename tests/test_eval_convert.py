"""Tests of the evaluation-weight converters (tools/convert_eval_weights.py).

Weights are RANDOM: the tests build PyTorch-named state dicts (numpy arrays)
from our variables, convert them back and require every array unchanged.
"""

import numpy as np
import pytest

from ihc_jax import weights
from ihc_jax.eval import inception
from ihc_jax.eval import lpips
from ihc_jax.tools import convert_eval_weights as convert


def _assert_trees_equal(a, b):
  flat_a = weights.flatten_variables(a)
  flat_b = weights.flatten_variables(b)
  assert sorted(flat_a) == sorted(flat_b)
  for key, value in flat_a.items():
    np.testing.assert_array_equal(np.asarray(value), np.asarray(flat_b[key]),
                                  err_msg=key)


def _random_lpips(net, seed=0):
  variables = weights.random_variables_like(lpips.expected_shapes(net),
                                            seed=seed, init="he_normal")
  for k in range(5):
    head = variables["params"][f"lin{k}"]
    head["kernel"] = np.abs(head["kernel"])
  # Non-zero biases so that a bias/weight mix-up would show.
  for conv in variables["params"]["net"].values():
    conv["bias"] = np.random.default_rng(seed).normal(
        size=conv["bias"].shape).astype(np.float32)
  return variables


@pytest.mark.parametrize("net,last_index,last_channels",
                         [("vgg", 28, 512), ("alex", 10, 256)])
def test_lpips_round_trip_and_torch_layout(net, last_index, last_channels):
  variables = _random_lpips(net)
  backbone, heads = convert.lpips_to_torch(variables, net=net)
  assert len(backbone) == 2 * (13 if net == "vgg" else 5)
  assert backbone[f"features.{last_index}.weight"].shape[:2] == (
      last_channels, last_channels if net == "vgg" else 256)
  assert heads["lin4.model.1.weight"].shape == (1, last_channels, 1, 1)
  # torchvision files also hold the classifier; it is ignored.
  backbone["classifier.1.weight"] = np.zeros((4096, 9216), np.float32)
  _assert_trees_equal(convert.lpips_from_torch(backbone, heads, net=net),
                      variables)


def test_alexnet_first_conv_is_oihw_11x11():
  backbone, _ = convert.lpips_to_torch(_random_lpips("alex"), net="alex")
  assert backbone["features.0.weight"].shape == (64, 3, 11, 11)
  assert backbone["features.3.weight"].shape == (192, 64, 5, 5)


def test_lpips_converter_rejects_bad_files():
  variables = _random_lpips("alex")
  backbone, heads = convert.lpips_to_torch(variables, net="alex")
  with pytest.raises(ValueError, match="features.10.weight"):
    convert.lpips_from_torch({k: v for k, v in backbone.items()
                              if k != "features.10.weight"}, heads, net="alex")
  negative = dict(heads)
  negative["lin2.model.1.weight"] = -np.abs(heads["lin2.model.1.weight"])
  with pytest.raises(ValueError, match="negative"):
    convert.lpips_from_torch(backbone, negative, net="alex")
  # VGG heads do not fit AlexNet features.
  _, vgg_heads = convert.lpips_to_torch(_random_lpips("vgg"), net="vgg")
  with pytest.raises(ValueError, match="shape"):
    convert.lpips_from_torch(backbone, vgg_heads, net="alex")


def test_inception_round_trip_and_pytorch_fid_key_names():
  variables = weights.random_variables_like(inception.expected_shapes(),
                                            seed=1, init="he_normal")
  rng = np.random.default_rng(1)
  for value in weights.flatten_variables(variables).values():
    # Distinct values everywhere, so a swapped mean/var or scale/bias shows.
    value[...] = rng.standard_normal(value.shape, np.float32)
  state = convert.inception_to_torch(variables)
  assert len(state) == 94 * 5  # 94 BasicConv2d: conv weight + 4 bn tensors.
  assert state["Conv2d_1a_3x3.conv.weight"].shape == (32, 3, 3, 3)
  assert state["Mixed_6b.branch7x7_2.conv.weight"].shape == (128, 128, 1, 7)
  assert state["Mixed_7c.branch_pool.bn.running_var"].shape == (192,)
  assert state["Mixed_7b.branch3x3dbl_3b.conv.weight"].shape == (384, 384, 3, 1)
  # Keys in pytorch-fid's file that the features do not use.
  state["fc.weight"] = np.zeros((1008, 2048), np.float32)
  state["fc.bias"] = np.zeros((1008,), np.float32)
  state["Mixed_5b.branch1x1.bn.num_batches_tracked"] = np.zeros((), np.int64)
  _assert_trees_equal(convert.inception_from_torch(state), variables)
  state["Mixed_5b.extra.conv.weight"] = np.zeros((8, 8, 1, 1), np.float32)
  with pytest.raises(ValueError, match="unexpected.*Mixed_5b/extra/conv"):
    convert.inception_from_torch(state)
  state["Mixed_5b.extra.conv.weight"] = np.zeros((8,), np.float32)
  with pytest.raises(ValueError, match="4-d OIHW"):
    convert.inception_from_torch(state)
  del state["Mixed_5b.extra.conv.weight"]
  state["Mixed_5b.branch1x1.bn.momentum"] = np.zeros((1,), np.float32)
  with pytest.raises(ValueError, match="unexpected keys.*bn.momentum"):
    convert.inception_from_torch(state)


def test_command_line_converts_torch_files(tmp_path):
  torch = pytest.importorskip("torch")
  variables = _random_lpips("alex", seed=5)
  backbone, heads = convert.lpips_to_torch(variables, net="alex")
  backbone_path = tmp_path / "alexnet.pth"
  heads_path = tmp_path / "alex.pth"
  torch.save({k: torch.from_numpy(v) for k, v in backbone.items()},
             backbone_path)
  # A DataParallel-style prefix is stripped.
  torch.save({"module." + k: torch.from_numpy(v) for k, v in heads.items()},
             heads_path)
  out = tmp_path / "out" / "lpips_alex.npz"
  assert convert.main(["lpips", "--net=alex", f"--backbone={backbone_path}",
                       f"--heads={heads_path}", f"--out={out}"]) == 0
  _assert_trees_equal(weights.load_variables(str(out)), variables)
