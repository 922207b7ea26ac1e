"""G's "gray" starting point (`models.generator.gray_init`).

Random weights made here (no official weights needed) and a real photo
(scikit-image's camera, resized to 64 px).
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image
from skimage import data as skdata

from ihc_jax import models
from ihc_jax.models import generator as generator_lib
from ihc_jax.trainers import color as color_stage

KEY = jax.random.PRNGKey(0)
SIZE = 64


def _photo():
  image = Image.fromarray(skdata.camera()).resize((SIZE, SIZE), Image.BILINEAR)
  return jnp.asarray(np.asarray(image, np.float32) / 255.0)[None, ..., None]


class _Jitted:
  """A module's init and apply, jitted (eagerly every op of the G compiles
  on its own: tens of seconds per test)."""

  def __init__(self, module):
    self.init = jax.jit(module.init, static_argnames="train")
    self.apply = jax.jit(module.apply, static_argnames="train")


def _net_and_variables(ngf=16):
  net = _Jitted(generator_lib.ColorizationNet(ngf=ngf, num_downs=6))
  x = jnp.zeros((1, SIZE, SIZE, 1))
  return net, net.init({"params": KEY}, x, x, jnp.zeros((1, 8)), train=False)


def _psnr(a, b):
  return float(-10 * jnp.log10(jnp.mean(jnp.square(a - b))))


@pytest.mark.parametrize("ngf", [16, 4])
def test_gray_init_outputs_the_gray_in_three_channels(ngf):
  net, variables = _net_and_variables(ngf)
  x = _photo()
  edge = (x > 0.5).astype(jnp.float32)
  start = dict(variables, params=generator_lib.gray_init(variables["params"]))
  outs = [net.apply(start, x, e, z, train=False)
          for e, z in ((edge, jnp.zeros((1, 8))),
                       (1 - edge, 3 * jax.random.normal(KEY, (1, 8))))]
  # The same for any edge map and code; the three channels are equal.
  np.testing.assert_array_equal(outs[0], outs[1])
  np.testing.assert_array_equal(outs[0][..., 0], outs[0][..., 2])
  # The gray, blurred by the 2x2 mean and the upsampling: measured 25.2 dB
  # on this photo (4 hinges for ngf >= 4).
  assert _psnr(outs[0], jnp.concatenate([x] * 3, -1)) > 24.0
  # A random start is far from it.
  random_out = net.apply(variables, x, edge, jnp.zeros((1, 8)), train=False)
  assert _psnr(random_out, jnp.concatenate([x] * 3, -1)) < 15.0
  # Same structure, shapes and dtypes; the input is not modified.
  params = variables["params"]
  assert jax.tree.structure(start["params"]) == jax.tree.structure(params)
  assert (jax.tree.map(jnp.shape, start["params"])
          == jax.tree.map(jnp.shape, params))
  assert float(jnp.abs(params["unet"]["up_0"]["kernel"]).min()) > 0


def test_gray_init_passes_through_the_full_range():
  """tanh of the piecewise-linear atanh stays within 0.02 of x on [0, 1]."""
  net, variables = _net_and_variables()
  start = dict(variables, params=generator_lib.gray_init(variables["params"]))
  for value in np.linspace(0.0, 1.0, 11):
    x = jnp.full((1, SIZE, SIZE, 1), value, jnp.float32)
    out = net.apply(start, x, jnp.zeros_like(x), jnp.zeros((1, 8)),
                    train=False)
    # Away from the reflect-padded border, where the image is constant.
    centre = out[:, 8:-8, 8:-8]
    assert float(jnp.abs(centre - value).max()) < 0.02, value


def test_gray_init_trains_every_level():
  """The outermost convs get gradient at once, the deeper levels after one
  update of the output conv."""
  net, variables = _net_and_variables()
  x = _photo()
  target = jnp.concatenate([x * 0.9 + 0.1, x, x * 0.8], -1)
  z = jax.random.normal(KEY, (1, 8))
  start = generator_lib.gray_init(variables["params"])

  def loss(params):
    out = net.apply(dict(variables, params=params), x, x, z, train=False)
    return jnp.mean(jnp.abs(out - target))

  grads = jax.grad(loss)(start)["unet"]
  assert float(jnp.abs(grads["up_0"]["kernel"]).max()) > 0
  assert float(jnp.abs(grads["down_0"]["kernel"]).max()) > 0
  assert float(jnp.abs(grads["down_3"]["kernel"]).max()) == 0
  stepped = jax.tree.map(lambda p, g: p - 0.01 * jnp.sign(g), start,
                         jax.grad(loss)(start))
  deeper = jax.grad(loss)(stepped)["unet"]
  for name in ("down_3", "up_3", "up_1"):
    assert float(jnp.abs(deeper[name]["kernel"]).max()) > 0, name


def test_stage_init_choice():
  nets = color_stage.Networks(
      encoder=models.build("encoder", models.tiny_model_config()),
      generator=models.build("generator", models.tiny_model_config()),
      discriminator=models.build("discriminator", models.tiny_model_config()),
      ihn=None, histogram=None)
  size = 2 ** nets.generator.num_downs
  gray = jnp.ones((1, size, size, 1)) * 0.4
  z = jnp.zeros((1, nets.generator.nz))
  # As the trainer calls it: each network's init compiled without LLVM's
  # optimisations (linen_utils.init_variables).
  init = functools.partial(color_stage.init_variables, nets=nets, size=size)
  apply = jax.jit(nets.generator.apply, static_argnames="train")
  start = init(KEY)
  out = apply(start["generator"], gray, gray, z, train=False)
  np.testing.assert_allclose(out, 0.4, atol=0.03)
  rnd = init(KEY, generator_init="random")
  out = apply(rnd["generator"], gray, gray, z, train=False)
  assert float(jnp.abs(out - 0.4).mean()) > 0.03
  with pytest.raises(ValueError, match="generator_init must be one of"):
    color_stage.init_variables(KEY, nets=nets, size=size,
                               generator_init="zeros")
