"""Inputs of the colorization pipeline: halftone batches, resizing, the
reference crop of the colour encoder, and the screen period of a scan.

Images are float32 on the [0, 1] scale, channels last.
"""

from __future__ import annotations

import logging

import numpy as np
from PIL import Image

logger = logging.getLogger(__name__)

# Smallest side of a halftone the pipeline accepts, in px.
MIN_SIDE = 16


def resize(image: np.ndarray, height: int, width: int) -> np.ndarray:
  """Antialiased bilinear resize of float [H, W, C] (Pillow, per channel)."""
  image = np.asarray(image, np.float32)
  if image.shape[:2] == (height, width):
    return image
  channels = [
      np.asarray(Image.fromarray(np.ascontiguousarray(image[..., c]), "F")
                 .resize((width, height), Image.Resampling.BILINEAR))
      for c in range(image.shape[-1])]
  return np.stack(channels, axis=-1)


def prepare_reference(reference: np.ndarray, size: int) -> np.ndarray:
  """Shorter side to `size` (bilinear), then centre crop to size x size.

  The official loader does the same (Resize(256) + CenterCrop(256)).

  Args:
    reference: [H, W, 3] float RGB in [0, 1].
    size: E's input size.

  Returns:
    [size, size, 3] float32.
  """
  reference = np.asarray(reference, np.float32)
  if reference.ndim != 3 or reference.shape[-1] != 3:
    raise ValueError(f"reference must be [H, W, 3] RGB, got shape "
                     f"{reference.shape}")
  h, w = reference.shape[:2]
  scale = size / min(h, w)
  nh, nw = max(size, round(h * scale)), max(size, round(w * scale))
  resized = resize(reference, nh, nw)
  top, left = (nh - size) // 2, (nw - size) // 2
  return resized[top:top + size, left:left + size]


def estimate_period(halftone: np.ndarray, *, crop: int = 1024) -> float:
  """Screen period (px) of halftones [B, H, W, 1] from a central crop.

  Uses `ihc_jax.halftone.estimate_screen` on at most `crop` x `crop` px from
  the centre of each image (the period is the same everywhere on a print,
  and a crop keeps the FFT cheap on big scans) and returns the median.
  """
  from ihc_jax import halftone as halftone_lib  # pylint: disable=g-import-not-at-top
  periods = []
  for image in np.asarray(halftone):
    h, w = image.shape[:2]
    top, left = max(0, (h - crop) // 2), max(0, (w - crop) // 2)
    period, angle = halftone_lib.estimate_screen(
        image[top:top + crop, left:left + crop, 0])
    logger.info("estimated screen: period %.2f px, angle %.1f deg", period,
                angle)
    periods.append(period)
  return float(np.median(periods))


def halftone_batch(halftone: np.ndarray) -> np.ndarray:
  """[H, W] or [B, H, W, 1] float -> [B, H, W, 1] float32, checked.

  Raises:
    ValueError: wrong shape, smaller than `MIN_SIDE` px, or not finite.
  """
  halftone = np.asarray(halftone, np.float32)
  if halftone.ndim == 2:
    halftone = halftone[None, ..., None]
  if halftone.ndim != 4 or halftone.shape[-1] != 1:
    raise ValueError(f"halftone must be [H, W] or [B, H, W, 1], got shape "
                     f"{halftone.shape}")
  if min(halftone.shape[1:3]) < MIN_SIDE:
    raise ValueError(f"halftone is {halftone.shape[2]}x{halftone.shape[1]} "
                     f"px; the minimum is {MIN_SIDE}x{MIN_SIDE}")
  if not np.all(np.isfinite(halftone)):
    raise ValueError("halftone contains NaN or inf")
  return halftone


def reference_batch(reference: np.ndarray, batch: int) -> np.ndarray:
  """[H, W, 3] or [1 or batch, H, W, 3] -> [1 or batch, H, W, 3] float32."""
  reference = np.asarray(reference, np.float32)
  if reference.ndim == 3:
    reference = reference[None]
  if reference.ndim != 4 or reference.shape[0] not in (1, batch):
    raise ValueError(f"reference must be [H, W, 3] or [{batch}, H, W, 3], "
                     f"got shape {reference.shape}")
  return reference


def rescale_scan(halftone: np.ndarray, scale: float) -> np.ndarray:
  """Halftones [B, H, W, 1] resized by `scale` (at least `MIN_SIDE` px)."""
  if scale == 1.0:
    return halftone
  _, height, width, _ = halftone.shape
  new_h = max(MIN_SIDE, round(height * scale))
  new_w = max(MIN_SIDE, round(width * scale))
  logger.info("rescaling the scan by %.3f to %dx%d px to match the "
              "trained screen period", scale, new_w, new_h)
  return np.stack([resize(h, new_h, new_w) for h in halftone])
