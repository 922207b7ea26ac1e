"""G: the colorization network, original-code.md §3.5.

The shared U-Net (`UNet`) without the dense block, fed with
cat([x (1), tiled z (nz), edge (1)]) and returning 3 tanh channels. The same
G maps the grayscale IHN output to colour (forward path) and the B/W halftone
to a colour halftone (inverse path).
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from ihc_jax import colorspace
from ihc_jax.models import layers
from ihc_jax.models import precision
from ihc_jax.models.unet import UNet


LUMA_MODES = ("learned", "input")


class ColorizationNet(nn.Module):
  """(gray or halftone, edge map, latent code) -> colour image.

  Attributes:
    output_channels: 3 (RGB).
    nz: latent code size.
    num_downs: U-Net levels (inputs must be multiples of 2**num_downs).
    ngf: U-Net base width.
    max_mult: U-Net channel multiplier cap.
    dropout_rate: U-Net dropout rate.
    luma: "learned" (the official G: all three channels are G's) or
      "input" (G gives the chroma only: its output's ITU-R 601 luma is
      replaced by x's, `colorspace.replace_luma`, as colourisers that
      predict chroma over a given lightness do, e.g. Zhang et al. 2016 and
      DDColor; the IHN's full-resolution gray then passes through
      untouched instead of through G's U-Net). Same parameters either way.
    code_shift: when True, the output also moves by a global colour offset
      that is a linear function of z with no luma (a `Dense` layer
      `code_shift`, zero at the start, its output's ITU-R 601 luma
      removed). The official G has no such path: z reaches the colours only
      through the U-Net. With it, a code that holds a photo's mean colour
      shifts the whole image to it directly, as the global hints of Zhang et
      al. 2017 do. Adds 3 * nz + 3 parameters; off by default.
    code_shift_limit: when > 0, each channel of the code shift is bounded
      softly to (-limit, limit) (limit * tanh(shift / limit), before its luma
      is removed): a random code far out in N(0, I) cannot tint the whole
      image further than that. 0 (the default): unbounded.
    dtype: compute dtype (parameters stay float32; the output is float32).
  """
  output_channels: int = 3
  nz: int = 8
  num_downs: int = 7
  ngf: int = 64
  max_mult: int = 8
  dropout_rate: float = 0.5
  luma: str = "learned"
  code_shift: bool = False
  code_shift_limit: float = 0.0
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, edge: jax.Array, z: jax.Array, *,
               train: bool) -> jax.Array:
    """Colorizes x.

    Args:
      x: [B, H, W, 1] gray image or halftone in [0, 1].
      edge: [B, H, W, 1] edge map in {0, 1}.
      z: [B, nz] latent code.
      train: batch statistics and dropout when True (needs a "dropout" rng).

    Returns:
      [B, H, W, output_channels] float32 tanh output in [-1, 1], read on
      the [0, 1] scale (negative values are clipped only when saving).
    """
    layers.check_image(x, "x", channels=1)
    layers.check_image(edge, "edge", channels=1)
    if self.luma not in LUMA_MODES:
      raise ValueError(f"luma must be one of {LUMA_MODES}, got {self.luma!r}")
    if self.code_shift_limit < 0:
      raise ValueError(f"code_shift_limit must be >= 0, got {self.code_shift_limit}")
    if self.code_shift and self.output_channels != 3:
      raise ValueError("code_shift needs RGB output (output_channels=3), "
                       f"got {self.output_channels}")
    if z.ndim != 2 or z.shape != (x.shape[0], self.nz):
      raise ValueError(f"z must be [B, nz] = [{x.shape[0]}, {self.nz}], got shape {z.shape}")
    out = UNet(output_channels=self.output_channels, input_channels=2 + self.nz,
               num_downs=self.num_downs,
               ngf=self.ngf, max_mult=self.max_mult, dense_innermost=False,
               dropout_rate=self.dropout_rate, name="unet")(
                   x.astype(self.dtype), z, edge, train=train)
    out = precision.to_float32(out)
    if self.luma == "input":
      out = colorspace.replace_luma(out, x)
    if self.code_shift:
      shift = nn.Dense(self.output_channels, kernel_init=nn.initializers.zeros,
                       name="code_shift")(z.astype(jnp.float32))
      if self.code_shift_limit > 0:
        shift = self.code_shift_limit * jnp.tanh(shift / self.code_shift_limit)
      shift = shift - colorspace.rgb_to_gray(shift)
      out = out + shift[:, None, None, :]
    return out


# Knots of the pass-through in `gray_init`: hinge i is ReLU(x - KNOTS[i]);
# the pre-tanh output interpolates atanh(x) linearly between the knots and
# `_LAST_POINT` (tanh(output) is then within 0.02 of x on [0, 1]).
_KNOTS = (0.0, 0.5, 0.75, 0.9)
_LAST_POINT = 0.97


def _hinge_weights(knots: tuple[float, ...]) -> np.ndarray:
  """Weights w with sum_i w_i ReLU(x - knots[i]) = the linear interpolation
  of atanh through (knots..., _LAST_POINT)."""
  points = np.array(knots + (_LAST_POINT,), np.float64)
  slopes = np.diff(np.arctanh(points)) / np.diff(points)
  return np.diff(slopes, prepend=0.0)


def gray_init(params: dict) -> dict:
  """G's parameters changed so that G(x, edge, z) is about x in every channel.

  The official G (`UNet`) has no full-resolution skip: the image reaches the
  output through the outermost level only (a 4x4 stride-2 conv, then ReLU,
  a bilinear x2 upsampling, a 3x3 conv and tanh). From a random start a
  short run spends its steps learning to pass the gray through before it
  can colour it, and ends below the gray itself ("gray in three channels").
  This start keeps the architecture and changes only initial values, as
  `models.fusion.blend_init` does for F:

  * down_0: its last K = min(4, ngf) output channels are the 2x2 mean of
    x minus a knot (x only: 0.25 on the four centre taps, bias -knot); the
    other channels keep their random values;
  * up_0: the centre tap maps those K hinges, after the ReLU and the
    upsampling, to a piecewise-linear atanh in each output channel; every
    other weight and the bias are zero, so the deeper levels, z and the
    edge map start with no effect and get gradient from the first step on.

  The output starts as the gray, blurred by the 2x2 mean and the bilinear
  upsampling, in all three channels.

  Args:
    params: G's `params` collection (`{"unet": ...}`), any width.

  Returns:
    A new params dict of the same structure, shapes and dtypes.
  """
  params = jax.tree.map(lambda x: x, dict(params))
  unet = dict(params["unet"])
  down = unet["down_0"]
  kernel = down["kernel"]  # [4, 4, C_in, ngf]; x is input channel 0
  ngf = kernel.shape[-1]
  k = min(len(_KNOTS), ngf)
  knots = _KNOTS[:k]
  hinge = jnp.zeros(kernel.shape[:3] + (k,), kernel.dtype)
  hinge = hinge.at[1:3, 1:3, 0, :].set(0.25)
  unet["down_0"] = dict(
      kernel=kernel.at[..., ngf - k:].set(hinge),
      bias=down["bias"].at[ngf - k:].set(-jnp.asarray(knots, kernel.dtype)))
  up = unet["up_0"]
  up_kernel = up["kernel"]  # [3, 3, channels of cat(up_1, d_0), out]
  weights = jnp.asarray(_hinge_weights(knots), up_kernel.dtype)
  in_ch, out_ch = up_kernel.shape[2:]
  centre = jnp.zeros((in_ch, out_ch), up_kernel.dtype)
  centre = centre.at[in_ch - k:, :].set(weights[:, None])
  unet["up_0"] = dict(
      kernel=jnp.zeros_like(up_kernel).at[1, 1].set(centre),
      bias=jnp.zeros_like(up["bias"]))
  params["unet"] = unet
  return params
