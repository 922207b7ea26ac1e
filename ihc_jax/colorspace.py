"""Colour conversions in JAX: RGB <-> gray (ITU-R 601 luma) and RGB <-> CIE Lab.

All functions are pure, work on any leading batch shape (channels last) and
are jit/vmap friendly. RGB and gray values are in [0, 1]; Lab uses the usual
ranges (L in [0, 100], a and b roughly in [-128, 127]).

Lab follows the same definition as `skimage.color.rgb2lab` / `lab2rgb` with
the default illuminant: sRGB primaries and transfer curve, D65 white point,
2 degree observer, so results match scikit-image to float32 precision.
"""

import jax.numpy as jnp
import numpy as np

# ITU-R BT.601 luma weights, the same as PIL's convert("L").
LUMA_WEIGHTS = (0.299, 0.587, 0.114)

# Linear sRGB -> CIE XYZ (D65), the matrix scikit-image uses.
_XYZ_FROM_RGB = (
    (0.412453, 0.357580, 0.180423),
    (0.212671, 0.715160, 0.072169),
    (0.019334, 0.119193, 0.950227),
)
# CIE XYZ -> linear sRGB, inverted once in float64.
_RGB_FROM_XYZ = tuple(map(tuple, np.linalg.inv(np.asarray(_XYZ_FROM_RGB))))
# Reference white D65, 2 degree observer.
_WHITE_D65 = (0.95047, 1.0, 1.08883)
# CIE constants in the form scikit-image uses them.
_LAB_EPSILON = 0.008856
_LAB_KAPPA_SLOPE = 7.787
_LAB_OFFSET = 16.0 / 116.0


def _check_channels(x: jnp.ndarray, channels: int, name: str) -> None:
  if x.ndim < 1 or x.shape[-1] != channels:
    raise ValueError(
        f"{name} expects {channels} channels on the last axis, got shape "
        f"{tuple(x.shape)}")


def rgb_to_gray(rgb: jnp.ndarray) -> jnp.ndarray:
  """ITU-R 601 luma, keeping a channel axis.

  Args:
    rgb: [..., 3] RGB values.

  Returns:
    [..., 1] float32 gray, 0.299 R + 0.587 G + 0.114 B.
  """
  rgb = jnp.asarray(rgb, jnp.float32)
  _check_channels(rgb, 3, "rgb_to_gray")
  weights = jnp.asarray(LUMA_WEIGHTS, jnp.float32)
  return jnp.sum(rgb * weights, axis=-1, keepdims=True)


def gray_to_rgb(gray: jnp.ndarray) -> jnp.ndarray:
  """Replicates a one-channel gray image into three equal RGB channels.

  Args:
    gray: [..., 1] gray values.

  Returns:
    [..., 3] float32 with R = G = B = gray.
  """
  gray = jnp.asarray(gray, jnp.float32)
  _check_channels(gray, 1, "gray_to_rgb")
  return jnp.repeat(gray, 3, axis=-1)


def replace_luma(rgb: jnp.ndarray, gray: jnp.ndarray) -> jnp.ndarray:
  """`rgb` with its ITU-R 601 luma replaced by `gray`, chroma kept.

  Adds (gray - luma(rgb)) to every channel: the luma weights sum to 1, so
  the luma becomes exactly `gray` while the colour differences R - Y and
  B - Y (YCbCr's chroma) stay as they were. No clipping.

  Args:
    rgb: [..., 3] RGB values.
    gray: [..., 1] target luma.

  Returns:
    [..., 3] float32.
  """
  rgb = jnp.asarray(rgb, jnp.float32)
  _check_channels(rgb, 3, "replace_luma")
  _check_channels(gray, 1, "replace_luma")
  return rgb + (jnp.asarray(gray, jnp.float32) - rgb_to_gray(rgb))


def _srgb_to_linear(c: jnp.ndarray) -> jnp.ndarray:
  high = ((jnp.maximum(c, 0.04045) + 0.055) / 1.055) ** 2.4
  return jnp.where(c > 0.04045, high, c / 12.92)


def _linear_to_srgb(c: jnp.ndarray) -> jnp.ndarray:
  high = 1.055 * jnp.maximum(c, 0.0031308) ** (1.0 / 2.4) - 0.055
  return jnp.where(c > 0.0031308, high, 12.92 * c)


def rgb_to_lab(rgb: jnp.ndarray) -> jnp.ndarray:
  """sRGB in [0, 1] -> CIE Lab (D65).

  Args:
    rgb: [..., 3] sRGB values in [0, 1].

  Returns:
    [..., 3] float32 (L, a, b); matches `skimage.color.rgb2lab`.
  """
  rgb = jnp.asarray(rgb, jnp.float32)
  _check_channels(rgb, 3, "rgb_to_lab")
  linear = _srgb_to_linear(rgb)
  matrix = jnp.asarray(_XYZ_FROM_RGB, jnp.float32)
  xyz = jnp.einsum("...c,kc->...k", linear, matrix,
                   precision="highest")
  xyz = xyz / jnp.asarray(_WHITE_D65, jnp.float32)
  f = jnp.where(xyz > _LAB_EPSILON,
                jnp.cbrt(jnp.maximum(xyz, _LAB_EPSILON)),
                _LAB_KAPPA_SLOPE * xyz + _LAB_OFFSET)
  fx, fy, fz = f[..., 0], f[..., 1], f[..., 2]
  lightness = 116.0 * fy - 16.0
  a = 500.0 * (fx - fy)
  b = 200.0 * (fy - fz)
  return jnp.stack([lightness, a, b], axis=-1)


def lab_to_rgb(lab: jnp.ndarray, *, clip: bool = True) -> jnp.ndarray:
  """CIE Lab (D65) -> sRGB, clipped to [0, 1].

  As in `skimage.color.lab2rgb`, a negative z (out-of-gamut b) is clipped to 0
  and the result is clipped to [0, 1].

  Args:
    lab: [..., 3] (L, a, b).
    clip: clip the result to [0, 1]; False shows out-of-gamut colours as
      values outside [0, 1].

  Returns:
    [..., 3] float32 sRGB ([0, 1] when clipped).
  """
  lab = jnp.asarray(lab, jnp.float32)
  _check_channels(lab, 3, "lab_to_rgb")
  lightness, a, b = lab[..., 0], lab[..., 1], lab[..., 2]
  fy = (lightness + 16.0) / 116.0
  fx = a / 500.0 + fy
  fz = jnp.maximum(fy - b / 200.0, 0.0)
  f = jnp.stack([fx, fy, fz], axis=-1)
  # 0.2068966 = cbrt(0.008856): the knee of the forward curve.
  xyz = jnp.where(f > 0.2068966, f ** 3,
                  (f - _LAB_OFFSET) / _LAB_KAPPA_SLOPE)
  xyz = xyz * jnp.asarray(_WHITE_D65, jnp.float32)
  matrix = jnp.asarray(_RGB_FROM_XYZ, jnp.float32)
  linear = jnp.einsum("...k,ck->...c", xyz, matrix, precision="highest")
  rgb = _linear_to_srgb(linear)
  return jnp.clip(rgb, 0.0, 1.0) if clip else rgb
