"""F: the fusion network, original-code.md §3.7 (DAIN's MultipleBasicBlock_4).

cat([c_forward, c_inverse]) (6 channels) -> Conv7x7 p3 (64, bias) -> ReLU ->
3 x [Conv3x3 -> ReLU -> Conv3x3 (both bias-free), + identity, -> ReLU] ->
Conv3x3 p1 (3, bias). No output activation and no global skip: the output is
unbounded and read on the [0, 1] scale.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from ihc_jax.models import layers
from ihc_jax.models import precision


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
    dtype: compute dtype (parameters stay float32; the output is float32).
  """
  features: int = 64
  num_blocks: int = 3
  output_channels: int = 3
  dtype: Any = jnp.float32

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
    x = jnp.concatenate([c_forward, c_inverse], axis=-1).astype(self.dtype)
    x = nn.relu(layers.Conv2d(self.features, 7, padding=3, name="conv_in")(x))
    for i in range(self.num_blocks):
      x = FusionBlock(self.features, name=f"block_{i}")(x)
    out = layers.Conv2d(self.output_channels, 3, padding=1, name="conv_out")(x)
    return precision.to_float32(out)


def average_init(params: dict) -> dict:
  """F's parameters changed so that F(a, b) = (a + b) / 2 for a, b >= 0
  (`blend_init` with weight 0.5)."""
  return blend_init(params, 0.5)


def blend_init(params: dict, forward_weight: float) -> dict:
  """F's parameters changed so that F(a, b) = w a + (1 - w) b for a, b >= 0.

  F has no global skip (official architecture), so from a random
  initialisation it must first learn to pass its inputs through before it
  can improve on them; on a short run it ends below the better input. This
  start keeps the architecture and changes only the initial values, in the
  spirit of Fixup / zero-initialised residual branches:

  * conv_in: its first 6 output channels copy the 6 input channels (centre
    tap 1, bias 0; ReLU keeps non-negative images unchanged); the other
    channels keep their random values;
  * every block's second conv is zero, so each block is ReLU(x) = x on the
    non-negative features (its first conv keeps its random values; the
    zero conv gets gradient from the first step on);
  * conv_out: w on the copies of a (the IHN->C result) and 1 - w on those
    of b (C->IHN) at the centre tap, 0 elsewhere. With w = 1 F starts at
    its IHN->C input; the copies of b still get gradient through conv_out.

  Args:
    params: F's `params` collection (any width >= 6 features).
    forward_weight: w, in [0, 1].

  Returns:
    A new params dict of the same structure, shapes and dtypes.
  """
  if not 0.0 <= forward_weight <= 1.0:
    raise ValueError(f"forward_weight must be in [0, 1], got {forward_weight}")
  params = jax.tree.map(lambda x: x, dict(params))
  kernel_in = params["conv_in"]["kernel"]
  size, _, in_ch, features = kernel_in.shape
  if features < in_ch:
    raise ValueError(f"blend_init needs >= {in_ch} features, got {features}")
  c = size // 2
  eye = jnp.zeros((size, size, in_ch, in_ch), kernel_in.dtype)
  eye = eye.at[c, c].set(jnp.eye(in_ch, dtype=kernel_in.dtype))
  params["conv_in"] = dict(
      kernel=kernel_in.at[..., :in_ch].set(eye),
      bias=params["conv_in"]["bias"].at[:in_ch].set(0.0))
  for name, block in params.items():
    if name.startswith("block_"):
      params[name] = dict(block,
                          conv2={"kernel": jnp.zeros_like(block["conv2"]["kernel"])})
  kernel_out = params["conv_out"]["kernel"]
  out_ch = kernel_out.shape[-1]
  c = kernel_out.shape[0] // 2
  centre = jnp.zeros(kernel_out.shape[2:], kernel_out.dtype)
  eye = jnp.eye(out_ch, dtype=kernel_out.dtype)
  centre = centre.at[:out_ch].set(forward_weight * eye).at[
      out_ch:2 * out_ch].set((1.0 - forward_weight) * eye)
  params["conv_out"] = dict(
      kernel=jnp.zeros_like(kernel_out).at[c, c].set(centre),
      bias=jnp.zeros_like(params["conv_out"]["bias"]))
  return params
