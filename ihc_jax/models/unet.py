"""The U-Net shared by the IHN content branch and G (`G_Unet_add_input`).

original-code.md §3.1. Level 0 is the outermost block, level L-1 = num_downs-1
the innermost. With d_i the down-path output of level i (the input of level
i + 1):

* down, level 0: Conv4x4 s2 p1; levels 1..L-2: LeakyReLU(0.2) -> Conv4x4 s2 p1
  -> BN; level L-1: LeakyReLU -> Conv4x4 s2 p1 (no norm), optionally followed
  by a DenseNet block (3 bottlenecks, growth C/2) and a transition back to C.
* up, level i: ReLU -> bilinear x2 -> ReflectionPad(1) -> Conv3x3 -> BN (tanh
  instead of BN at level 0) -> Dropout at levels 4..L-2. The middle three are
  one `layers.UpsampleConv2d` (`ihc_jax.kernels.upsample_reflect_conv`).
* the up path of level i < L-1 consumes cat([up_{i+1}, d_i]) (the inner
  block's output first, then its input), the order the official weights
  were trained with.

Channels of d_i are ngf * min(2**i, max_mult) (64, 128, 256, 512, 512, ...).
The input is cat([x, z, edge]) along channels; z is a [B, nz] code tiled over
the image or a [B, H, W, nz] map (IHN's noise).

The U-Net computes in the dtype of x (z and edge are cast to it); IHN and G
cast x to their compute dtype (`dtype` attribute) before calling it.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from ihc_jax.models import layers

# Levels with index >= this (and < num_downs - 1) get dropout after their up
# path: the official builds num_downs - 5 such blocks right outside the
# innermost one.
_FIRST_DROPOUT_LEVEL = 4
MIN_NUM_DOWNS = 5


def level_features(level: int, ngf: int, max_mult: int) -> int:
  """Output channels of the down path at `level` (0 = outermost)."""
  return ngf * min(2**level, max_mult)


class DenseBottleneck(nn.Module):
  """BN -> ReLU -> Conv1x1 (4 growth) -> drop -> BN -> ReLU -> Conv3x3 (growth) -> drop, concat.

  Attributes:
    growth: channels appended to the input.
    dropout_rate: dropout after each conv while training.
  """
  growth: int
  dropout_rate: float

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
    """Returns cat([x, new features]) along channels."""
    out = nn.relu(layers.batch_norm(train, "norm1", x.dtype)(x))
    out = layers.Conv2d(4 * self.growth, 1, use_bias=False, name="conv1")(out)
    out = nn.Dropout(self.dropout_rate, deterministic=not train)(out)
    out = nn.relu(layers.batch_norm(train, "norm2", out.dtype)(out))
    out = layers.Conv2d(self.growth, 3, padding=1, use_bias=False, name="conv2")(out)
    out = nn.Dropout(self.dropout_rate, deterministic=not train)(out)
    return jnp.concatenate([x, out], axis=-1)


class DenseTransition(nn.Module):
  """BN -> ReLU -> Conv1x1 (no bias) -> dropout.

  Attributes:
    features: output channels.
    dropout_rate: dropout rate while training.
  """
  features: int
  dropout_rate: float

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
    """Maps [B, h, w, C_in] to [B, h, w, features]."""
    out = nn.relu(layers.batch_norm(train, "norm", x.dtype)(x))
    out = layers.Conv2d(self.features, 1, use_bias=False, name="conv")(out)
    return nn.Dropout(self.dropout_rate, deterministic=not train)(out)


class UNet(nn.Module):
  """BicycleGAN-style U-Net with input injection (official `G_Unet_add_input`).

  Attributes:
    output_channels: channels of the tanh output.
    input_channels: channels of cat([x, z, edge]) (the official input_nc + nz);
      None takes them from the inputs, otherwise a mismatch is an error.
    num_downs: number of stride-2 levels (>= 5); inputs must be multiples of
      2**num_downs in height and width.
    ngf: channels of the outermost level.
    max_mult: cap of the channel multiplier.
    dense_innermost: DenseNet bottleneck in the innermost level (IHN).
    dense_layers: bottlenecks in that dense block.
    dropout_rate: rate of the Dropout layers (middle levels, dense block).
  """
  output_channels: int
  input_channels: int | None = None
  num_downs: int = 7
  ngf: int = 64
  max_mult: int = 8
  dense_innermost: bool = False
  dense_layers: int = 3
  dropout_rate: float = 0.5

  @nn.compact
  def __call__(self, x: jax.Array, z: jax.Array | None = None,
               edge: jax.Array | None = None, *, train: bool) -> jax.Array:
    """Runs the U-Net.

    Args:
      x: [B, H, W, C] image.
      z: optional [B, nz] code (tiled) or [B, H, W, nz] map.
      edge: optional [B, H, W, 1] edge map, concatenated after z.
      train: batch statistics and dropout when True (needs a "dropout" rng).

    Returns:
      [B, H, W, output_channels] in [-1, 1] (tanh), in x's dtype.
    """
    layers.check_image(x, "U-Net input x")
    if self.num_downs < MIN_NUM_DOWNS:
      raise ValueError(f"num_downs must be >= {MIN_NUM_DOWNS}, got {self.num_downs}")
    b, h, w, _ = x.shape
    step = 2**self.num_downs
    if h % step or w % step:
      raise ValueError(
          f"U-Net with num_downs={self.num_downs} needs height and width that are "
          f"multiples of {step}, got {h}x{w}")
    parts = [x]
    if z is not None:
      if z.ndim == 2:
        z = layers.tile_latent(z, h, w)
      elif z.ndim != 4 or z.shape[:3] != (b, h, w):
        raise ValueError(f"z must be [B, nz] or [B, {h}, {w}, nz], got shape {z.shape}")
      parts.append(z.astype(x.dtype))
    if edge is not None:
      layers.check_image(edge, "edge")
      if edge.shape[:3] != (b, h, w):
        raise ValueError(f"edge shape {edge.shape} does not match x shape {x.shape}")
      parts.append(edge.astype(x.dtype))
    out = jnp.concatenate(parts, axis=-1)
    if self.input_channels is not None and out.shape[-1] != self.input_channels:
      raise ValueError(
          f"U-Net expects {self.input_channels} input channels (x, z, edge together), "
          f"got {out.shape[-1]} from x {x.shape}, z {None if z is None else z.shape}, "
          f"edge {None if edge is None else edge.shape}")

    innermost = self.num_downs - 1
    feats = [level_features(i, self.ngf, self.max_mult) for i in range(self.num_downs)]
    skips = []
    for level in range(self.num_downs):
      if level > 0:
        out = layers.leaky_relu(out)
      out = layers.Conv2d(feats[level], 4, stride=2, padding=1, name=f"down_{level}")(out)
      if 0 < level < innermost:
        out = layers.batch_norm(train, f"down_norm_{level}", out.dtype)(out)
      skips.append(out)

    if self.dense_innermost:
      growth = feats[innermost] // 2
      for j in range(self.dense_layers):
        out = DenseBottleneck(growth, self.dropout_rate, name=f"dense_{j}")(out, train=train)
      out = DenseTransition(feats[innermost], self.dropout_rate,
                            name="transition")(out, train=train)

    for level in range(innermost, -1, -1):
      if level < innermost:
        out = jnp.concatenate([out, skips[level]], axis=-1)
      out = nn.relu(out)
      features = self.output_channels if level == 0 else feats[level - 1]
      out = layers.UpsampleConv2d(features, name=f"up_{level}")(out)
      if level == 0:
        out = jnp.tanh(out)
      else:
        out = layers.batch_norm(train, f"up_norm_{level}", out.dtype)(out)
        if _FIRST_DROPOUT_LEVEL <= level < innermost:
          out = nn.Dropout(self.dropout_rate, deterministic=not train)(out)
    return out
