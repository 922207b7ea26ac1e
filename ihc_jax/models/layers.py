"""Building blocks shared by the IHC networks, with PyTorch's conventions.

The official networks are PyTorch modules; their weights only load if every
layer computes exactly what its PyTorch counterpart computes. The helpers here
pin down those conventions in NHWC:

* `Conv2d` / `Linear`: explicit symmetric zero or reflection padding,
  PyTorch's default initialisation U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for
  kernel and bias, so that networks trained from scratch start like the
  official ones. Kernels are HWIO, Linear kernels (in, out).
* `batch_norm`: BatchNorm2d (eps 1e-5, PyTorch momentum 0.1 = Flax 0.9).
* `instance_norm`: InstanceNorm2d without affine parameters (biased variance).
* `reflect_pad`, `upsample_bilinear_2x`, `avg_pool_exclude_pad`,
  `avg_pool_blocks`: ReflectionPad2d, Upsample(scale 2, bilinear,
  align_corners=False), AvgPool2d(count_include_pad=False) and
  AvgPool2d(k) (non-overlapping blocks).
"""

from __future__ import annotations

import functools
import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from ihc_jax.models import conv_grad

BN_MOMENTUM = 0.9
NORM_EPSILON = 1e-5
LEAKY_SLOPE = 0.2


def torch_uniform_init(fan_in: int) -> nn.initializers.Initializer:
  """U(-1/sqrt(fan_in), 1/sqrt(fan_in)), PyTorch's default for conv/linear.

  Args:
    fan_in: input channels times kernel area (conv) or input features (linear).

  Returns:
    A Flax initializer.
  """
  bound = 1.0 / math.sqrt(max(fan_in, 1))

  def init(key: jax.Array, shape: tuple[int, ...], dtype: Any = jnp.float32) -> jax.Array:
    return jax.random.uniform(key, shape, dtype, -bound, bound)

  return init


# Convolutions with at most this many output positions per image run as one
# matmul over a patch matrix (`conv_valid`). XLA:CPU turns a convolution
# whose input is smaller than its kernel into one with input and kernel
# swapped, on a slow generic path: the IHN's dense-block Conv3x3
# (1024 -> 256) on its 2x2 innermost map took 17.6 ms forward and 44.6 ms
# with both gradients at batch 1 (115 ms forward at batch 16), against 1.6,
# 3.5 and 3.2 ms as a matmul (`python -m ihc_jax.bench conv --small`).
# On 4-16 px maps the matmul form was also faster for single layers (up
# convs 1.5-2.2x forward, 1.8-4.4x with gradients), but inside the networks
# the forward gain was within this CPU's +-10% noise while the peak memory
# of the official test.py graph rose by 0.1 GB (1.16 -> 1.27 GB at a
# threshold of 16x16, fresh processes): so 2x2.
MATMUL_CONV_MAX_POSITIONS = 2 * 2



