"""Tests for the histogram estimator H (random weights on purpose)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ihc_jax.models.histogram import (HistogramNet, channel_histograms,
                                      torch_histogram_to_flax)


@pytest.mark.parametrize("bins", [64, 256])
def test_param_count_at_256(bins):
  variables = jax.eval_shape(HistogramNet(bins=bins).init, jax.random.PRNGKey(0),
                             jnp.zeros((1, 256, 256, 1)))
  n = sum(int(np.prod(x.shape)) for x in jax.tree_util.tree_leaves(variables))
  assert n == 55_744 + 65_537 * bins
  assert variables["params"]["fc"]["kernel"].shape == (65_536, bins)


def test_output_is_distribution_and_rejects_rgb():
  model = HistogramNet(bins=8, features=(4, 4, 4))
  x = np.random.default_rng(0).random((3, 16, 16, 1), dtype=np.float32)
  variables = jax.jit(model.init)(jax.random.PRNGKey(1), x)  # random weights
  out = model.apply(variables, x)
  assert out.shape == (3, 8)
  np.testing.assert_allclose(out.sum(-1), 1.0, rtol=1e-6)
  with pytest.raises(ValueError, match="one channel"):
    model.apply(variables, jnp.zeros((1, 16, 16, 3)))


def test_channel_histograms_match_per_channel_calls():
  model = HistogramNet(bins=8, features=(4, 4, 4))
  images = np.random.default_rng(2).random((2, 16, 16, 3), dtype=np.float32)
  variables = jax.jit(model.init)(jax.random.PRNGKey(3), images[..., :1])
  hist = channel_histograms(model.apply, variables["params"], images)
  assert hist.shape == (2, 3, 8)
  apply = jax.jit(model.apply)  # one compile for the six single-channel calls
  for b in range(2):
    for c in range(3):
      np.testing.assert_allclose(
          hist[b, c], apply(variables, images[b:b + 1, :, :, c:c + 1])[0],
          rtol=1e-5, atol=1e-7)


def test_torch_mapping_matches_nchw_flatten():
  rng = np.random.RandomState(0)
  feats, bins, size = (2, 3, 4), 5, 16
  sd, cin = {}, 1
  for i, c in enumerate(feats):
    sd[f"layer.{2 * i}.weight"] = rng.randn(c, cin, 3, 3).astype(np.float32)
    sd[f"layer.{2 * i}.bias"] = rng.randn(c).astype(np.float32)
    cin = c
  sd["fc.weight"] = rng.randn(bins, 4 * 2 * 2).astype(np.float32)
  sd["fc.bias"] = rng.randn(bins).astype(np.float32)
  params = torch_histogram_to_flax(sd)
  model = HistogramNet(bins=bins, features=feats)
  x = rng.rand(1, size, size, 1).astype(np.float32)
  # Reference logits: NCHW flatten of the conv trunk, then the torch Linear.
  probs = model.apply({"params": params}, x)
  f_nhwc = np.asarray(_trunk(params, x))[0]  # [2, 2, 4]
  logits = sd["fc.weight"] @ f_nhwc.transpose(2, 0, 1).reshape(-1) + sd["fc.bias"]
  expected = np.exp(logits - logits.max())
  np.testing.assert_allclose(probs[0], expected / expected.sum(), rtol=1e-4)


def _trunk(params, x):
  for i in range(3):
    p = params[f"conv{i + 1}"]
    x = jax.lax.conv_general_dilated(
        x, p["kernel"], (2, 2), ((1, 1), (1, 1)),
        dimension_numbers=("NHWC", "HWIO", "NHWC")) + p["bias"]
    x = jax.nn.relu(x)
  return x
