"""Clustered-dot (AM) screens: round dots on a rotated square lattice.

The screen geometry and the tone curves are described in `ihc_jax.halftone`.
"""

from __future__ import annotations

import functools
import math
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from ihc_jax.halftone import arrays

Array = jax.Array
ArrayLike = Any

TONE_CURVES = ("linear", "official")
DOTS = ("white", "black")
# Classic screen-angle offsets (degrees) for three separations.
DEFAULT_COLOR_ANGLES = (15.0, 75.0, 0.0)


def _clipped_disc_area(radius: Any, xp: Any) -> Any:
  """Area of the disc of `radius` centred in the unit square, clipped to it."""
  r = xp.maximum(radius, 0.0)
  disc = xp.pi * r * r
  # Above r = 1/2 the disc sticks out of the four sides; subtract the four
  # circular segments beyond the lines at distance 1/2 from the centre.
  r_out = xp.maximum(r, 0.5)
  half_chord = xp.sqrt(xp.maximum(r_out * r_out - 0.25, 0.0))
  segment = r_out * r_out * xp.arccos(0.5 / r_out) - 0.5 * half_chord
  area = xp.where(r <= 0.5, disc, disc - 4.0 * segment)
  return xp.where(r >= math.sqrt(0.5), 1.0, area)


def disc_in_square_area(radius: ArrayLike) -> Array:
  """Area of a disc of `radius` centred in the unit square, clipped to it.

  This is the white fraction of a cell under the "linear" tone curve.

  Args:
    radius: disc radius in cell units (the square has side 1).

  Returns:
    The covered fraction of the square, float32 in [0, 1].
  """
  return _clipped_disc_area(jnp.asarray(radius, jnp.float32), jnp)


@functools.lru_cache(maxsize=None)
def _linear_radius2_table(points: int = 4097) -> np.ndarray:
  """Squared radius of the clipped disc of area k/(points-1), k = 0..points-1."""
  target = np.linspace(0.0, 1.0, points)
  low, high = np.zeros(points), np.full(points, math.sqrt(0.5))
  for _ in range(60):  # bisection to float64 precision; the area is monotone
    mid = 0.5 * (low + high)
    below = _clipped_disc_area(mid, np) < target
    low, high = np.where(below, mid, low), np.where(below, high, mid)
  return (high * high).astype(np.float32)


def _dot_radius2(tone: Array, tone_curve: str) -> Array:
  """Squared dot radius (cell units) whose white area gives `tone`'s mean."""
  if tone_curve == "official":
    return 0.25 * tone  # inscribed disc of diameter sqrt(g): pi/4 g
  # Linear: invert the clipped-disc area once per pixel (not per sub-sample,
  # 16x the work) by linear interpolation in a table uniform in area, so the
  # area error is below the 1/4096 table step.
  table = _linear_radius2_table()
  position = tone * (table.shape[0] - 1)
  index = jnp.clip(jnp.floor(position).astype(jnp.int32), 0, table.shape[0] - 2)
  frac = position - index
  table = jnp.asarray(table)
  return table[index] + frac * (table[index + 1] - table[index])


@functools.partial(jax.jit, static_argnames=("supersample", "tone_curve"))
def _am_coverage(tone: Array, period: Array, angle: Array, *,
                 supersample: int, tone_curve: str) -> Array:
  """White fraction of every pixel; tone [B,H,W,C], period/angle [B,1,1,C]."""
  _, height, width, _ = tone.shape
  s = supersample
  theta = jnp.deg2rad(angle)
  cos, sin = jnp.cos(theta) / period, jnp.sin(theta) / period  # [B,1,1,C]
  ys = jnp.arange(height, dtype=jnp.float32)[None, :, None, None]
  xs = jnp.arange(width, dtype=jnp.float32)[None, None, :, None]
  # Screen coordinates of the pixel centres; sub-pixel samples add a constant.
  u_centre = xs * cos + ys * sin
  v_centre = ys * cos - xs * sin
  radius2 = _dot_radius2(tone, tone_curve)
  # One [B,H,W,C] term per sub-pixel sample, unrolled: XLA fuses the s^2 terms
  # into one vectorised loop, about 10x faster than a [..., s, s] reduction.
  count = jnp.zeros(tone.shape, jnp.float32)
  for row in range(s):
    oy = (row + 0.5) / s - 0.5
    for col in range(s):
      ox = (col + 0.5) / s - 0.5
      u = u_centre + (ox * cos + oy * sin)
      v = v_centre + (oy * cos - ox * sin)
      du = u - jnp.floor(u) - 0.5
      dv = v - jnp.floor(v) - 0.5
      count = count + (du * du + dv * dv < radius2).astype(jnp.float32)
  coverage = count / (s * s)
  if tone_curve == "linear":  # g = 1 is all white, cell corners included
    coverage = jnp.where(tone >= 1.0, 1.0, coverage)
  return coverage


