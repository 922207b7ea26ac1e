"""Tests of weight files, validation and the official-checkpoint converter.

Variables here are random (numpy), not trained weights.
"""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ihc_jax import models
from ihc_jax import weights
from ihc_jax.tools import convert_weights


def _tree_equal(a, b):
  fa, fb = weights.flatten_variables(a), weights.flatten_variables(b)
  assert sorted(fa) == sorted(fb)
  for key in fa:
    np.testing.assert_array_equal(np.asarray(fa[key]), np.asarray(fb[key]), err_msg=key)


@pytest.mark.parametrize("suffix", [".npz", ".safetensors"])
def test_save_load_round_trip(tmp_path, suffix):
  variables = {"params": {"conv": {"kernel": np.arange(6, dtype=np.float32).reshape(1, 1, 2, 3),
                                   "bias": np.ones(3, np.float32)}},
               "batch_stats": {"bn": {"mean": np.zeros(3, np.float32)}}}
  path = tmp_path / f"w{suffix}"
  weights.save_variables(path, variables)
  assert os.listdir(tmp_path) == [path.name]  # no temporary file left behind
  _tree_equal(weights.load_variables(path), variables)
  if suffix == ".npz":
    with np.load(path, allow_pickle=False) as data:
      assert sorted(data.files) == ["batch_stats/bn/mean", "params/conv/bias",
                                    "params/conv/kernel"]


def test_missing_file_names_file_and_converter(tmp_path):
  path = str(tmp_path / "IHN.npz")
  with pytest.raises(FileNotFoundError, match="IHN.npz") as info:
    weights.load_variables(path)
  assert "ihc_jax.tools.convert_weights" in str(info.value)


def test_validate_names_missing_unexpected_misshaped():
  reference = {"params": {"a": {"kernel": jax.ShapeDtypeStruct((2, 3), jnp.float32),
                                "bias": jax.ShapeDtypeStruct((3,), jnp.float32)},
                          "b": {"kernel": jax.ShapeDtypeStruct((1,), jnp.float32)}}}
  variables = {"params": {"a": {"kernel": np.zeros((3, 2)), "bias": np.zeros(3)},
                          "c": {"kernel": np.zeros(1)}}}
  with pytest.raises(weights.WeightsMismatchError) as info:
    weights.validate_variables(variables, reference, source="file 'x.npz'")
  message = str(info.value)
  assert "file 'x.npz'" in message
  assert "missing (1): params/b/kernel" in message
  assert "unexpected (1): params/c/kernel" in message
  assert "params/a/kernel: (3, 2) != expected (2, 3)" in message
  weights.validate_variables({"params": {"a": {"kernel": np.zeros((2, 3)), "bias": np.zeros(3)},
                                         "b": {"kernel": np.zeros(1)}}}, reference)


def test_load_and_validate(tmp_path):
  cfg = models.tiny_model_config()
  net = models.build("fusion", cfg)
  image = jax.ShapeDtypeStruct((1, 16, 16, 3), jnp.float32)
  variables = weights.random_variables(net, image, image, seed=3)
  path = tmp_path / "f.npz"
  weights.save_variables(path, variables)
  _tree_equal(weights.load_and_validate(path, net, image, image), variables)
  wider = models.build("fusion", {"features": 16, "num_blocks": 1})
  with pytest.raises(weights.WeightsMismatchError, match="f.npz"):
    weights.load_and_validate(path, wider, image, image)


# Official state-dict sizes (keys including num_batches_tracked) and sample keys.
@pytest.mark.parametrize("network,num_keys,key,shape", [
    ("ihn", 144, "Unet.Unet.model.1.model.3.model.3.model.3.model.3.model.3.trans_1.conv1.weight",
     (512, 1280, 1, 1)),
    ("generator", 83, "Unet.model.1.model.3.model.3.model.3.model.3.model.3.model.5.weight",
     (512, 512, 3, 3)),
    ("encoder", 26, "enc.13.conv_block.5.weight", (256, 256, 3, 3)),
    ("discriminator", 50, "model_1.11.weight", (1, 256, 4, 4)),
    ("fusion", 10, "block4.conv2.weight", (64, 64, 3, 3)),
])
def test_full_size_export_matches_official_names(network, num_keys, key, shape):
  reference = convert_weights.reference_variables(network)
  zeros = jax.tree_util.tree_map(lambda s: np.zeros(s.shape, np.float32), reference)
  state = convert_weights.export_state_dict(network, zeros)
  assert len(state) == num_keys
  assert state[key].shape == shape
  tracked = [v for k, v in state.items() if k.endswith(".num_batches_tracked")]
  assert all(v.shape == () for v in tracked)  # 0-d, as in torch
  weights.validate_variables(convert_weights.convert_state_dict(network, state), reference)


@pytest.mark.parametrize("network", ["ihn", "generator", "encoder", "discriminator", "fusion"])
def test_converter_round_trip_tiny(network):
  cfg = models.tiny_model_config()
  size = 64
  args, kwargs = convert_weights.example_inputs(network, cfg[network], size)
  variables = weights.random_variables(models.build(network, cfg), *args, seed=1, **kwargs)
  state = convert_weights.export_state_dict(network, variables, cfg)
  assert all(len(v.shape) in (0, 1, 2, 4) for v in state.values())
  back = convert_weights.convert_state_dict(network, state, cfg)
  _tree_equal(back, variables)


def test_vgg19_round_trip():
  reference = convert_weights.reference_variables("vgg19", size=32)
  rng = np.random.default_rng(0)
  variables = jax.tree_util.tree_map(
      lambda s: rng.standard_normal(s.shape).astype(np.float32), reference)
  state = convert_weights.export_state_dict("vgg19", variables)
  assert state["features.34.weight"].shape == (512, 512, 3, 3)
  _tree_equal(convert_weights.convert_state_dict("vgg19", state), variables)


