"""G's `luma` option: "learned" (official) or "input" (chroma over x's luma).

Random weights made here; no official weights needed.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ihc_jax import colorspace
from ihc_jax import models
from ihc_jax.models import generator as generator_lib

SIZE = 32


def _inputs():
  keys = jax.random.split(jax.random.PRNGKey(0), 3)
  x = jax.random.uniform(keys[0], (2, SIZE, SIZE, 1))
  edge = (jax.random.uniform(keys[1], (2, SIZE, SIZE, 1)) > 0.8).astype(
      jnp.float32)
  z = jax.random.normal(keys[2], (2, 8))
  return x, edge, z


def _apply(luma):
  net = generator_lib.ColorizationNet(ngf=4, num_downs=5, luma=luma)
  x, edge, z = _inputs()
  variables = jax.jit(net.init, static_argnames="train")(
      jax.random.PRNGKey(1), x, edge, z, train=False)
  out = jax.jit(net.apply, static_argnames="train")(variables, x, edge, z,
                                                     train=False)
  return out, variables, x


def test_input_luma_is_x_and_chroma_is_gs():
  learned, variables, x = _apply("learned")
  chroma_only, variables_2, _ = _apply("input")
  # Same parameters, so the option can be switched on a trained G.
  assert jax.tree_util.tree_structure(variables) == (
      jax.tree_util.tree_structure(variables_2))
  np.testing.assert_allclose(colorspace.rgb_to_gray(chroma_only), x,
                             atol=1e-5)
  # The colour differences R - Y and B - Y are G's own.
  def differences(rgb):
    return rgb - colorspace.rgb_to_gray(rgb)
  np.testing.assert_allclose(differences(chroma_only), differences(learned),
                             atol=1e-5)
  # And the learned luma is not x (the option does something).
  assert float(jnp.abs(colorspace.rgb_to_gray(learned) - x).max()) > 0.05


def test_default_is_the_official_output():
  assert generator_lib.ColorizationNet().luma == "learned"
  assert models.default_model_config().generator.luma == "learned"


def test_bad_mode_is_refused():
  net = generator_lib.ColorizationNet(ngf=4, num_downs=5, luma="chroma")
  x, edge, z = _inputs()
  with pytest.raises(ValueError, match="luma must be one of"):
    net.init(jax.random.PRNGKey(0), x, edge, z, train=False)


def test_gradient_reaches_g_through_the_chroma():
  net = generator_lib.ColorizationNet(ngf=4, num_downs=5, luma="input")
  x, edge, z = _inputs()
  variables = net.init(jax.random.PRNGKey(1), x, edge, z, train=False)
  target = jnp.concatenate([x * 0.9, x, x * 1.1], axis=-1)

  def loss(params):
    out = net.apply(dict(variables, params=params), x, edge, z, train=False)
    return jnp.mean((out - target) ** 2)

  grads = jax.jit(jax.grad(loss))(variables["params"])
  norms = [float(jnp.abs(g).sum()) for g in jax.tree_util.tree_leaves(grads)]
  assert all(np.isfinite(norms)) and sum(norms) > 0
