"""Building blocks shared by the IHC networks, with PyTorch's conventions.

The official networks are PyTorch modules; their weights only load if every
layer computes exactly what its PyTorch counterpart computes. The helpers here
pin down those conventions in NHWC:

* `Conv2d` / `Linear`: explicit symmetric zero or reflection padding,
  PyTorch's default initialisation U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for
  kernel and bias, so that networks trained from scratch start like the
  official ones. Kernels are HWIO, Linear kernels (in, out).
* `UpsampleConv2d`: the U-Nets' up step, Upsample(2, bilinear) ->
  ReflectionPad2d(1) -> Conv2d(3x3), with `Conv2d`'s parameters.
* `batch_norm`: BatchNorm2d (eps 1e-5, PyTorch momentum 0.1 = Flax 0.9).
* `instance_norm`: InstanceNorm2d without affine parameters (biased variance).
* `avg_pool_exclude_pad`: AvgPool2d(count_include_pad=False).

Every convolution and block pool of the networks goes through
`ihc_jax.kernels` (with ReflectionPad2d, Upsample(scale 2, bilinear,
align_corners=False), MaxPool2d(k) and AvgPool2d(k) of non-overlapping
blocks): XLA's own ops on GPU and TPU, faster forms on CPU.
"""

from __future__ import annotations

import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from ihc_jax import kernels

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
    kernel_init: the kernel's initializer; default PyTorch's uniform.
    bias_init: the bias's initializer; default PyTorch's uniform.
  """
  features: int
  kernel_size: int
  stride: int = 1
  padding: int = 0
  use_bias: bool = True
  padding_mode: str = "zeros"
  kernel_init: nn.initializers.Initializer | None = None
  bias_init: nn.initializers.Initializer | None = None

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    """Applies the convolution to x [B, H, W, C_in] -> [B, H', W', features]."""
    in_channels = x.shape[-1]
    k = self.kernel_size
    init = torch_uniform_init(in_channels * k * k)
    kernel = self.param("kernel", self.kernel_init or init, (k, k, in_channels, self.features))
    if self.padding_mode == "reflect":
      if self.stride != 1 or 2 * self.padding + 1 != k:
        raise ValueError(
            "reflect padding is implemented for stride 1 and 'same' padding, got "
            f"kernel {k}, stride {self.stride}, padding {self.padding}")
      y = kernels.conv2d(kernels.reference.reflect_pad(x, self.padding) if self.padding else x,
                         kernel.astype(x.dtype))
    elif self.padding_mode == "zeros":
      y = kernels.conv2d(x, kernel.astype(x.dtype), self.stride, self.padding)
    else:
      raise ValueError(f"padding_mode must be 'zeros' or 'reflect', got {self.padding_mode!r}")
    if self.use_bias:
      y = y + self.param("bias", self.bias_init or init, (self.features,)).astype(y.dtype)
    return y


class UpsampleConv2d(nn.Module):
  """Upsample(2, bilinear) -> ReflectionPad2d(1) -> Conv2d(3x3, bias): an up
  step of the U-Nets (`kernels.upsample_reflect_conv`), with `Conv2d`'s
  parameters (kernel, bias) and initialisation.

  Attributes:
    features: output channels.
  """
  features: int

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    """[B, n, m, C_in] -> [B, 2n, 2m, features]."""
    init = torch_uniform_init(x.shape[-1] * 9)
    kernel = self.param("kernel", init, (3, 3, x.shape[-1], self.features))
    y = kernels.upsample_reflect_conv(x, kernel)
    return y + self.param("bias", init, (self.features,)).astype(y.dtype)


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
