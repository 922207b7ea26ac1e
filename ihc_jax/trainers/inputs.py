"""What every stage derives from a colour batch: halftone, gray, noise map."""

from __future__ import annotations

import jax
import ml_collections

from ihc_jax import colorspace
from ihc_jax import halftone
from ihc_jax import models


def halftone_inputs(key: jax.Array, images: jax.Array,
                    config: ml_collections.ConfigDict, noise_channels: int,
                    *, with_color: bool = False) -> tuple[jax.Array, ...]:
  """The IHN's inputs and target for colour images [B,H,W,3] in [0, 1].

  Args:
    key: one key; split here into the halftone's and the noise map's.
    images: colour ground truth.
    config: a stage config with `halftone` and `noise_variant`.
    noise_channels: channels of the IHN noise map (`model.ihn.nz`).
    with_color: also return the per-channel colour halftone of `images` on
      the same screen lattice as the gray halftone (the C->IHN target).

  Returns:
    (halftone [B,H,W,1] in [0, 1], gray [B,H,W,1] (ITU-R 601), noise map
    [B,H,W,noise_channels]), and the colour halftone [B,H,W,3] when
    `with_color`. The gray halftone does not depend on `with_color`.
  """
  halftone_key, noise_key = jax.random.split(key)
  gray = colorspace.rgb_to_gray(images)
  b, h, w, _ = gray.shape
  noise = models.make_noise_map(noise_key, b, h, w, channels=noise_channels,
                                variant=config.noise_variant)
  if with_color:
    ht, color_ht = halftone.synthesize_with_color(halftone_key, gray, images,
                                                  config.halftone)
    return ht, gray, noise, color_ht
  return halftone.synthesize(halftone_key, gray, config.halftone), gray, noise
