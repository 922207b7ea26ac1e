"""The U-Nets' up step on CPU as one convolution of the small map
(`ihc_jax.kernels.cpu.upsample_conv`) against the three layers it replaces
(`kernels.reference.upsample_reflect_conv`): bilinear x2, ReflectionPad2d(1),
3x3 conv; and `layers.UpsampleConv2d`, the module the U-Nets call. Random
inputs and weights."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ihc_jax import kernels
from ihc_jax.kernels import reference
from ihc_jax.kernels.cpu import upsample_conv
from ihc_jax.models import layers

three_layers = reference.upsample_reflect_conv


def _inputs(shape, c_out, seed=0):
  rng = np.random.default_rng(seed)
  x = jnp.asarray(rng.standard_normal(shape, np.float32))
  kernel = jnp.asarray(rng.standard_normal((3, 3, shape[-1], c_out), np.float32))
  return x, kernel


@pytest.mark.parametrize("shape,c_out", [((1, 2, 2, 3), 4), ((2, 3, 5, 2), 3),
                                         ((2, 8, 6, 5), 7), ((1, 16, 12, 16), 8)])
def test_equals_the_three_layers_with_gradients(shape, c_out):
  x, kernel = _inputs(shape, c_out)
  expected = jax.jit(three_layers)(x, kernel)
  got = jax.jit(upsample_conv.fused_upsample_reflect_conv)(x, kernel)
  assert got.shape == (shape[0], 2 * shape[1], 2 * shape[2], c_out)
  scale = float(jnp.abs(expected).max())
  np.testing.assert_allclose(got, expected, atol=2e-6 * scale)
  cotangent = jnp.asarray(np.random.default_rng(1).standard_normal(expected.shape, np.float32))
  def gradients(fn):
    return jax.jit(lambda x, k, c: jax.vjp(fn, x, k)[1](c))(x, kernel, cotangent)
  want = gradients(three_layers)
  have = gradients(upsample_conv.fused_upsample_reflect_conv)
  for a, b in zip(have, want):
    np.testing.assert_allclose(a, b, atol=2e-6 * float(jnp.abs(b).max()))


def test_phase_kernel_of_the_identity_tap_is_the_upsampling():
  # A kernel that passes its centre tap through makes the three layers a
  # bare bilinear upsampling: the four phases' taps are then the 0.75 /
  # 0.25 weights of the neighbours, and the result is exact.
  kernel = jnp.zeros((3, 3, 1, 1)).at[1, 1, 0, 0].set(1.0)
  x = jnp.asarray(np.random.default_rng(2).uniform(size=(1, 5, 4, 1)).astype(np.float32))
  np.testing.assert_allclose(upsample_conv.fused_upsample_reflect_conv(x, kernel),
                             reference.upsample_bilinear_2x(x), atol=1e-6)
  phases = np.asarray(upsample_conv.phase_kernel(kernel))[..., 0, :]
  # Row phase 0, column phase 0: 0.75 x[i] + 0.25 x[i - 1] on each axis.
  np.testing.assert_allclose(phases[..., 0], np.outer([.25, .75, 0.], [.25, .75, 0.]))
  np.testing.assert_allclose(phases[..., 3], np.outer([0., .75, .25], [0., .75, .25]))


def test_rejects_other_kernels_and_too_small_maps():
  x, kernel = _inputs((1, 4, 4, 2), 3)
  with pytest.raises(ValueError, match="3x3 kernel"):
    upsample_conv.fused_upsample_reflect_conv(x, jnp.zeros((5, 5, 2, 3)))
  with pytest.raises(ValueError, match="at least 2 px"):
    upsample_conv.fused_upsample_reflect_conv(x[:, :1], kernel)


@pytest.mark.parametrize("size", [4, upsample_conv.FUSED_MIN_SIZE])
def test_module_has_conv2d_parameters_and_its_output(size):
  # Below FUSED_MIN_SIZE the module runs the three layers, from it the fused
  # form; both with the parameters `layers.Conv2d` would have.
  x, _ = _inputs((1, size, size, 3), 2)
  module = layers.UpsampleConv2d(features=5)
  variables = module.init(jax.random.PRNGKey(0), x)
  conv = layers.Conv2d(5, 3, padding=1, padding_mode="reflect")
  conv_variables = conv.init(jax.random.PRNGKey(0), reference.upsample_bilinear_2x(x))
  assert jax.tree.map(jnp.shape, variables) == jax.tree.map(jnp.shape, conv_variables)
  for a, b in zip(jax.tree.leaves(variables), jax.tree.leaves(conv_variables)):
    np.testing.assert_array_equal(a, b)  # same initialisation
  expected = conv.apply(variables, reference.upsample_bilinear_2x(x))
  got = module.apply(variables, x)
  np.testing.assert_allclose(got, expected, atol=2e-6 * float(jnp.abs(expected).max()))


def test_module_in_bfloat16_is_close_to_float32():
  size = upsample_conv.FUSED_MIN_SIZE
  x = jnp.asarray(np.random.default_rng(3).uniform(-1, 1, (1, size, size, 8)).astype(np.float32))
  module = layers.UpsampleConv2d(features=4)
  variables = module.init(jax.random.PRNGKey(1), x)
  full = module.apply(variables, x)
  half = module.apply(variables, x.astype(jnp.bfloat16))
  assert half.dtype == jnp.bfloat16
  # bfloat16 keeps 8 bits of mantissa: 2^-8 of the output's scale, times a
  # few roundings along the sum.
  np.testing.assert_allclose(half.astype(jnp.float32), full,
                             atol=4 * 2.0**-8 * float(jnp.abs(full).max()))


def test_unet_with_the_fused_up_steps_equals_the_three_layers():
  # At 128 px the outermost up step (a 64 px map) takes the fused form on
  # CPU; with the fast paths off every step runs the three layers.
  from ihc_jax.models import unet  # pylint: disable=g-import-not-at-top
  net = unet.UNet(output_channels=3, num_downs=5, ngf=4)
  x = jnp.asarray(np.random.default_rng(4).uniform(-1, 1, (1, 128, 128, 1)).astype(np.float32))
  variables = jax.jit(lambda key, x: net.init(key, x, train=False))(jax.random.PRNGKey(0), x)
  assert set(variables["params"]["up_0"]) == {"kernel", "bias"}
  apply = lambda v, x: net.apply(v, x, train=False)
  fused = jax.jit(apply)(variables, x)
  with kernels.cpu_fast_paths(False):
    three = jax.jit(apply)(variables, x)
  assert float(jnp.abs(fused - three).max()) > 0  # the two forms did run
  np.testing.assert_allclose(fused, three, atol=1e-5)
