"""F's starting points (`models.fusion.blend_init`: "forward", "average").

Random weights made here; no official weights needed.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ihc_jax import models
from ihc_jax.models import fusion as fusion_lib
from ihc_jax.trainers import fusion as fusion_stage

KEY = jax.random.PRNGKey(0)


def _net_and_params(features=8, num_blocks=2):
  net = fusion_lib.FusionNet(features=features, num_blocks=num_blocks)
  a = jnp.zeros((1, 16, 16, 3))
  return net, net.init(KEY, a, a)["params"]


def test_average_init_outputs_the_mean_of_the_inputs():
  net, params = _net_and_params()
  a = jax.random.uniform(jax.random.PRNGKey(1), (2, 16, 16, 3))
  b = jax.random.uniform(jax.random.PRNGKey(2), (2, 16, 16, 3))
  start = fusion_lib.average_init(params)
  np.testing.assert_allclose(net.apply({"params": start}, a, b), (a + b) / 2,
                             atol=1e-6)
  # A random start is far from it.
  assert np.abs(net.apply({"params": params}, a, b) - (a + b) / 2).mean() > 0.01
  # Same structure, shapes and dtypes; the input is not modified.
  assert jax.tree.structure(start) == jax.tree.structure(params)
  assert jax.tree.map(jnp.shape, start) == jax.tree.map(jnp.shape, params)
  assert float(jnp.abs(params["block_0"]["conv2"]["kernel"]).max()) > 0


def test_average_init_trains_every_layer():
  """The zeroed convs get gradient at once; the rest after one update."""
  net, params = _net_and_params()
  a = jax.random.uniform(jax.random.PRNGKey(1), (2, 16, 16, 3))
  b = jax.random.uniform(jax.random.PRNGKey(2), (2, 16, 16, 3))
  target = jnp.clip(a + 0.1, 0, 1)
  loss = lambda p: jnp.mean(jnp.abs(net.apply({"params": p}, a, b) - target))
  grads = jax.grad(loss)(fusion_lib.average_init(params))
  for name in ("conv_in", "block_0", "block_1", "conv_out"):
    leaves = jax.tree_util.tree_leaves(grads[name])
    assert any(float(jnp.abs(g).max()) > 0 for g in leaves), name
  assert float(jnp.abs(grads["block_1"]["conv2"]["kernel"]).max()) > 0


def test_blend_init_weights_the_inputs():
  net, params = _net_and_params()
  a = jax.random.uniform(jax.random.PRNGKey(1), (2, 16, 16, 3))
  b = jax.random.uniform(jax.random.PRNGKey(2), (2, 16, 16, 3))
  for w in (1.0, 0.25, 0.0):
    np.testing.assert_allclose(
        net.apply({"params": fusion_lib.blend_init(params, w)}, a, b),
        w * a + (1 - w) * b, atol=1e-6)
  with pytest.raises(ValueError, match=r"forward_weight must be in \[0, 1\]"):
    fusion_lib.blend_init(params, 1.5)


def test_forward_start_trains_on_both_inputs():
  # F(a, b) = a at the start, yet a loss that needs b moves F toward b.
  net, params = _net_and_params()
  a = jax.random.uniform(jax.random.PRNGKey(1), (2, 16, 16, 3))
  b = jax.random.uniform(jax.random.PRNGKey(2), (2, 16, 16, 3))
  loss = lambda p: jnp.mean(jnp.abs(net.apply({"params": p}, a, b) - b))
  start = fusion_lib.blend_init(params, 1.0)
  grads = jax.grad(loss)(start)
  kernel = grads["conv_out"]["kernel"]
  centre = kernel.shape[0] // 2
  assert float(jnp.abs(kernel[centre, centre, 3:6]).max()) > 0


def test_average_init_needs_six_features():
  _, params = _net_and_params(features=4)
  with pytest.raises(ValueError, match=">= 6 features"):
    fusion_lib.average_init(params)


def test_stage_init_choice():
  nets = fusion_stage.Networks(
      fusion=models.build("fusion", models.tiny_model_config()),
      discriminator=None, ihn=None, encoder=None, generator=None)
  a = jax.random.uniform(KEY, (1, 16, 16, 3))
  b = 1 - a
  fwd = fusion_stage.init_variables(KEY, nets=nets, size=16, trained=("fusion",))
  np.testing.assert_allclose(nets.fusion.apply(fwd["fusion"], a, b), a,
                             atol=1e-6)  # the default: "forward"
  avg = fusion_stage.init_variables(KEY, nets=nets, size=16, trained=("fusion",),
                                    fusion_init="average")
  np.testing.assert_allclose(nets.fusion.apply(avg["fusion"], a, b),
                             (a + b) / 2, atol=1e-6)
  rnd = fusion_stage.init_variables(KEY, nets=nets, size=16, trained=("fusion",),
                                    fusion_init="random")
  assert np.abs(nets.fusion.apply(rnd["fusion"], a, b) - 0.5).mean() > 0.01
  with pytest.raises(ValueError, match="fusion_init must be one of"):
    fusion_stage.init_variables(KEY, nets=nets, size=16, trained=("fusion",),
                                fusion_init="zeros")
