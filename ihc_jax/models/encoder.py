"""E: the colour latent encoder, original-code.md §3.4.

CycleGAN-style: ReflectionPad(3) -> Conv7x7 (ngf) -> IN -> ReLU ->
[Conv3x3 s2 p1 -> IN -> ReLU] x 2 (2 ngf, 4 ngf) -> residual blocks
[ReflectionPad(1) -> Conv3x3 -> IN -> ReLU -> ReflectionPad(1) -> Conv3x3 -> IN,
+ identity] -> AvgPool(8) -> flatten -> two Linear heads (mu, logvar).

IN is InstanceNorm without affine parameters. The official Linear layers are
fixed at 16384 inputs (256x256 images); here their input size follows the
image size (4 ngf * (H/32) * (W/32)), so E also runs at other sizes that are
multiples of 32. The flatten is NHWC (row, column, channel); the converter
permutes PyTorch's NCHW-ordered weight rows to match.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from ihc_jax import kernels
from ihc_jax.models import layers
from ihc_jax.models import precision


class EncoderResidualBlock(nn.Module):
  """Reflect-padded Conv3x3 -> IN -> ReLU -> Conv3x3 -> IN, plus the identity.

  Attributes:
    features: channels.
  """
  features: int

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    """Returns x + residual(x)."""
    out = layers.Conv2d(self.features, 3, padding=1, padding_mode="reflect",
                        name="conv1")(x)
    out = nn.relu(layers.instance_norm(out))
    out = layers.Conv2d(self.features, 3, padding=1, padding_mode="reflect",
                        name="conv2")(out)
    return x + layers.instance_norm(out)


class ColorEncoder(nn.Module):
  """Reference colour image -> (mu, logvar) of the colour latent code.

  Attributes:
    nz: latent code size.
    ngf: width of the first conv.
    num_downsamples: stride-2 convs (2).
    num_residual_blocks: residual blocks (4).
    pool: AvgPool window and stride (8).
    dtype: compute dtype (parameters stay float32; outputs are float32).
  """
  nz: int = 8
  ngf: int = 64
  num_downsamples: int = 2
  num_residual_blocks: int = 4
  pool: int = 8
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, image: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Encodes a reference image.

    Args:
      image: [B, H, W, 3] RGB in [0, 1]; H and W multiples of
        2**num_downsamples * pool (32).

    Returns:
      (mu, logvar), each [B, nz] float32.
    """
    layers.check_image(image, "reference image", channels=3)
    step = 2**self.num_downsamples * self.pool
    if image.shape[1] % step or image.shape[2] % step:
      raise ValueError(
          f"ColorEncoder needs height and width that are multiples of {step}, "
          f"got {image.shape[1]}x{image.shape[2]}")
    x = layers.Conv2d(self.ngf, 7, padding=3, padding_mode="reflect",
                      name="conv_in")(image.astype(self.dtype))
    x = nn.relu(layers.instance_norm(x))
    features = self.ngf
    for i in range(self.num_downsamples):
      features *= 2
      x = layers.Conv2d(features, 3, stride=2, padding=1, name=f"down_{i}")(x)
      x = nn.relu(layers.instance_norm(x))
    for i in range(self.num_residual_blocks):
      x = EncoderResidualBlock(features, name=f"res_{i}")(x)
    x = kernels.avg_pool_blocks(x, self.pool)
    x = x.reshape(x.shape[0], -1)
    mu = layers.Linear(self.nz, name="mu")(x)
    logvar = layers.Linear(self.nz, name="logvar")(x)
    return precision.to_float32((mu, logvar))


def sample_latent(key: jax.Array, mu: jax.Array, logvar: jax.Array) -> jax.Array:
  """Reparameterised sample z = mu + eps * exp(logvar / 2), eps ~ N(0, I).

  The official test script samples (rather than using mu) even at test time.

  Args:
    key: `jax.random` key.
    mu: [B, nz].
    logvar: [B, nz].

  Returns:
    [B, nz] float32.
  """
  eps = jax.random.normal(key, mu.shape, jnp.float32)
  return mu + eps * jnp.exp(0.5 * logvar)
