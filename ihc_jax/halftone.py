"""Halftone synthesis in pure JAX: AM screens, ordered dither, error diffusion.

Every function takes NHWC float32 images in [0, 1] and returns NHWC float32
images in [0, 1], jits, and vmaps, so a trainer can draw a fresh halftone of
every image at every step. The paper's input is an analog clustered-dot (AM)
screen; the released sample inputs (reference/original-code.md §10) show white
round dots inscribed in square cells of 3.0 px pitch, a per-image screen
angle, antialiased values and a local mean that never exceeds about pi/4.

Screen geometry. A pixel centre (x, y) (x to the right, y down, in pixels) is
mapped to screen coordinates u = (x cos a + y sin a) / p and
v = (-x sin a + y cos a) / p, with p the period in pixels and a the angle in
degrees. Each unit cell of (u, v) holds one dot centred in the cell. A
sub-pixel sample is white when its threshold, a function of its distance to
the cell centre, is below the tone of the pixel it lies in (digital AM
screening with a round spot function). Antialiasing averages the decision over
an s x s sub-pixel grid.

Tone curves (the mean of a flat patch of gray value g):

* ``"linear"``: mean = g. The white area grows as a disc up to the inscribed
  circle (g = pi/4) and then as the disc clipped to the cell, until the whole
  cell is white at g = 1.
* ``"official"``: mean = (pi/4) g. A white disc inscribed in the cell with area
  proportional to g (diameter p sqrt(g)), as in the released sample inputs.

With ``dot="black"`` the roles swap: black dots on white paper, a flat patch
of gray g has mean 1 - curve(1 - g).
"""

from __future__ import annotations

import functools
import io
import math
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

Array = jax.Array
ArrayLike = Any

TONE_CURVES = ("linear", "official")
DOTS = ("white", "black")
METHODS = ("am", "bayer", "error_diffusion")
# Weights as (row offset, column offset, numerator); the column offset is in
# the processing direction (mirrored on right-to-left rows in serpentine mode).
DIFFUSION_KERNELS = {
    "floyd_steinberg": (16, ((0, 1, 7), (1, -1, 3), (1, 0, 5), (1, 1, 1))),
    "jarvis": (48, ((0, 1, 7), (0, 2, 5),
                    (1, -2, 3), (1, -1, 5), (1, 0, 7), (1, 1, 5), (1, 2, 3),
                    (2, -2, 1), (2, -1, 3), (2, 0, 5), (2, 1, 3), (2, 2, 1))),
}
# Classic screen-angle offsets (degrees) for three separations.
DEFAULT_COLOR_ANGLES = (15.0, 75.0, 0.0)


def _check_nhwc(images: ArrayLike, name: str, channels: int | None) -> Array:
  images = jnp.asarray(images)
  if images.ndim != 4:
    raise ValueError(f"{name} must be NHWC [B,H,W,C]; got shape {images.shape}")
  if channels is not None and images.shape[-1] != channels:
    raise ValueError(
        f"{name} must have {channels} channel(s); got shape {images.shape}")
  if not jnp.issubdtype(images.dtype, jnp.floating):
    raise ValueError(
        f"{name} must be floating point in [0, 1]; got dtype {images.dtype}")
  return images.astype(jnp.float32)


def _per_sample(value: ArrayLike, batch: int, channels: int, name: str) -> Array:
  """Broadcasts a scalar, [B], [C] or [B, C] value to [B, 1, 1, C]."""
  value = jnp.asarray(value, jnp.float32)
  if value.ndim == 0:
    return jnp.broadcast_to(value, (batch, 1, 1, channels))
  if value.ndim == 1 and value.shape[0] == batch:
    return jnp.broadcast_to(value[:, None, None, None], (batch, 1, 1, channels))
  if value.ndim == 1 and value.shape[0] == channels:
    return jnp.broadcast_to(value[None, None, None, :], (batch, 1, 1, channels))
  if value.shape == (batch, channels):
    return value[:, None, None, :]
  raise ValueError(
      f"{name} must be a scalar, [batch={batch}], [channels={channels}] or "
      f"[batch, channels]; got shape {value.shape}")


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
  gray = _check_nhwc(gray, "gray", None)
  if tone_curve not in TONE_CURVES:
    raise ValueError(f"tone_curve must be one of {TONE_CURVES}; got {tone_curve!r}")
  if dot not in DOTS:
    raise ValueError(f"dot must be one of {DOTS}; got {dot!r}")
  if int(supersample) != supersample or supersample < 1:
    raise ValueError(f"supersample must be a positive integer; got {supersample}")
  if isinstance(period, (int, float)) and not period > 0:
    raise ValueError(f"period must be > 0 pixels; got {period}")
  batch, _, _, channels = gray.shape
  period = _per_sample(period, batch, channels, "period")
  angle = _per_sample(angle, batch, channels, "angle")
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
  rgb = _check_nhwc(rgb, "rgb", 3)
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