def am_screen(gray: ArrayLike, *, period: ArrayLike = 3.0,
              angle: ArrayLike = 45.0, supersample: int = 4,
              binary: bool = False, dot: str = "white",
              tone_curve: str = "official") -> Array:
  """Analog clustered-dot (AM) halftone with round dots on a rotated grid.

  Args:
    gray: [B,H,W,C] float in [0, 1] (usually C = 1; every channel is screened
      with the same or its own angle, see `angle`).
    period: screen period in pixels, > 0; a scalar, [B] or [B,C].
    angle: screen angle in degrees (the grid is square, so angles are modulo
      90); a scalar, [B], [C] or [B,C] (a 1-D array is read as [B] when
      B == C; pass [B,C] to be explicit).
    supersample: sub-pixel grid size s for antialiasing (s x s samples).
    binary: if True, decide at the pixel centre only and return exactly {0, 1}.
    dot: "white" (white dots on black, as in the official data) or "black".
    tone_curve: "official" (mean = pi/4 g) or "linear" (mean = g); see the
      module docstring.

  Returns:
    [B,H,W,C] float32 in [0, 1].
  """
  gray = arrays.check_nhwc(gray, "gray", None)
  if tone_curve not in TONE_CURVES:
    raise ValueError(f"tone_curve must be one of {TONE_CURVES}; got {tone_curve!r}")
  if dot not in DOTS:
    raise ValueError(f"dot must be one of {DOTS}; got {dot!r}")
  if int(supersample) != supersample or supersample < 1:
    raise ValueError(f"supersample must be a positive integer; got {supersample}")
  if isinstance(period, (int, float)) and not period > 0:
    raise ValueError(f"period must be > 0 pixels; got {period}")
  batch, _, _, channels = gray.shape
  period = arrays.per_sample(period, batch, channels, "period")
  angle = arrays.per_sample(angle, batch, channels, "angle")
  tone = jnp.clip(gray, 0.0, 1.0)
  if dot == "black":
    tone = 1.0 - tone
  coverage = _am_coverage(tone, period, angle,
                          supersample=1 if binary else int(supersample),
                          tone_curve=tone_curve)
  return 1.0 - coverage if dot == "black" else coverage


def am_screen_color(rgb: ArrayLike, *, period: ArrayLike = 3.0,
                    angles: ArrayLike = DEFAULT_COLOR_ANGLES,
                    **kwargs: Any) -> Array:
  """Per-channel AM halftone of an RGB image, one screen angle per channel.

  Args:
    rgb: [B,H,W,3] float in [0, 1].
    period: screen period in pixels; a scalar, [B] or [B,3].
    angles: screen angles in degrees, [3] (shared) or [B,3]; distinct angles
      keep the three dot lattices from beating into a coarse moire.
    **kwargs: `supersample`, `binary`, `dot`, `tone_curve` as in `am_screen`.

  Returns:
    [B,H,W,3] float32 in [0, 1].
  """
  rgb = arrays.check_nhwc(rgb, "rgb", 3)
  angles = jnp.asarray(angles, jnp.float32)
  if angles.shape not in ((3,), (rgb.shape[0], 3)):
    raise ValueError(f"angles must have shape [3] or [batch, 3]; got {angles.shape}")
  # Explicit [B, 3], so that a batch of 3 does not read [3] as per-sample.
  angles = jnp.broadcast_to(angles, (rgb.shape[0], 3))
  return am_screen(rgb, period=period, angle=angles, **kwargs)


def random_screen_params(key: Array, batch: int, *,
                         period_range: Sequence[float] = (2.5, 4.0),
                         angle_range: Sequence[float] = (0.0, 90.0)
                         ) -> tuple[Array, Array]:
  """Draws per-sample screen periods and angles uniformly from ranges.

  Args:
    key: a `jax.random` key.
    batch: number of samples.
    period_range: (low, high) period in pixels; low == high gives a fixed one.
    angle_range: (low, high) angle in degrees.

  Returns:
    (period [B], angle [B]) float32.
  """
  for name, (low, high) in (("period_range", period_range),
                            ("angle_range", angle_range)):
    if low > high:
      raise ValueError(f"{name} must be (low, high) with low <= high; got {(low, high)}")
  if period_range[0] <= 0:
    raise ValueError(f"period_range must be positive; got {tuple(period_range)}")
  period_key, angle_key = jax.random.split(key)
  period = jax.random.uniform(period_key, (batch,), jnp.float32,
                              period_range[0], period_range[1])
  angle = jax.random.uniform(angle_key, (batch,), jnp.float32,
                             angle_range[0], angle_range[1])
  return period, angle
