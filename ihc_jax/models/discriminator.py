"""D: the multi-scale latent-conditioned discriminator, original-code.md §3.6.

Input cat([image (3), tiled z (nz)]). Scale s uses ndf_s = round(ndf / 2**s)
on the input average-pooled s times by AvgPool(3, stride 2, padding 1,
count_include_pad=False). Each scale is a PatchGAN: Conv4x4 s2 p1 -> LReLU,
(n_layers - 1) x [Conv4x4 s2 p1 -> BN -> LReLU], Conv4x4 s1 p1 -> BN -> LReLU,
Conv4x4 s1 p1 -> 1 logit. At 256x256 the logits are 30x30 and 14x14.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from ihc_jax.models import layers
from ihc_jax.models import precision


class PatchDiscriminator(nn.Module):
  """One scale of D.

  Attributes:
    ndf: width of the first conv.
    n_layers: stride-2 convs (3).
  """
  ndf: int = 64
  n_layers: int = 3

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
    """Maps [B, H, W, C] to [B, h, w, 1] patch logits."""
    x = layers.leaky_relu(layers.Conv2d(self.ndf, 4, stride=2, padding=1, name="conv_0")(x))
    mult = 1
    for n in range(1, self.n_layers + 1):
      mult = min(2**n, 8)
      stride = 2 if n < self.n_layers else 1
      x = layers.Conv2d(self.ndf * mult, 4, stride=stride, padding=1, name=f"conv_{n}")(x)
      x = layers.leaky_relu(layers.batch_norm(train, f"norm_{n}", x.dtype)(x))
    return layers.Conv2d(1, 4, padding=1, name=f"conv_{self.n_layers + 1}")(x)


class Discriminator(nn.Module):
  """(image, latent code) -> list of patch logits, one per scale.

  Attributes:
    nz: latent code size (0: no code).
    ndf: width of the first conv at scale 0.
    n_layers: stride-2 convs per scale.
    num_scales: number of scales (2).
    dtype: compute dtype (parameters stay float32; logits are float32).
  """
  nz: int = 8
  ndf: int = 64
  n_layers: int = 3
  num_scales: int = 2
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, image: jax.Array, z: jax.Array | None = None, *,
               train: bool) -> list[jax.Array]:
    """Scores an image at every scale.

    Args:
      image: [B, H, W, 3] colour image on the [0, 1] scale.
      z: [B, nz] latent code (required when nz > 0).
      train: batch statistics when True.

    Returns:
      List of [B, h_s, w_s, 1] float32 logits (no sigmoid), scale 0 first.
    """
    layers.check_image(image, "image", channels=3)
    x = image.astype(self.dtype)
    if self.nz > 0:
      if z is None or z.shape != (image.shape[0], self.nz):
        raise ValueError(
            f"z must be [B, nz] = [{image.shape[0]}, {self.nz}], got "
            f"{None if z is None else z.shape}")
      x = jnp.concatenate([x, layers.tile_latent(z, *image.shape[1:3]).astype(x.dtype)], -1)
    outputs = []
    for s in range(self.num_scales):
      ndf = int(round(self.ndf / 2**s))
      outputs.append(PatchDiscriminator(ndf, self.n_layers, name=f"scale_{s}")(x, train=train))
      if s != self.num_scales - 1:
        x = layers.avg_pool_exclude_pad(x, 3, 2, 1)
    return precision.to_float32(outputs)
