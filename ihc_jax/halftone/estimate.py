"""Screen period and angle of a clustered-dot scan, from its 2-D spectrum."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

ArrayLike = Any


def estimate_screen(image: ArrayLike, *, max_period: float = 12.0
                    ) -> tuple[float, float]:
  """Estimates the period and angle of a clustered-dot screen from the 2-D FFT.

  The dot lattice puts its strongest non-zero-frequency peak at radius 1/p in
  the direction of the screen angle (or that plus 90 degrees). The image is
  Hann-windowed, frequencies below 1/max_period are ignored (image content),
  and the peak position is refined by a parabola through its neighbours.
  Runs on the host with numpy.

  Args:
    image: [H,W], [H,W,C] or [1,H,W,C] array (channels are averaged).
    max_period: longest period considered, in pixels.

  Returns:
    (period in pixels, angle in degrees in [0, 90)).
  """
  image = np.asarray(image, np.float64)
  if image.ndim == 4 and image.shape[0] == 1:
    image = image[0]
  if image.ndim == 3:
    image = image.mean(axis=-1)
  if image.ndim != 2 or min(image.shape) < 16:
    raise ValueError(
        f"estimate_screen needs one image at least 16x16; got shape {np.shape(image)}")
  height, width = image.shape
  window = np.outer(np.hanning(height), np.hanning(width))
  spectrum = np.abs(np.fft.fftshift(np.fft.fft2((image - image.mean()) * window)))
  fy = (np.arange(height) - height // 2) / height
  fx = (np.arange(width) - width // 2) / width
  radius = np.hypot(fy[:, None], fx[None, :])
  spectrum[radius < 1.0 / max_period] = 0.0
  spectrum[:, : width // 2] = 0.0  # conjugate-symmetric half
  iy, ix = np.unravel_index(np.argmax(spectrum), spectrum.shape)

  def refine(values: np.ndarray, i: int) -> float:
    if i == 0 or i == len(values) - 1:
      return 0.0
    left, mid, right = np.log(values[i - 1:i + 2] + 1e-12)
    denom = left - 2 * mid + right
    return 0.0 if denom >= 0 else 0.5 * (left - right) / denom

  peak_y = fy[iy] + refine(spectrum[:, ix], iy) / height
  peak_x = fx[ix] + refine(spectrum[iy, :], ix) / width
  period = 1.0 / math.hypot(peak_y, peak_x)
  angle = math.degrees(math.atan2(peak_y, peak_x)) % 90.0
  return float(period), float(angle)
