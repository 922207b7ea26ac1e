"""The two cascade orders of the official inference graph, defined once.

original-code.md §4: for a halftone h, a noise map and colour codes z,

* IHN->C: g = IHN(h, noise), forward = G(g, canny(g), z);
* C->IHN: color_halftone = G(h, canny(h), z), inverse = IHN applied to each
  colour channel of color_halftone with the same noise map.

F then fuses (forward, inverse). The fusion trainer and
`ihc_jax.inference.Pipeline` both call `two_paths`, so training and inference
cannot drift apart. No clipping between networks (as the official code),
except the [0, 1] clip Canny needs before its 8-bit quantisation.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from ihc_jax import models


def two_paths(ihn: nn.Module, generator: nn.Module, variables: dict[str, Any],
              halftone: jax.Array, noise: jax.Array, z: jax.Array
              ) -> dict[str, jax.Array]:
  """Both cascade paths for K colour codes per image, in eval mode.

  Args:
    ihn: the IHN module.
    generator: G.
    variables: {'ihn': ..., 'generator': ...} Flax variables.
    halftone: [N, h, w, 1] halftones in [0, 1].
    noise: [N, h, w, nz_ihn] IHN noise maps, shared by every IHN call of an
      image.
    z: [N, K, nz] colour codes (K >= 1 per image).

  Returns:
    'ihn_gray' [N,h,w,1] (unclipped), 'edges_gray', 'edges_halftone'
    [N,h,w,1] in {0, 1}, and per code, image-major ([N*K, h, w, 3], code k of
    image n at row n*K + k): 'forward', 'color_halftone', 'inverse'.
  """
  n, h, w, _ = halftone.shape
  k = z.shape[1]
  gray = ihn.apply(variables["ihn"], halftone, noise, train=False)[-1]
  edges_gray = models.canny_edges(jnp.clip(gray, 0.0, 1.0))
  edges_halftone = models.canny_edges(jnp.clip(halftone, 0.0, 1.0))

  def per_code(x):  # [N, ...] -> [N * K, ...]
    return jnp.repeat(x, k, axis=0)

  codes = z.reshape(n * k, -1)
  # One G call for both paths (eval-mode BatchNorm is per example).
  both = generator.apply(
      variables["generator"],
      jnp.concatenate([per_code(gray), per_code(halftone)]),
      jnp.concatenate([per_code(edges_gray), per_code(edges_halftone)]),
      jnp.concatenate([codes, codes]), train=False)
  forward, color_halftone = both[:n * k], both[n * k:]
  # The IHN on every colour channel, batched as 3NK one-channel images.
  channels = jnp.moveaxis(color_halftone, -1, 1).reshape(n * k * 3, h, w, 1)
  inverted = ihn.apply(variables["ihn"], channels,
                       jnp.repeat(noise, k * 3, axis=0), train=False)[-1]
  inverse = jnp.moveaxis(inverted.reshape(n * k, 3, h, w), 1, -1)
  return dict(ihn_gray=gray, edges_gray=edges_gray,
              edges_halftone=edges_halftone, forward=forward,
              color_halftone=color_halftone, inverse=inverse)
