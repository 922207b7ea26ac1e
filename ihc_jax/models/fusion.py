"""F: the fusion network, original-code.md §3.7 (DAIN's MultipleBasicBlock_4).

cat([c_forward, c_inverse]) (6 channels) -> Conv7x7 p3 (64, bias) -> ReLU ->
3 x [Conv3x3 -> ReLU -> Conv3x3 (both bias-free), + identity, -> ReLU] ->
Conv3x3 p1 (3, bias). No output activation and no global skip: the output is
unbounded and read on the [0, 1] scale.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from ihc_jax.models import layers


class FusionBlock(nn.Module):
  """ResNet basic block without normalisation.

  Attributes:
    features: channels.
  """
  features: int

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    """Returns relu(x + conv(relu(conv(x))))."""
    out = layers.Conv2d(self.features, 3, padding=1, use_bias=False, name="conv1")(x)
    out = layers.Conv2d(self.features, 3, padding=1, use_bias=False, name="conv2")(nn.relu(out))
    return nn.relu(out + x)


class FusionNet(nn.Module):
  """Fuses the forward (IHN -> G) and inverse (G -> IHN) colour results.

  Attributes:
    features: intermediate width (64).
    num_blocks: basic blocks (3).
    output_channels: 3.
  """
  features: int = 64
  num_blocks: int = 3
  output_channels: int = 3

  @nn.compact
  def __call__(self, c_forward: jax.Array, c_inverse: jax.Array) -> jax.Array:
    """Fuses two colour estimates.

    Args:
      c_forward: [B, H, W, 3] colour result of the IHN -> G path.
      c_inverse: [B, H, W, 3] colour result of the G -> IHN path.

    Returns:
      [B, H, W, output_channels] float32, unbounded ([0, 1] scale).
    """
    layers.check_image(c_forward, "c_forward", channels=3)
    layers.check_image(c_inverse, "c_inverse", channels=3)
    if c_forward.shape != c_inverse.shape:
      raise ValueError(
          f"c_forward {c_forward.shape} and c_inverse {c_inverse.shape} differ in shape")
    x = jnp.concatenate([c_forward, c_inverse], axis=-1)
    x = nn.relu(layers.Conv2d(self.features, 7, padding=3, name="conv_in")(x))
    for i in range(self.num_blocks):
      x = FusionBlock(self.features, name=f"block_{i}")(x)
    return layers.Conv2d(self.output_channels, 3, padding=1, name="conv_out")(x)
