"""Non-learned reference points reported beside the trained networks.

The Gaussian-blur descreening baseline low-passes the halftone (removing the
screen frequency) and undoes the screen's tone scale, so a trained IHN has a
number to beat in every metrics summary.
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

# Local mean of the AM screen with the official tone curve: a white disc
# inscribed in the cell covers at most pi/4 of it (original-code.md §10).
OFFICIAL_TONE_SCALE = math.pi / 4.0


def gaussian_blur(images: jax.Array, *, sigma: float) -> jax.Array:
  """Separable Gaussian blur with reflect padding.

  Args:
    images: [B, H, W, C] float.
    sigma: standard deviation in pixels (> 0).

  Returns:
    [B, H, W, C] float32.
  """
  if sigma <= 0:
    raise ValueError(f"sigma must be > 0, got {sigma}")
  radius = max(1, int(math.ceil(3.0 * sigma)))
  offsets = np.arange(-radius, radius + 1, dtype=np.float64)
  taps = np.exp(-0.5 * (offsets / sigma) ** 2)
  taps = jnp.asarray(taps / taps.sum(), jnp.float32)
  x = jnp.pad(jnp.asarray(images, jnp.float32),
              ((0, 0), (radius, radius), (radius, radius), (0, 0)),
              mode="reflect")
  size = 2 * radius + 1
  # Two 1-D passes as shifted weighted sums (small kernels, any channel count).
  height, width = images.shape[1], images.shape[2]
  x = sum(taps[i] * x[:, i:i + height] for i in range(size))
  return sum(taps[i] * x[:, :, i:i + width] for i in range(size))


def descreen_blur(halftone: jax.Array, *, period: float,
                  tone_curve: str) -> jax.Array:
  """Gaussian-blur descreening: blur at sigma = period / 2, undo tone scale.

  Args:
    halftone: [B, H, W, C] in [0, 1].
    period: screen period in pixels.
    tone_curve: the screen's tone curve; 'official' divides by pi/4.

  Returns:
    [B, H, W, C] in [0, 1].
  """
  blurred = gaussian_blur(halftone, sigma=max(0.5, period / 2.0))
  if tone_curve == "official":
    blurred = blurred / OFFICIAL_TONE_SCALE
  return jnp.clip(blurred, 0.0, 1.0)


def blur_baseline(halftone: jax.Array, halftone_config: Any) -> jax.Array:
  """`descreen_blur` at the mid-range period of `halftone_config`.

  Args:
    halftone: [B, H, W, 1] halftones in [0, 1].
    halftone_config: the stage's `config.halftone`.

  Returns:
    [B, H, W, 1] in [0, 1].
  """
  low, high = halftone_config.period_range
  return descreen_blur(halftone, period=0.5 * (low + high),
                       tone_curve=halftone_config.tone_curve)