def conv_valid(x: jax.Array, kernel: jax.Array, stride: int = 1) -> jax.Array:
  """VALID convolution (NHWC input, HWIO kernel) of an already padded input.

  Outputs of at most `MATMUL_CONV_MAX_POSITIONS` positions per image are
  computed by `conv_valid_matmul`, larger ones by `conv_valid_xla`: the same
  sums in another order (float rounding apart).

  Args:
    x: [B, H, W, C_in], already padded.
    kernel: [k, k, C_in, C_out].
    stride: the same in both directions.

  Returns:
    [B, (H - k) // stride + 1, (W - k) // stride + 1, C_out].
  """
  k = kernel.shape[0]
  positions = ((x.shape[1] - k) // stride + 1) * ((x.shape[2] - k) // stride + 1)
  if positions <= MATMUL_CONV_MAX_POSITIONS:
    return conv_valid_matmul(x, kernel, stride)
  return conv_valid_xla(x, kernel, stride)


def conv_valid_matmul(x: jax.Array, kernel: jax.Array, stride: int = 1) -> jax.Array:
  """`conv_valid` as one matmul of the [B, H', W', k*k*C_in] patch matrix
  (taps in HWI order) with the kernel reshaped to [k*k*C_in, C_out]."""
  k = kernel.shape[0]
  out_h = (x.shape[1] - k) // stride + 1
  out_w = (x.shape[2] - k) // stride + 1
  patches = jnp.concatenate([
      x[:, i:i + stride * (out_h - 1) + 1:stride, j:j + stride * (out_w - 1) + 1:stride]
      for i in range(k) for j in range(k)], axis=-1)
  return jnp.einsum("bhwp,po->bhwo", patches, kernel.reshape(-1, kernel.shape[-1]))


def conv_valid_xla(x: jax.Array, kernel: jax.Array, stride: int = 1) -> jax.Array:
  """`conv_valid` as XLA's convolution.

  XLA:CPU runs a VALID convolution 3-4x slower than one with explicit
  padding, so for stride 1 and an odd kernel x is convolved with
  `pad = (k - 1) // 2` more zeros and the extra output ring (windows that
  overlap the zeros) is cropped: the kept outputs read exactly the VALID
  windows (bit for bit on the CPUs this was measured on; an AVX2 AMD EPYC
  sums the padded convolution in another order, 1-2 ulp). The ring costs
  (1 + 2 pad / H')^2 - 1 of the work.
  """
  pad = (kernel.shape[0] - 1) // 2
  if stride != 1 or pad == 0:
    return conv_grad.conv(x, kernel, stride, "VALID")
  y = conv_grad.conv(x, kernel, 1, ((pad, pad), (pad, pad)))
  return y[:, pad:-pad, pad:-pad, :]


def conv(x: jax.Array, kernel: jax.Array, stride: int = 1, padding: int = 0) -> jax.Array:
  """Convolution with symmetric zero padding (PyTorch's Conv2d), NHWC / HWIO.

  Small outputs run as one matmul (`conv_valid_matmul`); the rest as XLA's padded
  convolution.
  """
  k = kernel.shape[0]
  out_h = (x.shape[1] + 2 * padding - k) // stride + 1
  out_w = (x.shape[2] + 2 * padding - k) // stride + 1
  if out_h * out_w <= MATMUL_CONV_MAX_POSITIONS:
    pads = ((0, 0), (padding, padding), (padding, padding), (0, 0))
    return conv_valid_matmul(jnp.pad(x, pads), kernel, stride)
  return conv_grad.conv(x, kernel, stride, ((padding, padding), (padding, padding)))


def reflect_padded_conv(x: jax.Array, kernel: jax.Array, pad: int) -> jax.Array:
  """Stride-1 convolution of ReflectionPad2d(pad)(x), same size as x.

  `conv_valid(reflect_pad(x, pad), kernel)`: a matmul for small maps, else
  XLA's padded convolution with the extra ring cropped (6% more work for a
  3x3 conv at 64 px) rather than its 3-4x slower VALID one.

  Args:
    x: [B, H, W, C_in].
    kernel: [2 pad + 1, 2 pad + 1, C_in, C_out] (HWIO).
    pad: reflection padding on every side.

  Returns:
    [B, H, W, C_out].
  """
  return conv_valid(reflect_pad(x, pad) if pad else x, kernel)


class Conv2d(nn.Module):
  """2-D convolution with PyTorch semantics (symmetric padding).

  `padding_mode="reflect"` is ReflectionPad2d(padding) followed by an
  unpadded conv (the official E and U-Net up convs); the parameters are the
  same as with zero padding.

  Attributes:
    features: output channels.
    kernel_size: square kernel side.
    stride: stride in both directions.
    padding: padding on every side (PyTorch `padding=`).
    use_bias: whether to add a bias.
    padding_mode: "zeros" or "reflect" (stride 1, padding (kernel_size - 1) / 2).
  """
  features: int
  kernel_size: int
  stride: int = 1
  padding: int = 0
  use_bias: bool = True
  padding_mode: str = "zeros"

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    """Applies the convolution to x [B, H, W, C_in] -> [B, H', W', features]."""
    in_channels = x.shape[-1]
    k = self.kernel_size
    init = torch_uniform_init(in_channels * k * k)
    kernel = self.param("kernel", init, (k, k, in_channels, self.features))
    if self.padding_mode == "reflect":
      if self.stride != 1 or 2 * self.padding + 1 != k:
        raise ValueError(
            "reflect padding is implemented for stride 1 and 'same' padding, got "
            f"kernel {k}, stride {self.stride}, padding {self.padding}")
      y = reflect_padded_conv(x, kernel.astype(x.dtype), self.padding)
    elif self.padding_mode == "zeros":
      y = conv(x, kernel.astype(x.dtype), self.stride, self.padding)
    else:
      raise ValueError(f"padding_mode must be 'zeros' or 'reflect', got {self.padding_mode!r}")
    if self.use_bias:
      y = y + self.param("bias", init, (self.features,)).astype(y.dtype)
    return y


class ConvKernel(nn.Module):
  """The kernel of a bias-free `Conv2d` (same parameter and init), unapplied.

  For convolutions that are composed before they run (two linear convs in a
  row are one conv).

  Attributes:
    features: output channels.
    kernel_size: square kernel side.
  """
  features: int
  kernel_size: int

  @nn.compact
  def __call__(self, in_channels: int) -> jax.Array:
    """Returns the [k, k, in_channels, features] kernel (HWIO)."""
    k = self.kernel_size
    return self.param("kernel", torch_uniform_init(in_channels * k * k),
                      (k, k, in_channels, self.features))


class Linear(nn.Module):
  """Fully connected layer with PyTorch's default initialisation.

  Attributes:
    features: output features.
  """
  features: int

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    """Applies x [..., in] @ kernel [in, out] + bias."""
    init = torch_uniform_init(x.shape[-1])
    kernel = self.param("kernel", init, (x.shape[-1], self.features))
    bias = self.param("bias", init, (self.features,))
    return x @ kernel.astype(x.dtype) + bias.astype(x.dtype)


def batch_norm(train: bool, name: str, dtype: Any = jnp.float32) -> nn.BatchNorm:
  """BatchNorm2d with PyTorch's settings; batch statistics only when training.

  Flax keeps the biased batch variance in its running average where PyTorch
  keeps the unbiased one; evaluation with given statistics is identical.
  Statistics, running averages, scale and bias are float32 whatever the
  input dtype (Flax promotes the reductions to float32); only the output is
  cast to `dtype`.

  Args:
    train: use batch statistics and update `batch_stats` when True.
    name: submodule name (the parameter path).
    dtype: dtype of the output (the network's compute dtype).

  Returns:
    A configured `nn.BatchNorm`.
  """
  return nn.BatchNorm(use_running_average=not train, momentum=BN_MOMENTUM,
                      epsilon=NORM_EPSILON, dtype=dtype, name=name)


def instance_norm(x: jax.Array, *, epsilon: float = NORM_EPSILON) -> jax.Array:
  """InstanceNorm2d(affine=False): per-sample, per-channel normalisation.

  Args:
    x: [B, H, W, C].
    epsilon: added to the biased variance.

  Returns:
    x normalised over H and W, in x's dtype (statistics in float32).
  """
  x32 = x.astype(jnp.float32)
  mean = jnp.mean(x32, axis=(1, 2), keepdims=True)
  var = jnp.mean(jnp.square(x32 - mean), axis=(1, 2), keepdims=True)
  return ((x32 - mean) * jax.lax.rsqrt(var + epsilon)).astype(x.dtype)


def reflect_pad(x: jax.Array, pad: int) -> jax.Array:
  """ReflectionPad2d(pad) on NHWC (the edge pixel is not repeated)."""
  if min(x.shape[1], x.shape[2]) <= pad:
    raise ValueError(
        f"reflection padding of {pad} needs spatial size > {pad}, got {x.shape[1:3]}")
  return jnp.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)), mode="reflect")


