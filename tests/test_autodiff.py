"""Every network and a whole loss go through JAX's transformations with the
default settings on CPU (the CPU fast paths of `ihc_jax.kernels` on).

For each network (tiny widths, U-Nets of 5 levels, one IHN detail block,
VGG19 to relu3_1, random PyTorch-default weights, 32 px, one image) and its image input x: `jax.jvp`, a Hessian-vector product (forward
over reverse) and the gradient of |grad_x f|^2 with respect to x. D, F
and VGG19 are piecewise linear in x, so their input Hessians are zero (and
must be); for them the second-order check is the gradient with respect to
the parameters of an input-gradient penalty (R1: reverse over reverse
through both arguments of every convolution). Each
must equal the same transformation of the plain reference path
(`kernels.cpu_fast_paths(False)`: XLA's ops differentiated by JAX) to float
rounding, so a fast form with a wrong derivative fails. And
`losses.perceptual_loss` (VGG19's convolutions and max pools) under
`jax.jacfwd`.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ihc_jax import kernels
from ihc_jax import losses
from ihc_jax import models
from ihc_jax.models import vgg

SIZE = 32
# Relative to the largest entry of the reference result. The fast forms sum
# in another order: measured differences are below 2e-6 (float32).
TOLERANCE = 1e-4


def _network(name):
  """(f(params, x) -> scalar-weighted outputs, params, x) of one network."""
  rng = np.random.default_rng(0)
  image = jnp.asarray(rng.random((1, SIZE, SIZE, 3), np.float32))
  gray = image[..., :1]
  edge = (image[..., 1:2] > 0.5).astype(jnp.float32)
  z = jnp.asarray(rng.standard_normal((1, 8), np.float32))
  noise = jnp.asarray(rng.standard_normal((1, SIZE, SIZE, 8), np.float32))
  inputs = {
      "ihn": (gray, lambda x: (x, noise), {"train": False}),
      "generator": (gray, lambda x: (x, edge, z), {"train": False}),
      "encoder": (image, lambda x: (x,), {}),
      "discriminator": (image, lambda x: (x, z), {"train": False}),
      "histogram": (gray, lambda x: (x,), {}),
      "fusion": (image, lambda x: (x, image[..., ::-1]), {}),
      "vgg19": (image, lambda x: (x,), {"layers": ("relu1_2", "relu3_1")}),  # 2 pools
  }
  x, args, kwargs = inputs[name]
  cfg = models.tiny_model_config()
  cfg.ihn.num_downs = cfg.generator.num_downs = 5  # 32 px
  cfg.ihn.detail_blocks = 1
  model = models.build(name, cfg)
  variables = model.init(jax.random.PRNGKey(1), *args(x), **kwargs)

  def f(params, x):
    out = model.apply({**variables, "params": params}, *args(x), **kwargs)
    leaves = jax.tree_util.tree_leaves(out)
    # Fixed pseudo-random weights make every output element count.
    return sum(jnp.sum(leaf * jnp.cos(jnp.arange(leaf.size).reshape(leaf.shape)))
               for leaf in leaves)

  return f, variables["params"], x


PIECEWISE_LINEAR = ("discriminator", "fusion", "vgg19")


def _transformations(f, params, x, v, penalty):
  """jvp, HVP, grad of |grad_x|^2 in x (and of the penalty in the params)."""
  g = lambda x: f(params, x)
  grad_x = jax.grad(g)
  out = {"jvp": jax.jvp(g, (x,), (v,))[1],
         "hvp": jax.jvp(grad_x, (x,), (v,))[1],
         "grad_of_grad": jax.grad(lambda x: jnp.sum(jnp.square(grad_x(x))))(x)}
  if penalty:
    out["penalty"] = jax.grad(
        lambda p: jnp.sum(jnp.square(jax.grad(lambda x: f(p, x))(x))))(params)
  return out


@pytest.mark.parametrize("name", models.NETWORKS)
def test_forward_and_second_order_derivatives_match_the_plain_path(name):
  f, params, x = _network(name)
  v = jax.random.normal(jax.random.PRNGKey(2), x.shape)
  transformations = functools.partial(_transformations, f,
                                      penalty=name in PIECEWISE_LINEAR)
  fast = jax.jit(transformations)(params, x, v)
  with kernels.cpu_fast_paths(False):
    plain = jax.jit(transformations)(params, x, v)
  for what in fast:
    ours, want = (jax.tree_util.tree_leaves(t[what]) for t in (fast, plain))
    scale = max(float(jnp.max(jnp.abs(b))) for b in want)
    if name in PIECEWISE_LINEAR and what in ("hvp", "grad_of_grad"):
      assert scale == 0, (name, what)
    else:
      assert scale > 0, (name, what)  # a derivative that vanishes checks nothing
    for a, b in zip(ours, want):
      np.testing.assert_allclose(a, b, atol=TOLERANCE * scale, rtol=0, err_msg=f"{name} {what}")


def test_perceptual_loss_under_jacfwd_equals_its_gradient():
  params = vgg.init_vgg19_params(0)
  rng = np.random.default_rng(3)
  target = jnp.asarray(rng.random((1, 32, 32, 3), np.float32))
  output = jnp.asarray(rng.random((1, 8, 8, 3), np.float32))
  # jacfwd runs one JVP per input entry: a small image upsampled to VGG's size.
  loss = lambda o: losses.perceptual_loss(
      params, jax.image.resize(o, (1, 32, 32, 3), "nearest"), target, layer="conv4_4")
  forward = jax.jit(jax.jacfwd(loss))(output)
  reverse = jax.jit(jax.grad(loss))(output)
  assert float(jnp.max(jnp.abs(reverse))) > 0
  np.testing.assert_allclose(forward, reverse, rtol=1e-4,
                             atol=1e-4 * float(jnp.max(jnp.abs(reverse))))
