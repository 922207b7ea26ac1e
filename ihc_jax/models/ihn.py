"""IHN: the inverse halftone network (halftone -> grayscale), original-code.md §3.2.

Content aggregation is the shared U-Net (`UNet`) with a dense innermost block,
fed with cat([halftone, noise map]) (no edge); its tanh output is the content
map. Detail generation follows PRL: cat([content, halftone]) -> Conv3x3 (64)
-> residual blocks (Conv3x3 -> ReLU -> Conv3x3, + identity) -> Conv3x3 (256)
-> Conv1x1 (1). Every detail conv is bias-free with zero "same" padding and no
normalisation; the last two are run as one Conv3x3 with their product kernel. The output is content + detail, with no final tanh, so it can
leave [0, 1] slightly.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from ihc_jax import kernels
from ihc_jax.models import layers
from ihc_jax.models import precision
from ihc_jax.models.unet import UNet


class DetailResidualBlock(nn.Module):
  """Conv3x3 -> ReLU -> Conv3x3 (both bias-free), plus the identity.

  Attributes:
    features: channels.
  """
  features: int

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    """Returns x + residual(x)."""
    out = layers.Conv2d(self.features, 3, padding=1, use_bias=False, name="conv1")(x)
    out = nn.relu(out)
    out = layers.Conv2d(self.features, 3, padding=1, use_bias=False, name="conv2")(out)
    return x + out


class InverseHalftoneNet(nn.Module):
  """Halftone + noise map -> (content, detail, content + detail).

  Attributes:
    nz: channels of the noise map.
    num_downs: U-Net levels (inputs must be multiples of 2**num_downs).
    ngf: U-Net base width.
    max_mult: U-Net channel multiplier cap.
    dense_innermost: dense bottleneck in the U-Net (official: True).
    dropout_rate: U-Net dropout rate.
    detail_features: width of the detail branch (64).
    detail_blocks: residual blocks in the detail branch (8).
    detail_expand: channels of the conv before the 1x1 output conv (256).
    dtype: compute dtype (parameters stay float32; outputs are float32).
  """
  nz: int = 8
  num_downs: int = 7
  ngf: int = 64
  max_mult: int = 8
  dense_innermost: bool = True
  dropout_rate: float = 0.5
  detail_features: int = 64
  detail_blocks: int = 8
  detail_expand: int = 256
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, halftone: jax.Array, noise: jax.Array, *,
               train: bool) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Reconstructs a grayscale image from a halftone.

    Args:
      halftone: [B, H, W, 1] in [0, 1] (or one colour channel of G's output).
      noise: [B, H, W, nz] noise map (`make_noise_map`).
      train: batch statistics and dropout when True (needs a "dropout" rng).

    Returns:
      (content, detail, output), each [B, H, W, 1] float32; output =
      content + detail is the grayscale estimate on the [0, 1] scale.
    """
    layers.check_image(halftone, "halftone", channels=1)
    layers.check_image(noise, "noise", channels=self.nz)
    if noise.shape[:3] != halftone.shape[:3]:
      raise ValueError(
          f"noise shape {noise.shape} does not match halftone shape {halftone.shape}")
    content = UNet(output_channels=1, input_channels=1 + self.nz,
                   num_downs=self.num_downs, ngf=self.ngf, max_mult=self.max_mult,
                   dense_innermost=self.dense_innermost, dropout_rate=self.dropout_rate,
                   name="content")(halftone.astype(self.dtype),
                                   noise.astype(self.dtype), train=train)
    x = jnp.concatenate([content, halftone.astype(content.dtype)], axis=-1)
    x = layers.Conv2d(self.detail_features, 3, padding=1, use_bias=False,
                      name="detail_in")(x)
    for i in range(self.detail_blocks):
      x = DetailResidualBlock(self.detail_features, name=f"detail_block_{i}")(x)
    # Conv3x3 (detail_expand channels) then Conv1x1 (1 channel), bias-free
    # with nothing in between, is one Conv3x3 whose kernel is the product of
    # the two: same parameters, same gradients, without the
    # detail_expand-channel full-resolution map (a fifth of the IHN's FLOPs).
    expand = layers.ConvKernel(self.detail_expand, 3, name="detail_expand")(
        self.detail_features)
    project = layers.ConvKernel(1, 1, name="detail_out")(self.detail_expand)
    kernel = jnp.einsum("hwie,eo->hwio", expand, project[0, 0])
    detail = kernels.conv2d(x, kernel.astype(x.dtype), padding=1)
    content, detail = precision.to_float32((content, detail))
    return content, detail, content + detail