def upsample_axis_2x(x: jax.Array, axis: int) -> jax.Array:
  """Linear x2 upsampling of one axis with half-pixel centres, edge-clamped."""
  n = x.shape[axis]
  before = jnp.concatenate([jax.lax.slice_in_dim(x, 0, 1, axis=axis),
                            jax.lax.slice_in_dim(x, 0, n - 1, axis=axis)], axis=axis)
  after = jnp.concatenate([jax.lax.slice_in_dim(x, 1, n, axis=axis),
                           jax.lax.slice_in_dim(x, n - 1, n, axis=axis)], axis=axis)
  even = 0.75 * x + 0.25 * before
  odd = 0.75 * x + 0.25 * after
  shape = list(x.shape)
  shape[axis] = 2 * n
  return jnp.stack([even, odd], axis=axis + 1).reshape(shape)


def upsample_bilinear_2x(x: jax.Array) -> jax.Array:
  """Upsample(scale_factor=2, mode='bilinear', align_corners=False) on NHWC.

  With half-pixel centres, output pixel 2i (2i + 1) of each axis is
  0.75 x[i] + 0.25 x[i - 1] (x[i + 1]), the neighbour index clamped at the
  border, which is what PyTorch's align_corners=False does for x2 scaling.
  Written as these two-tap sums rather than `jax.image.resize`, whose
  bilinear resize contracts every axis with a dense [2n, n] weight matrix
  (3x slower on XLA:CPU at 128 px); the two agree to float rounding.
  """
  return upsample_axis_2x(upsample_axis_2x(x, 1), 2)