def _hand_built_fusion_state():
  """A tiny official-style F (features 2, one basic block), values 0, 1, 2, ..."""
  shapes = {"block1.0.weight": (2, 6, 7, 7), "block1.0.bias": (2,),
            "block2.conv1.weight": (2, 2, 3, 3), "block2.conv2.weight": (2, 2, 3, 3),
            "block5.0.weight": (3, 2, 3, 3), "block5.0.bias": (3,)}
  return {k: np.arange(np.prod(s), dtype=np.float32).reshape(s) for k, s in shapes.items()}


def test_mapping_on_hand_built_state_dict():
  cfg = {"features": 2, "num_blocks": 1, "output_channels": 3}
  import ml_collections
  cfg = ml_collections.ConfigDict(cfg)
  state = _hand_built_fusion_state()
  state["block2.conv1.num_batches_tracked"] = np.array(5)  # ignored
  variables = convert_weights.convert_state_dict("fusion", state, cfg)
  params = variables["params"]
  assert "batch_stats" not in variables
  kernel = params["conv_in"]["kernel"]
  assert kernel.shape == (7, 7, 6, 2)
  # torch weight[o, i, y, x] = ((o * 6 + i) * 7 + y) * 7 + x -> kernel[y, x, i, o].
  assert kernel[2, 5, 3, 1] == ((1 * 6 + 3) * 7 + 2) * 7 + 5
  assert params["block_0"]["conv2"]["kernel"][0, 1, 1, 0] == 0 * 18 + 1 * 9 + 0 * 3 + 1
  np.testing.assert_array_equal(params["conv_out"]["bias"], [0, 1, 2])
  # Our FusionNet accepts exactly this tree.
  net = models.build("fusion", cfg)
  image = jax.ShapeDtypeStruct((1, 8, 8, 3), jnp.float32)
  weights.validate_variables(variables, jax.eval_shape(net.init, jax.random.PRNGKey(0),
                                                       image, image))
  extra = dict(state, **{"block3.conv1.weight": np.zeros((2, 2, 3, 3), np.float32)})
  with pytest.raises(KeyError, match=r"unused \['block3.conv1.weight'\]"):
    convert_weights.convert_state_dict("fusion", extra, cfg)
  del state["block5.0.bias"]
  with pytest.raises(KeyError, match=r"missing \['block5.0.bias'\]"):
    convert_weights.convert_state_dict("fusion", state, cfg)


def test_linear_and_batch_norm_mapping_hand_computed():
  spec = [convert_weights.LayerMap("linear_nchw", "fc", ("fc",), channels=2),
          convert_weights.LayerMap("bn", "bn", ("bn",))]
  state = {"fc.weight": np.arange(8, dtype=np.float32)[None],  # (1, C=2 x 2 x 2)
           "fc.bias": np.array([7.0], np.float32),
           "bn.weight": np.array([2.0]), "bn.bias": np.array([3.0]),
           "bn.running_mean": np.array([4.0]), "bn.running_var": np.array([5.0]),
           "bn.num_batches_tracked": np.array(9)}
  variables = convert_weights.apply_spec(state, spec)
  # NCHW index c*4 + y*2 + x moves to NHWC index (y*2 + x)*2 + c.
  np.testing.assert_array_equal(variables["params"]["fc"]["kernel"][:, 0],
                                [0, 4, 1, 5, 2, 6, 3, 7])
  assert variables["params"]["bn"] == {"scale": 2.0, "bias": 3.0}
  assert variables["batch_stats"]["bn"] == {"mean": 4.0, "var": 5.0}
  back = convert_weights.invert_spec(variables, spec)
  np.testing.assert_array_equal(back["fc.weight"], state["fc.weight"])
  assert back["bn.running_var"] == 5.0


def test_cli_converts_a_torch_checkpoint(tmp_path, capsys):
  torch = pytest.importorskip("torch")
  reference = convert_weights.reference_variables("fusion", size=16)
  rng = np.random.default_rng(0)
  variables = jax.tree_util.tree_map(
      lambda s: rng.standard_normal(s.shape).astype(np.float32), reference)
  state = convert_weights.export_state_dict("fusion", variables)
  pth = tmp_path / "F.pth"
  torch.save({k: torch.from_numpy(v) for k, v in state.items()}, pth)
  out = tmp_path / "fusion.npz"
  convert_weights.main(["--network", "fusion", "--input", str(pth), "--output", str(out)])
  assert "241,795 parameters" in capsys.readouterr().out
  _tree_equal(weights.load_variables(out), variables)
  del state["block5.0.bias"]
  torch.save({k: torch.from_numpy(v) for k, v in state.items()}, pth)
  with pytest.raises(SystemExit, match="block5.0.bias"):
    convert_weights.main(["--network", "fusion", "--input", str(pth), "--output", str(out)])


def test_parity_with_official_code():
  repo = os.environ.get("IHC_OFFICIAL_REPO")
  if not repo:
    pytest.skip("set IHC_OFFICIAL_REPO to a checkout of ccc870206/InverseHalftoneColorization "
                "to compare with the official PyTorch code (takes minutes on a CPU)")
  pytest.importorskip("torch")
  from ihc_jax.tools import parity
  diffs = parity.run_parity(repo, os.environ.get("IHC_OFFICIAL_WEIGHTS"))
  for name in ("noise_map", "ihn", "encoder", "generator", "fusion", "discriminator",
               "pipeline"):
    assert diffs[name] <= parity.TOLERANCE, (name, diffs[name])
