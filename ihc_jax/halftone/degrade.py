"""Print and scan degradations: Gaussian blur, additive noise, JPEG."""

from __future__ import annotations

import io
import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from ihc_jax.halftone import arrays

Array = jax.Array
ArrayLike = Any


def _gaussian_blur(images: Array, sigma: float) -> Array:
  radius = max(1, int(math.ceil(3.0 * sigma)))
  x = np.arange(-radius, radius + 1, dtype=np.float64)
  taps = np.exp(-0.5 * (x / sigma) ** 2)
  taps = jnp.asarray(taps / taps.sum(), jnp.float32)
  padded = jnp.pad(images, ((0, 0), (radius, radius), (radius, radius), (0, 0)),
                   mode="reflect")
  channels = images.shape[-1]
  kh = jnp.tile(taps[:, None, None, None], (1, 1, 1, channels))
  kw = jnp.tile(taps[None, :, None, None], (1, 1, 1, channels))
  dn = ("NHWC", "HWIO", "NHWC")
  out = jax.lax.conv_general_dilated(padded, kh, (1, 1), "VALID",
                                     dimension_numbers=dn,
                                     feature_group_count=channels)
  return jax.lax.conv_general_dilated(out, kw, (1, 1), "VALID",
                                      dimension_numbers=dn,
                                      feature_group_count=channels)


def _jpeg_host(images: np.ndarray, quality: int) -> np.ndarray:
  from PIL import Image  # pylint: disable=import-outside-toplevel
  images = np.asarray(images)
  out = np.empty(images.shape, np.float32)
  for i, image in enumerate(images):
    pixels = np.clip(np.rint(image * 255.0), 0, 255).astype(np.uint8)
    gray = pixels.shape[-1] == 1
    pil = Image.fromarray(pixels[..., 0] if gray else pixels, "L" if gray else "RGB")
    buffer = io.BytesIO()
    pil.save(buffer, format="JPEG", quality=int(quality))
    buffer.seek(0)
    decoded = np.asarray(Image.open(buffer), np.float32) / 255.0
    out[i] = decoded[..., None] if gray else decoded
  return out


def degrade(images: ArrayLike, key: Array, *, blur_sigma: float = 0.0,
            noise_std: float = 0.0, jpeg_quality: int | None = None) -> Array:
  """Print/scan degradations: Gaussian blur, additive noise, JPEG, in that order.

  All are off by default. Blur is a separable Gaussian (radius ceil(3 sigma),
  reflect padding). Noise is N(0, noise_std^2) per pixel, then the image is
  clipped to [0, 1]. JPEG runs on the host with PIL through
  `jax.pure_callback` (one image at a time, 1 or 3 channels, 8-bit rounding);
  it has no gradient and needs a host round trip on accelerators.

  Args:
    images: [B,H,W,C] float in [0, 1], C in {1, 3} when JPEG is used.
    key: a `jax.random` key for the noise.
    blur_sigma: Gaussian blur sigma in pixels (Python float, 0 = off).
    noise_std: additive Gaussian noise standard deviation (0 = off).
    jpeg_quality: JPEG quality 1..95, or None for no compression.

  Returns:
    [B,H,W,C] float32 in [0, 1].
  """
  images = arrays.check_nhwc(images, "images", None)
  if blur_sigma < 0 or noise_std < 0:
    raise ValueError(
        f"blur_sigma and noise_std must be >= 0; got {blur_sigma}, {noise_std}")
  if blur_sigma > 0:
    images = _gaussian_blur(images, float(blur_sigma))
  if noise_std > 0:
    images = images + noise_std * jax.random.normal(key, images.shape, jnp.float32)
  images = jnp.clip(images, 0.0, 1.0)
  if jpeg_quality is not None:
    if not 1 <= int(jpeg_quality) <= 100:
      raise ValueError(f"jpeg_quality must be in 1..100; got {jpeg_quality}")
    if images.shape[-1] not in (1, 3):
      raise ValueError(f"JPEG needs 1 or 3 channels; got shape {images.shape}")
    images = jax.pure_callback(
        lambda x: _jpeg_host(x, int(jpeg_quality)),
        jax.ShapeDtypeStruct(images.shape, jnp.float32), images,
        vmap_method="sequential")
  return images