def _blocks(x: jax.Array, window: int) -> jax.Array:
  """[B, H, W, C] -> [B, H // window, window, W // window, window, C]."""
  b, h, w, c = x.shape
  out_h, out_w = h // window, w // window
  x = x[:, :out_h * window, :out_w * window]
  return x.reshape(b, out_h, window, out_w, window, c)


def avg_pool_blocks(x: jax.Array, window: int) -> jax.Array:
  """AvgPool2d(window) (stride = window, no padding, floor mode) on NHWC.

  The mean of each non-overlapping block, as a reshape: the same sums as
  `flax.linen.avg_pool(x, (window, window), strides=(window, window))` up to
  float rounding. The gradient of this form is a broadcast; XLA:CPU ran the
  gradient of the `reduce_window` form on a slow path inside E's training
  step (26 ms of the colour step at 256 px, 64x64x256 pooled by 8).

  Args:
    x: [B, H, W, C]; rows and columns past the last whole block are dropped.
    window: block side.

  Returns:
    [B, H // window, W // window, C].
  """
  return _blocks(x, window).mean(axis=(2, 4))


def max_pool_blocks(x: jax.Array, window: int) -> jax.Array:
  """MaxPool2d(window) (stride = window, no padding, floor mode) on NHWC.

  The maximum of each non-overlapping block, as a reshape: the same values
  as `flax.linen.max_pool(x, (window, window), strides=(window, window))`
  bit for bit. Its gradient is that of the `reduce_window` form too: each
  block's output cotangent goes to the block's first maximum in row-major
  order (PyTorch's and XLA's select-and-scatter choice; `jnp.max` alone
  would split it between tied maxima, which flat image regions make common
  in VGG's features). XLA:CPU ran the select-and-scatter gradient as a
  variadic reduce-window with an index map (iota, broadcast and the
  reduce-window: about 130 ms of the IHN step's VGG19 pools at 256 px);
  here it is one elementwise pass.

  Args:
    x: [B, H, W, C]; rows and columns past the last whole block are dropped
      (their gradient is zero).
    window: block side.

  Returns:
    [B, H // window, W // window, C].
  """
  return _max_pool_blocks(x, window)


