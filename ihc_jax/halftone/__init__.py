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

Code: this module is the public entry (the methods' names, the
`data.halftone` config and `synthesize*`, which draw a screen per image);
the methods live in `ihc_jax.halftone`: `am`, `dither` (ordered dither,
error diffusion), `degrade` and `estimate` (`estimate_screen`).
"""

from __future__ import annotations

from typing import Any, Sequence

import jax
import jax.numpy as jnp
import ml_collections

from ihc_jax.halftone import am
from ihc_jax.halftone import arrays
from ihc_jax.halftone import degrade as degrade_lib
from ihc_jax.halftone import dither
from ihc_jax.halftone import estimate

Array = jax.Array
ArrayLike = Any

METHODS = ("am", "bayer", "error_diffusion")
# The methods, under the names this module has always offered.
TONE_CURVES = am.TONE_CURVES
DOTS = am.DOTS
DEFAULT_COLOR_ANGLES = am.DEFAULT_COLOR_ANGLES
disc_in_square_area = am.disc_in_square_area
am_screen = am.am_screen
am_screen_color = am.am_screen_color
random_screen_params = am.random_screen_params
DIFFUSION_KERNELS = dither.DIFFUSION_KERNELS
bayer_matrix = dither.bayer_matrix
ordered_dither = dither.ordered_dither
error_diffusion = dither.error_diffusion
degrade = degrade_lib.degrade
estimate_screen = estimate.estimate_screen


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
  return _synthesize(key, [arrays.check_nhwc(gray, "gray", 1)], halftone_config,
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
      key, [arrays.check_nhwc(gray, "gray", 1),
            arrays.check_nhwc(rgb, "rgb", 3)],
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
  return _synthesize(key, [arrays.check_nhwc(rgb, "rgb", 3)], halftone_config,
                     True)[0]
