"""The IHN noise map, original-code.md §3.3.

The official test script draws randn(B, 8, H, W) and filters it with a 3x3
conv (zero padding 1, no bias) whose (8, 8, 3, 3) weight holds the
un-normalised kernel [[1,2,1],[2,4,2],[1,2,1]] in *every* (out, in) slot. Each
output channel is therefore the filtered sum of all eight input channels: the
eight channels are identical, with interior standard deviation
sqrt(8 * 36) ~ 17 (36 = sum of squared taps), lower on the one-pixel border.
The IHN weights were trained with this input, so "official" is the default;
"clean" is the evident intent (independent channels, kernel normalised to sum
1), for training new models.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

VARIANTS = ("official", "clean")
_KERNEL = ((1.0, 2.0, 1.0), (2.0, 4.0, 2.0), (1.0, 2.0, 1.0))


def filter_noise(raw: jax.Array, *, variant: str = "official") -> jax.Array:
  """Smooths raw Gaussian noise into a noise map.

  Args:
    raw: [B, H, W, C] float noise (standard normal).
    variant: "official" (cross-channel sum, un-normalised kernel: C identical
      channels) or "clean" (per-channel, kernel / 16).

  Returns:
    [B, H, W, C] float32 noise map.
  """
  if variant not in VARIANTS:
    raise ValueError(f"unknown noise variant {variant!r}; expected one of {VARIANTS}")
  if raw.ndim != 4:
    raise ValueError(f"raw noise must be [B, H, W, C], got shape {raw.shape}")
  raw = jnp.asarray(raw, jnp.float32)
  channels = raw.shape[-1]
  kernel = jnp.asarray(_KERNEL, jnp.float32)
  if variant == "official":
    summed = jnp.sum(raw, axis=-1, keepdims=True)
    filtered = _conv3x3(summed, kernel[:, :, None, None], groups=1)
    return jnp.broadcast_to(filtered, raw.shape)
  depthwise = jnp.broadcast_to((kernel / 16.0)[:, :, None, None], (3, 3, 1, channels))
  return _conv3x3(raw, depthwise, groups=channels)


def _conv3x3(x: jax.Array, kernel: jax.Array, groups: int) -> jax.Array:
  return jax.lax.conv_general_dilated(
      x, kernel, (1, 1), ((1, 1), (1, 1)),
      dimension_numbers=("NHWC", "HWIO", "NHWC"), feature_group_count=groups)


def make_noise_map(key: jax.Array, batch: int, height: int, width: int, *,
                   channels: int = 8, variant: str = "official") -> jax.Array:
  """Draws the IHN noise map.

  Args:
    key: `jax.random` key.
    batch: batch size B.
    height: H.
    width: W.
    channels: noise channels (the IHN's nz, 8).
    variant: "official" or "clean" (see `filter_noise`).

  Returns:
    [B, H, W, channels] float32.
  """
  if min(batch, height, width, channels) < 1:
    raise ValueError(
        f"noise map sizes must be positive, got batch={batch}, height={height}, "
        f"width={width}, channels={channels}")
  raw = jax.random.normal(key, (batch, height, width, channels), jnp.float32)
  return filter_noise(raw, variant=variant)
