"""Colour augmentations that keep a photograph plausible, on the device.

A few photographs teach a colouriser their palette, not how to read colour
from a code: the same gray structure always comes with the same colours.
`color_jitter` gives each training image a random per-channel gain (white
balance), a hue rotation and a saturation scale, so that one structure is
seen in several plausible colourings and only the colour code can tell
them apart. The hue rotates the chroma plane of YIQ, whose Y is the
ITU-R 601 luma (`ihc_jax.colorspace.rgb_to_gray`), so hue and saturation
leave the luma unchanged; the gains change it a little. Results are clipped
to [0, 1].

Pure JAX (jit, vmap and grad go through); the train steps draw it from
their step key, so a resumed run repeats the same images.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections

# RGB -> YIQ (FCC NTSC); its first row is the ITU-R 601 luma.
_RGB_TO_YIQ = jnp.array([[0.299, 0.587, 0.114],
                         [0.595716, -0.274453, -0.321263],
                         [0.211456, -0.522591, 0.311135]], jnp.float32)
_YIQ_TO_RGB = jnp.linalg.inv(_RGB_TO_YIQ)


def default_config() -> ml_collections.ConfigDict:
  """Off: every range 0 (the paper trains without colour augmentation).

  Fields:
    gain: per-channel gain drawn from [1 - gain, 1 + gain].
    hue_degrees: hue rotation drawn from [-hue_degrees, hue_degrees].
    saturation: chroma scale drawn from [1 - saturation, 1 + saturation].
  """
  return ml_collections.ConfigDict(dict(gain=0.0, hue_degrees=0.0,
                                        saturation=0.0))


def is_active(config: ml_collections.ConfigDict) -> bool:
  return any(float(config[k]) > 0 for k in ("gain", "hue_degrees",
                                            "saturation"))


def check(config: ml_collections.ConfigDict) -> None:
  """Raises ValueError for a negative range, a gain or saturation >= 1,
  or a hue range over 180 degrees."""
  for key in ("gain", "hue_degrees", "saturation"):
    if float(config[key]) < 0:
      raise ValueError(f"augment.{key} must be >= 0, got {config[key]}")
  for key in ("gain", "saturation"):
    if float(config[key]) >= 1:
      raise ValueError(f"augment.{key} must be < 1 (a scale range "
                       f"[1 - x, 1 + x] above 0), got {config[key]}")
  if float(config.hue_degrees) > 180:
    raise ValueError(
        f"augment.hue_degrees must be <= 180, got {config.hue_degrees}")


def color_jitter(key: jax.Array, images: jax.Array, *, gain: float = 0.0,
                 hue_degrees: float = 0.0, saturation: float = 0.0
                 ) -> jax.Array:
  """Each image with its own random gain, hue rotation and saturation.

  Args:
    key: PRNG key.
    images: [B, H, W, 3] RGB in [0, 1].
    gain: per-channel gains uniform in [1 - gain, 1 + gain].
    hue_degrees: hue rotation uniform in [-hue_degrees, hue_degrees].
    saturation: chroma scale uniform in [1 - saturation, 1 + saturation].

  Returns:
    [B, H, W, 3] float32 in [0, 1]; `images` itself (as float32) when every
    range is 0.
  """
  images = jnp.asarray(images, jnp.float32)
  if images.ndim != 4 or images.shape[-1] != 3:
    raise ValueError(f"images must be [B,H,W,3], got {images.shape}")
  if not (gain or hue_degrees or saturation):
    return images
  b = images.shape[0]
  k_gain, k_hue, k_sat = jax.random.split(key, 3)
  gains = jax.random.uniform(k_gain, (b, 1, 1, 3), minval=1 - gain,
                             maxval=1 + gain)
  angle = jnp.deg2rad(jax.random.uniform(k_hue, (b,), minval=-hue_degrees,
                                         maxval=hue_degrees))
  scale = jax.random.uniform(k_sat, (b,), minval=1 - saturation,
                             maxval=1 + saturation)
  cos, sin = jnp.cos(angle) * scale, jnp.sin(angle) * scale
  one, zero = jnp.ones_like(cos), jnp.zeros_like(cos)
  # Per image: YIQ, rotate and scale the (I, Q) plane, back to RGB.
  chroma = jnp.stack([jnp.stack([one, zero, zero], -1),
                      jnp.stack([zero, cos, -sin], -1),
                      jnp.stack([zero, sin, cos], -1)], -2)  # [B, 3, 3]
  transform = jnp.einsum("ij,bjk,kl->bil", _YIQ_TO_RGB, chroma, _RGB_TO_YIQ)
  out = jnp.einsum("bhwc,bdc->bhwd", images * gains, transform)
  return jnp.clip(out, 0.0, 1.0)


def jitter_from_config(key: jax.Array, images: jax.Array,
                       config: ml_collections.ConfigDict) -> jax.Array:
  """`color_jitter` with the ranges of an `augment` config section."""
  return color_jitter(key, images, gain=float(config.gain),
                      hue_degrees=float(config.hue_degrees),
                      saturation=float(config.saturation))