def bayer_matrix(size: int) -> np.ndarray:
  """The Bayer index matrix of side `size` (2, 4 or 8), values 0..size^2-1."""
  if size not in (2, 4, 8):
    raise ValueError(f"Bayer matrix size must be 2, 4 or 8; got {size}")
  matrix = np.zeros((1, 1), np.int32)
  while matrix.shape[0] < size:
    matrix = np.block([[4 * matrix, 4 * matrix + 2],
                       [4 * matrix + 3, 4 * matrix + 1]])
  return matrix


def ordered_dither(gray: ArrayLike, *, size: int = 8) -> Array:
  """Ordered dither with a Bayer matrix; a pixel is white if g > (M + 1/2)/n^2.

  A flat patch of gray k/n^2 thus turns exactly k pixels of every n x n tile
  white.

  Args:
    gray: [B,H,W,C] float in [0, 1].
    size: Bayer matrix side n, 2, 4 or 8.

  Returns:
    [B,H,W,C] float32 in {0, 1}.
  """
  gray = _check_nhwc(gray, "gray", None)
  _, height, width, _ = gray.shape
  threshold = (bayer_matrix(size).astype(np.float32) + 0.5) / (size * size)
  reps = (-(-height // size), -(-width // size))
  threshold = np.tile(threshold, reps)[:height, :width]
  return (gray > jnp.asarray(threshold)[None, :, :, None]).astype(jnp.float32)


def _shift_right(row: Array, k: int) -> Array:
  """row[..., x - k] along the last axis, zeros shifted in (k may be < 0)."""
  if k == 0:
    return row
  if abs(k) >= row.shape[-1]:
    return jnp.zeros_like(row)
  zeros = jnp.zeros(row.shape[:-1] + (abs(k),), row.dtype)
  if k > 0:
    return jnp.concatenate([zeros, row[..., :-k]], axis=-1)
  return jnp.concatenate([row[..., -k:], zeros], axis=-1)


def error_diffusion(gray: ArrayLike, *, kernel: str = "floyd_steinberg",
                    serpentine: bool = False) -> Array:
  """Error-diffusion halftone (Floyd-Steinberg or Jarvis-Judice-Ninke).

  Pixels are visited row by row (right to left on odd rows when `serpentine`,
  with the kernel mirrored); a pixel becomes 1 when its value plus diffused
  error is >= 0.5, and the error (value - output) is spread to the unvisited
  neighbours with the kernel weights; error that would leave the image is
  dropped. All arithmetic is float32 and every pixel receives its error terms
  in visiting order, so the result is bit-identical to the straightforward
  per-pixel loop (see tests/test_halftone.py). Rows are a `lax.scan`, the
  pixels of a row an inner `lax.scan` over the batch in parallel; the error
  sent to later rows is added with whole-row vector operations.

  Args:
    gray: [B,H,W,C] float in [0, 1]; channels are halftoned independently.
    kernel: "floyd_steinberg" or "jarvis".
    serpentine: alternate the scan direction from row to row.

  Returns:
    [B,H,W,C] float32 in {0, 1}.
  """
  gray = _check_nhwc(gray, "gray", None)
  if kernel not in DIFFUSION_KERNELS:
    raise ValueError(
        f"kernel must be one of {tuple(DIFFUSION_KERNELS)}; got {kernel!r}")
  return _error_diffusion(gray, kernel=kernel, serpentine=bool(serpentine))


@functools.partial(jax.jit, static_argnames=("kernel", "serpentine"))
def _error_diffusion(gray: Array, *, kernel: str, serpentine: bool) -> Array:
  """`error_diffusion` on validated float32 NHWC input."""
  denominator, taps = DIFFUSION_KERNELS[kernel]
  weights = {(dy, dx): np.float32(n) / np.float32(denominator)
             for dy, dx, n in taps}
  depth = max(dy for dy, _, _ in taps)  # rows below that receive error
  reach = max(dx for dy, dx, _ in taps if dy == 0)  # pixels ahead in the row
  batch, height, width, channels = gray.shape
  # Rows first, then columns, then the flattened batch x channel axis.
  rows = jnp.transpose(gray, (1, 2, 0, 3)).reshape(height, width, -1)
  rows = jnp.transpose(rows, (0, 2, 1))  # [H, N, W]
  n = rows.shape[1]

  def pixel_step(pending, value):
    # pending[k] is the error of the pixel k + 1 places back.
    total = value
    for k in range(reach, 0, -1):  # the oldest error arrived first
      total = total + pending[k - 1] * weights[(0, k)]
    out = jnp.where(total >= 0.5, jnp.float32(1.0), jnp.float32(0.0))
    error = total - out
    pending = (error,) + pending[:-1]
    return pending, (out, error)

  def row_step(carry, row_index):
    buffers = carry  # [depth, N, W]: image + error already sent to next rows
    current = buffers[0]
    if serpentine:
      reverse = row_index % 2 == 1
      flip = lambda x: jnp.where(reverse, x[..., ::-1], x)
    else:
      flip = lambda x: x
    current = flip(current)
    init = tuple(jnp.zeros((n,), jnp.float32) for _ in range(reach))
    _, (out, error) = jax.lax.scan(pixel_step, init, current.T)
    out, error = out.T, error.T  # [N, W] in visiting order
    nxt = []
    for dy in range(1, depth + 1):
      target = flip(buffers[dy]) if dy < depth else flip(
          rows[jnp.minimum(row_index + depth, height - 1)])
      # Sources from left to right in visiting order: a source at x - k sends
      # its error to x with tap (dy, k); the leftmost source comes first.
      for k in sorted({dx for ddy, dx, _ in taps if ddy == dy}, reverse=True):
        target = target + _shift_right(error, k) * weights[(dy, k)]
      nxt.append(flip(target))
    return jnp.stack(nxt), flip(out)

  init_rows = jnp.stack(
      [rows[min(i, height - 1)] for i in range(depth)])  # [depth, N, W]
  _, out = jax.lax.scan(row_step, init_rows, jnp.arange(height))
  out = jnp.transpose(out, (0, 2, 1)).reshape(height, width, batch, channels)
  return jnp.transpose(out, (2, 0, 1, 3))


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
  images = _check_nhwc(images, "images", None)
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


def default_halftone_config() -> ml_collections.ConfigDict:
  """Paper-like halftone settings, the `data.halftone` section of configs.

  AM screen with white round dots, the official tone curve (local mean
  pi/4 g), a fixed 3.0 px period (measured on the released sample inputs) and
  a random angle per image in [0, 90) degrees (the sample inputs have
  different angles; the grid is square, so 90 degrees covers all). Widen
  `period_range` (e.g. (2.5, 4.0)) to train for other scan resolutions.
  Degradations are off.
  """
  config = ml_collections.ConfigDict()
  config.method = "am"  # "am" | "bayer" | "error_diffusion"
  config.period_range = (3.0, 3.0)
  config.angle_range = (0.0, 90.0)
  config.supersample = 4
  config.binary = False
  config.tone_curve = "official"
  config.dot = "white"
  config.color_angles = DEFAULT_COLOR_ANGLES  # added to the per-image angle
  config.bayer_size = 8
  config.kernel = "floyd_steinberg"
  config.serpentine = False
  config.blur_sigma = 0.0
  config.noise_std = 0.0
  config.jpeg_quality = None
  config.lock()
  return config


def _get(config: Any, name: str) -> Any:
  defaults = default_halftone_config()
  return config.get(name, defaults[name]) if hasattr(config, "get") else getattr(
      config, name, defaults[name])


def _screen(images: Array, config: Any, period: Array | None,
            angle: Array | None) -> Array:
  """Halftones `images` [B,H,W,C] by `config`'s method (AM on a given lattice)."""
  method = _get(config, "method")
  if method == "am":
    return am_screen(images, period=period, angle=angle,
                     supersample=_get(config, "supersample"),
                     binary=_get(config, "binary"), dot=_get(config, "dot"),
                     tone_curve=_get(config, "tone_curve"))
  if method == "bayer":
    return ordered_dither(images, size=_get(config, "bayer_size"))
  return error_diffusion(images, kernel=_get(config, "kernel"),
                         serpentine=_get(config, "serpentine"))


def _synthesize(key: Array, images: Sequence[Array], config: Any,
                channel_offsets: bool) -> list[Array]:
  """Halftones every batch of `images` on one lattice drawn from `key`.

  The AM screen's period and base angle are drawn once per sample and shared
  by every entry of `images` (so a gray and a colour halftone of one photo
  put their dots in the same places); `channel_offsets` adds
  `config.color_angles` to the angle of each colour channel instead.
  """
  method = _get(config, "method")
  if method not in METHODS:
    raise ValueError(f"halftone method must be one of {METHODS}; got {method!r}")
  screen_key, degrade_key = jax.random.split(key)
  period = angle = None
  if method == "am":
    period, angle = random_screen_params(
        screen_key, images[0].shape[0],
        period_range=tuple(_get(config, "period_range")),
        angle_range=tuple(_get(config, "angle_range")))
  outputs = []
  for batch in images:
    batch_angle = angle
    if method == "am" and channel_offsets:
      offsets = jnp.asarray(_get(config, "color_angles"), jnp.float32)
      if offsets.shape != (3,):
        raise ValueError(f"color_angles must have 3 entries; got {offsets.shape}")
      batch_angle = angle[:, None] + offsets[None, :]
    out = _screen(batch, config, period, batch_angle)
    outputs.append(degrade(out, degrade_key,
                           blur_sigma=_get(config, "blur_sigma"),
                           noise_std=_get(config, "noise_std"),
                           jpeg_quality=_get(config, "jpeg_quality")))
  return outputs


def synthesize(key: Array, gray: ArrayLike, halftone_config: Any) -> Array:
  """Halftones a gray batch as configured (the entry point for trainers).

  Args:
    key: a `jax.random` key (screen parameters and degradation noise).
    gray: [B,H,W,1] float in [0, 1].
    halftone_config: a ConfigDict like `default_halftone_config()`; missing
      fields take the defaults. Read at trace time, so close over it under jit.

  Returns:
    [B,H,W,1] float32 in [0, 1].
  """
  return _synthesize(key, [_check_nhwc(gray, "gray", 1)], halftone_config,
                     False)[0]


def synthesize_with_color(key: Array, gray: ArrayLike, rgb: ArrayLike,
                          halftone_config: Any) -> tuple[Array, Array]:
  """A gray halftone and the colour halftone on the same screen lattice.

  The C->IHN target of the colour stage: G sees the gray halftone and must
  draw the per-channel colour halftone, so the colour dots have to sit where
  the gray dots are. Both are screened with the same per-sample period and
  angle (AM) and the same lattice origin; only the dot sizes differ, channel
  by channel. The gray halftone is exactly `synthesize(key, gray, ...)`.

  Args:
    key: a `jax.random` key.
    gray: [B,H,W,1] float in [0, 1] (the luma of `rgb`).
    rgb: [B,H,W,3] float in [0, 1].
    halftone_config: as for `synthesize`.

  Returns:
    ([B,H,W,1], [B,H,W,3]) float32 in [0, 1].
  """
  gray_ht, color_ht = _synthesize(
      key, [_check_nhwc(gray, "gray", 1), _check_nhwc(rgb, "rgb", 3)],
      halftone_config, False)
  return gray_ht, color_ht


def synthesize_color(key: Array, rgb: ArrayLike, halftone_config: Any) -> Array:
  """Per-channel colour halftone as a print would have it (one angle each).

  For the AM method each image gets a random base angle and the channels are
  screened at base + `color_angles` (as printing presses rotate separations
  to avoid moire); dither and error diffusion treat the channels
  independently. The colour stage's C->IHN target is not this but
  `synthesize_with_color` (one lattice for all channels).

  Args:
    key: a `jax.random` key.
    rgb: [B,H,W,3] float in [0, 1].
    halftone_config: as for `synthesize`.

  Returns:
    [B,H,W,3] float32 in [0, 1].
  """
  return _synthesize(key, [_check_nhwc(rgb, "rgb", 3)], halftone_config,
                     True)[0]


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
