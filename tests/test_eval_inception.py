"""Tests of the FID InceptionV3 (ihc_jax.eval.inception).

Forward passes use RANDOM weights (no ImageNet weights on the test machines):
they check shapes, numerics of the pooling details and batching, not features
of the published network.
"""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from ihc_jax import weights
from ihc_jax.eval import inception
from ihc_jax.eval import weights_io


def test_output_is_2048_features_at_299_and_other_sizes_are_resized():
  shapes = inception.expected_shapes()
  out = jax.eval_shape(inception.FIDInceptionV3().apply, shapes,
                       jax.ShapeDtypeStruct((3, 299, 299, 3), jnp.float32))
  assert out.shape == (3, inception.FEATURE_DIM)
  resized = jax.eval_shape(inception.resize_to_input,
                           jax.ShapeDtypeStruct((3, 64, 48, 3), jnp.float32))
  assert resized.shape == (3, 299, 299, 3)


def test_parameter_count_equals_pytorch_fid_inception():
  # torchvision documents 27,161,264 parameters for inception_v3 with the
  # auxiliary head and a 1000-way fc. The aux head has 128*768 + 2*128
  # + 768*128*5*5 + 2*768 + 768*1000 + 1000 = 3,326,696 and the fc
  # 2048*1000 + 1000 = 2,049,000, which leaves 21,785,568 for pytorch-fid's
  # network without fc (BatchNorm scale and bias counted, running stats not).
  shapes = inception.expected_shapes()
  count = sum(int(np.prod(leaf.shape))
              for leaf in jax.tree_util.tree_leaves(shapes["params"]))
  assert count == 21_785_568
  bn_stats = sum(int(np.prod(leaf.shape))
                 for leaf in jax.tree_util.tree_leaves(shapes["batch_stats"]))
  # Mean and var for each of the 17,216 conv output channels (the 94 convs).
  assert bn_stats == 2 * 17_216


def test_avg_pool_ignores_padding_and_last_block_uses_max_pool():
  ones = jnp.ones((1, 4, 4, 1))
  # Counting padded zeros would give 4/9 in the corner.
  pooled = inception._avg_pool_3x3(ones)  # pylint: disable=protected-access
  np.testing.assert_allclose(pooled, ones)
  shapes = inception.expected_shapes()["params"]
  assert shapes["Mixed_7c"]["branch_pool"]["conv"]["kernel"].shape == (
      1, 1, 2048, 192)


def test_random_weight_forward_at_75_is_finite_and_batch_independent():
  variables = weights.random_variables_like(inception.expected_shapes(),
                                            seed=0, init="he_normal")
  rng = np.random.default_rng(0)
  images = rng.uniform(size=(2, 75, 75, 3)).astype(np.float32)
  together = inception.inception_features(variables, images, batch_size=2,
                                          resize_input=False)
  assert together.shape == (2, 2048)
  assert np.all(np.isfinite(together))
  assert np.all(together >= 0)  # Average of ReLU outputs.
  assert np.abs(together[0] - together[1]).max() > 0
  # Running-statistics BatchNorm: an image's features do not depend on its
  # batch. Three images in batches of 2: the second batch (image 0 again) is
  # padded with a zero image, and the padding row is dropped.
  three = inception.inception_features(
      variables, np.concatenate([images, images[:1]]), batch_size=2,
      resize_input=False)
  assert three.shape == (3, 2048)
  np.testing.assert_allclose(three[:2], together, rtol=1e-5, atol=1e-7)
  np.testing.assert_allclose(three[2], together[0], rtol=1e-4, atol=1e-6)


def test_resize_matches_torch_bilinear_without_antialias():
  torch = pytest.importorskip("torch")
  rng = np.random.default_rng(1)
  for size in (40, 400):
    image = rng.uniform(size=(1, size, size + 3, 2)).astype(np.float32)
    ours = np.asarray(inception.resize_to_input(jnp.asarray(image)))
    theirs = torch.nn.functional.interpolate(
        torch.from_numpy(image).permute(0, 3, 1, 2), size=(299, 299),
        mode="bilinear", align_corners=False).permute(0, 2, 3, 1).numpy()
    np.testing.assert_allclose(ours, theirs, atol=1e-5)


def test_bad_inputs_and_missing_weights_are_named(tmp_path):
  with pytest.raises(ValueError, match="1 or 3 channels"):
    inception.inception_features({}, np.zeros((1, 80, 80, 2)))
  with pytest.raises(ValueError, match="at least 75x75"):
    inception.inception_features({}, np.zeros((1, 40, 40, 3)),
                                 resize_input=False)
  path = str(tmp_path / "inception_fid.npz")
  config = ml_collections.ConfigDict({"eval": {"inception_weights": path}})
  with pytest.raises(weights_io.MissingWeightsError) as info:
    inception.load_inception(config)
  assert info.value.metric == "fid"
  assert info.value.path == path
  assert "pt_inception-2015-12-05-6726825d.pth" in info.value.hint
  with pytest.raises(weights_io.MissingWeightsError, match="no path set"):
    inception.load_inception(ml_collections.ConfigDict({"eval": {}}))
