"""`ihc_jax.kernels`: each CPU fast path against its plain reference.

The layers compared are the networks' own: every convolution of the seven
networks at official widths and 256 px (found in their traced forward
passes) is classed by the forms the CPU path gives it (forward, kernel
gradient, input gradient), and the cheapest layer of each class is run
both ways at its real shape, batch 1: outputs, input and kernel gradients,
a JVP in both arguments and the kernel gradient of an input-gradient
penalty. The same for the U-Nets' up steps and the block pools. Random
inputs and kernels (numpy), float32.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ihc_jax import kernels
from ihc_jax import models
from ihc_jax.kernels import reference
from ihc_jax.kernels.cpu import conv as cpu_conv
from ihc_jax.kernels.cpu import conv_grads
from ihc_jax.kernels.cpu import pools as cpu_pools
from ihc_jax.kernels.cpu import upsample_conv as cpu_upsample_conv
from ihc_jax.tools.convert_weights import example_inputs

SIZE = 256


def _convs(jaxpr):
  """(lhs shape, rhs shape, stride, padding) of every convolution, nested jaxprs included."""
  for eqn in jaxpr.eqns:
    if eqn.primitive.name == "conv_general_dilated":
      yield (tuple(eqn.invars[0].aval.shape), tuple(eqn.invars[1].aval.shape),
             eqn.params["window_strides"][0], tuple(map(tuple, eqn.params["padding"])))
    for sub in jax.core.jaxprs_in_params(eqn.params):
      yield from _convs(sub)


@functools.lru_cache(maxsize=1)
def network_layers():
  """{(lhs, rhs, stride, padding)} of the seven networks' forward passes."""
  cfg = models.default_model_config()
  found = set()
  with kernels.cpu_fast_paths(False):
    for name in models.NETWORKS:
      model = models.build(name, cfg[name])
      args, kwargs = example_inputs(name, cfg[name], SIZE)
      variables = jax.eval_shape(lambda *a: model.init(jax.random.PRNGKey(0), *a, **kwargs),
                                 *args)
      jaxpr = jax.make_jaxpr(lambda v, *a: model.apply(v, *a, **kwargs))(variables, *args)
      found.update(_convs(jaxpr.jaxpr))
  return found


def _forms(layer):
  """The CPU path's (forward, kernel gradient, input gradient) forms of a layer."""
  x_shape, k_shape, stride, padding = layer
  out = cpu_conv.output_shape(x_shape, k_shape, stride, padding)
  forward = cpu_conv.forward_form(x_shape, k_shape, stride, padding)
  if forward == "matmul":  # plain jax.numpy, differentiated by JAX
    return ("matmul", "autodiff", "autodiff")
  return (forward, conv_grads.kernel_gradient_form(k_shape, out, stride),
          "phases" if conv_grads.uses_phases(k_shape, out, stride) else "xla")


def representatives():
  """The cheapest network layer of each class of forms."""
  cost = lambda layer: np.prod(layer[0]) * layer[1][3] * layer[1][0] * layer[1][1]
  best = {}
  for layer in sorted(network_layers(), key=cost):
    best.setdefault(_forms(layer), layer)
  return best


def _random(shape, seed):
  return jnp.asarray(np.random.default_rng(seed).standard_normal(shape).astype(np.float32))


def _assert_close(got, want, what, tolerance=2e-5):
  for g, w in zip(jax.tree_util.tree_leaves(got), jax.tree_util.tree_leaves(want)):
    scale = float(jnp.max(jnp.abs(w)))
    assert scale > 0, what
    np.testing.assert_allclose(g, w, atol=tolerance * scale, rtol=0, err_msg=what)


def _derivatives(f, x, k, dy):
  """Output, (dx, dk), JVP in both arguments, and d/dk of |grad_x|^2."""
  loss = lambda x, k: jnp.sum(f(x, k) * dy)
  penalty = lambda k: jnp.sum(jnp.square(jax.grad(lambda x: jnp.sum(jnp.tanh(f(x, k)) * dy))(x)))
  return {"output": f(x, k), "gradients": jax.grad(loss, (0, 1))(x, k),
          "jvp": jax.jvp(f, (x, k), (0.5 * x, 2.0 * k))[1],
          "penalty": jax.grad(penalty)(k)}


def test_the_classes_cover_every_fast_form():
  forms = set(representatives())
  assert {f[0] for f in forms} == {"matmul", "pad_and_crop", "xla"}
  assert {f[1] for f in forms} >= {"shifted", "rows", "taps", "padded"}
  assert {f[2] for f in forms} >= {"phases", "xla"}


@pytest.mark.parametrize("forms", sorted(representatives()), ids="-".join)
def test_conv_fast_path_equals_the_reference_on_the_networks_layers(forms):
  x_shape, k_shape, stride, padding = representatives()[forms]
  x = _random(x_shape, 0)
  k = _random(k_shape, 1) / np.sqrt(np.prod(k_shape[:3]))
  dy = _random(cpu_conv.output_shape(x_shape, k_shape, stride, padding), 2)
  fast = jax.jit(functools.partial(_derivatives, functools.partial(
      cpu_conv.conv2d, stride=stride, padding=padding)))(x, k, dy)
  plain = jax.jit(functools.partial(_derivatives, functools.partial(
      reference.conv2d, stride=stride, padding=padding)))(x, k, dy)
  for what in fast:
    _assert_close(fast[what], plain[what], f"{forms} {what}")


