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


def test_code_shift_starts_at_zero_and_moves_chroma_only():
  x, edge, z = _inputs()
  plain = generator_lib.ColorizationNet(ngf=4, num_downs=5, luma="input")
  shifted = generator_lib.ColorizationNet(ngf=4, num_downs=5, luma="input",
                                          code_shift=True)
  variables = shifted.init(jax.random.PRNGKey(1), x, edge, z, train=False)
  params = variables["params"]
  assert params["code_shift"]["kernel"].shape == (8, 3)
  unet_only = dict(variables, params={"unet": params["unet"]})
  np.testing.assert_allclose(
      shifted.apply(variables, x, edge, z, train=False),
      plain.apply(unet_only, x, edge, z, train=False), atol=1e-6)
  # A non-zero shift: the same offset at every pixel, with no luma.
  kernel = jax.random.normal(jax.random.PRNGKey(2), (8, 3))
  moved = dict(variables, params=dict(
      params, code_shift={"kernel": kernel, "bias": jnp.zeros(3)}))
  out = shifted.apply(moved, x, edge, z, train=False)
  base = plain.apply(unet_only, x, edge, z, train=False)
  offset = z @ kernel
  offset = offset - colorspace.rgb_to_gray(offset)
  np.testing.assert_allclose(out - base, jnp.broadcast_to(
      offset[:, None, None, :], out.shape), atol=1e-5)
  np.testing.assert_allclose(colorspace.rgb_to_gray(out), x, atol=1e-5)
  assert float(jnp.abs(offset).max()) > 0.1


def test_code_shift_needs_rgb():
  x, edge, z = _inputs()
  net = generator_lib.ColorizationNet(ngf=4, num_downs=5, output_channels=1,
                                      code_shift=True)
  with pytest.raises(ValueError, match="code_shift"):
    net.init(jax.random.PRNGKey(0), x, edge, z, train=False)


def test_code_shift_limit_bounds_each_channel_softly():
  """With `code_shift_limit` the offset is limit * tanh(shift / limit) per
  channel (luma removed after): a huge code cannot push it past the limit."""
  x, edge, z = _inputs()
  limit = 0.25
  plain = generator_lib.ColorizationNet(ngf=4, num_downs=5, luma="input")
  bounded = generator_lib.ColorizationNet(ngf=4, num_downs=5, luma="input",
                                          code_shift=True, code_shift_limit=limit)
  variables = bounded.init(jax.random.PRNGKey(1), x, edge, z, train=False)
  kernel = 100.0 * jax.random.normal(jax.random.PRNGKey(2), (8, 3))
  params = dict(variables["params"], code_shift={"kernel": kernel, "bias": jnp.zeros(3)})
  out = bounded.apply(dict(variables, params=params), x, edge, z, train=False)
  base = plain.apply(dict(variables, params={"unet": params["unet"]}), x, edge, z, train=False)
  raw = limit * jnp.tanh((z @ kernel) / limit)
  offset = raw - colorspace.rgb_to_gray(raw)
  np.testing.assert_allclose(out - base, jnp.broadcast_to(offset[:, None, None, :], out.shape),
                             atol=1e-5)
  assert float(jnp.abs(raw).max()) <= limit
  with pytest.raises(ValueError, match="code_shift_limit"):
    generator_lib.ColorizationNet(ngf=4, num_downs=5, code_shift=True,
                                  code_shift_limit=-1.0).init(
                                      jax.random.PRNGKey(0), x, edge, z, train=False)
