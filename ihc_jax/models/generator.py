"""G: the colorization network, original-code.md §3.5.

The shared U-Net (`UNet`) without the dense block, fed with
cat([x (1), tiled z (nz), edge (1)]) and returning 3 tanh channels. The same
G maps the grayscale IHN output to colour (forward path) and the B/W halftone
to a colour halftone (inverse path).
"""

from __future__ import annotations

import flax.linen as nn
import jax

from ihc_jax.models import layers
from ihc_jax.models.unet import UNet


class ColorizationNet(nn.Module):
  """(gray or halftone, edge map, latent code) -> colour image.

  Attributes:
    output_channels: 3 (RGB).
    nz: latent code size.
    num_downs: U-Net levels (inputs must be multiples of 2**num_downs).
    ngf: U-Net base width.
    max_mult: U-Net channel multiplier cap.
    dropout_rate: U-Net dropout rate.
  """
  output_channels: int = 3
  nz: int = 8
  num_downs: int = 7
  ngf: int = 64
  max_mult: int = 8
  dropout_rate: float = 0.5

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
      [B, H, W, output_channels] tanh output in [-1, 1], read on the [0, 1]
      scale (negative values are clipped only when saving).
    """
    layers.check_image(x, "x", channels=1)
    layers.check_image(edge, "edge", channels=1)
    if z.ndim != 2 or z.shape != (x.shape[0], self.nz):
      raise ValueError(f"z must be [B, nz] = [{x.shape[0]}, {self.nz}], got shape {z.shape}")
    return UNet(output_channels=self.output_channels, input_channels=2 + self.nz,
                num_downs=self.num_downs,
                ngf=self.ngf, max_mult=self.max_mult, dense_innermost=False,
                dropout_rate=self.dropout_rate, name="unet")(x, z, edge, train=train)