@functools.partial(jax.custom_vjp, nondiff_argnums=(1,))
def _max_pool_blocks(x: jax.Array, window: int) -> jax.Array:
  return _blocks(x, window).max(axis=(2, 4))


def _max_pool_blocks_fwd(x: jax.Array, window: int
                         ) -> tuple[jax.Array, tuple[jax.Array, jax.Array]]:
  out = _max_pool_blocks(x, window)
  return out, (x, out)


def _max_pool_blocks_bwd(window: int, residuals: tuple[jax.Array, jax.Array],
                         g: jax.Array) -> tuple[jax.Array]:
  x, out = residuals
  blocks = _blocks(x, window)
  top = out[:, :, None, :, None, :]
  # Row-major rank of each cell in its block; the first maximum has the least.
  rank = (np.arange(window)[:, None, None] * window
          + np.arange(window)[None, None, :]).astype(np.int32)[:, :, :, None]
  ranks = jnp.where(blocks == top, rank, window * window)
  first = ranks.min(axis=(2, 4), keepdims=True)
  # A block with a NaN has no maximum equal to its output: no cell gets it.
  hit = (ranks == first) & (first < window * window)
  grad = jnp.where(hit, g[:, :, None, :, None, :], jnp.zeros((), g.dtype))
  b, h, w, c = x.shape
  grad = grad.reshape(b, blocks.shape[1] * window, blocks.shape[3] * window, c)
  return (jnp.pad(grad, ((0, 0), (0, h - grad.shape[1]), (0, w - grad.shape[2]), (0, 0))),)


_max_pool_blocks.defvjp(_max_pool_blocks_fwd, _max_pool_blocks_bwd)


def avg_pool_exclude_pad(x: jax.Array, window: int, stride: int, padding: int) -> jax.Array:
  """AvgPool2d(window, stride, padding, count_include_pad=False) on NHWC.

  Args:
    x: [B, H, W, C].
    window: square window side.
    stride: stride.
    padding: zero padding on every side; padded cells are not counted.

  Returns:
    The pooled array.
  """
  pads = ((0, 0), (padding, padding), (padding, padding), (0, 0))
  dims = (1, window, window, 1)
  strides = (1, stride, stride, 1)
  total = jax.lax.reduce_window(x, 0.0, jax.lax.add, dims, strides, pads)
  # The number of real pixels per window depends on shapes only: computed
  # here with numpy rather than as a reduce_window over a constant, which
  # XLA constant-folds slowly (minutes when compiling D's training step).
  counts = [_window_counts(n, window, stride, padding) for n in x.shape[1:3]]
  count = np.outer(*counts).astype(np.float32)[None, :, :, None]
  return total / jnp.asarray(count, x.dtype)


def _window_counts(size: int, window: int, stride: int, padding: int) -> np.ndarray:
  """Real (unpadded) cells covered by each pooling window along one axis."""
  starts = np.arange((size + 2 * padding - window) // stride + 1) * stride - padding
  return np.clip(starts + window, 0, size) - np.clip(starts, 0, size)


def leaky_relu(x: jax.Array) -> jax.Array:
  """LeakyReLU with the official slope 0.2."""
  return nn.leaky_relu(x, LEAKY_SLOPE)


def tile_latent(z: jax.Array, height: int, width: int) -> jax.Array:
  """Tiles a latent code [B, nz] to a map [B, height, width, nz]."""
  if z.ndim != 2:
    raise ValueError(f"latent code must be [B, nz], got shape {z.shape}")
  return jnp.broadcast_to(z[:, None, None, :], (z.shape[0], height, width, z.shape[1]))


def check_image(x: jax.Array, name: str, channels: int | None = None) -> None:
  """Raises ValueError unless x is NHWC (with `channels` channels if given)."""
  if x.ndim != 4:
    raise ValueError(f"{name} must be NHWC [B, H, W, C], got shape {x.shape}")
  if channels is not None and x.shape[-1] != channels:
    raise ValueError(f"{name} must have {channels} channel(s), got shape {x.shape}")