# The U-Nets' up steps at 256 px (input map, C_in -> C_out): G's outermost
# (the fused form) and an inner one (three layers).
UP_STEPS = [((1, 128, 128, 128), 3), ((1, 16, 16, 1024), 256)]


@pytest.mark.parametrize("shape,c_out", UP_STEPS)
def test_up_step_fast_path_equals_the_reference(shape, c_out):
  x = _random(shape, 0)
  k = _random((3, 3, shape[3], c_out), 1) / np.sqrt(9 * shape[3])
  dy = _random((1, 2 * shape[1], 2 * shape[2], c_out), 2)
  fast = jax.jit(functools.partial(_derivatives, cpu_upsample_conv.upsample_reflect_conv))(x, k, dy)
  plain = jax.jit(functools.partial(_derivatives, reference.upsample_reflect_conv))(x, k, dy)
  for what in fast:
    _assert_close(fast[what], plain[what], f"up step {shape} {what}")


@pytest.mark.parametrize("pool,shape,window", [
    ("max", (1, 16, 16, 512), 2),   # VGG19's pool5 at 256 px
    ("max", (2, 9, 11, 3), 3),      # ragged edges, two images
    ("avg", (1, 64, 64, 256), 8),   # E's pool
    ("avg", (2, 9, 11, 3), 4)])
def test_pool_fast_path_equals_the_reference(pool, shape, window):
  x = _random(shape, 0)
  # Ties, as after a ReLU: the gradient goes to each block's first maximum.
  x = jnp.maximum(x, 0.0)
  fast = getattr(cpu_pools, f"{pool}_pool_blocks")
  plain = getattr(reference, f"{pool}_pool_blocks")
  dy = _random(plain(x, window).shape, 1)

  def derivatives(f):
    loss = lambda x: jnp.sum(f(x, window) * dy)
    return {"output": f(x, window), "gradient": jax.grad(loss)(x),
            "jvp": jax.jvp(lambda x: f(x, window), (x,), (dy.sum() * x + 1.0,))[1]}

  got, want = jax.jit(lambda: derivatives(fast))(), jax.jit(lambda: derivatives(plain))()
  for what in got:
    np.testing.assert_allclose(got[what], want[what], atol=1e-6, rtol=1e-6,
                               err_msg=f"{pool} {what}")


def test_max_pool_gradient_goes_to_the_first_maximum_and_skips_nan_blocks():
  x = jnp.array([[0., 0.], [0., 0.]]).reshape(1, 2, 2, 1)
  grad = jax.grad(lambda x: jnp.sum(cpu_pools.max_pool_blocks(x, 2)))(x)
  np.testing.assert_array_equal(grad.ravel(), [1., 0., 0., 0.])
  x = jnp.array([[1., jnp.nan], [0., 0.]]).reshape(1, 2, 2, 1)
  assert np.isnan(cpu_pools.max_pool_blocks(x, 2)).all()
  grad = jax.grad(lambda x: jnp.sum(cpu_pools.max_pool_blocks(x, 2)))(x)
  np.testing.assert_array_equal(grad.ravel(), [0., 0., 0., 0.])


def test_seam_takes_the_cpu_forms_only_when_on(monkeypatch):
  x, k = _random((1, 6, 6, 4), 0), _random((3, 3, 4, 5), 1)
  assert kernels.cpu_fast_paths_enabled()
  on = jax.make_jaxpr(lambda x, k: kernels.conv2d(x, k, 1, 0))(x, k)
  assert "platform_index" in str(on)
  with kernels.cpu_fast_paths(False):
    off = jax.make_jaxpr(lambda x, k: kernels.conv2d(x, k, 1, 0))(x, k)
  assert "platform_index" not in str(off) and "conv_general_dilated" in str(off)
  assert kernels.cpu_fast_paths_enabled()  # restored
  monkeypatch.setenv(kernels.ENV_VAR, "0")
  assert not kernels.cpu_fast_paths_enabled()
  with kernels.cpu_fast_paths(True):
    assert kernels.cpu_fast_paths_enabled()
  monkeypatch.setenv(kernels.ENV_VAR, "maybe")
  with pytest.raises(ValueError, match=kernels.ENV_VAR):
    kernels.cpu_fast_paths_enabled()


def test_conv2d_padding_argument_forms():
  x, k = _random((1, 8, 8, 2), 0), _random((3, 3, 2, 4), 1)
  np.testing.assert_allclose(kernels.conv2d(x, k, 1, 1), kernels.conv2d(x, k, 1, ((1, 1), (1, 1))),
                             atol=1e-6)
  assert kernels.conv2d(x, k, 2, ((0, 1), (2, 0))).shape == (1, 4, 4, 4)
  with pytest.raises(ValueError, match="padding"):
    kernels.conv2d(x, k, 1, "SAME")
