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

from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from ihc_jax import models


IhnFn = Callable[[jax.Array, jax.Array], jax.Array]
GeneratorFn = Callable[[jax.Array, jax.Array, jax.Array], jax.Array]
EdgesFn = Callable[[jax.Array], jax.Array]


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
  return paths(
      lambda x, n: ihn.apply(variables["ihn"], x, n, train=False)[-1],
      lambda x, e, c: generator.apply(variables["generator"], x, e, c,
                                      train=False),
      models.canny_edges, halftone, noise, z)


def paths(run_ihn: IhnFn, run_generator: GeneratorFn, edges: EdgesFn,
          halftone: jax.Array, noise: jax.Array, z: jax.Array, *,
          sequential: bool = False) -> dict[str, jax.Array]:
  """`two_paths` on network functions: run_ihn(x, noise) -> gray,
  run_generator(x, edges, z) -> RGB, edges(gray in [0, 1]) -> Canny map.

  With `sequential=False` G runs once on all 2NK inputs and the IHN once on
  all 3NK colour channels. With `sequential=True` (Python loops, for callers
  outside `jit` whose functions are compiled once per shape) G runs once per
  code and the IHN once per colour channel of each image, as the official
  test.py does: the same values up to float rounding, with the peak memory
  and the compiled size of one network call instead of the whole batch.
  """
  n, h, w, _ = halftone.shape
  k = z.shape[1]
  gray = run_ihn(halftone, noise)
  edges_gray = edges(jnp.clip(gray, 0.0, 1.0))
  edges_halftone = edges(jnp.clip(halftone, 0.0, 1.0))
  inputs = jnp.concatenate([gray, halftone])
  edge_maps = jnp.concatenate([edges_gray, edges_halftone])
  if sequential:
    both = jnp.stack([  # [2N, K, h, w, 3]
        run_generator(inputs, edge_maps, jnp.concatenate([z[:, i]] * 2))
        for i in range(k)], axis=1)
  else:
    both = run_generator(jnp.repeat(inputs, k, axis=0),
                         jnp.repeat(edge_maps, k, axis=0),
                         jnp.concatenate([z.reshape(n * k, -1)] * 2))
  # One G call for both paths (eval-mode BatchNorm is per example);
  # image-major rows [2N * K]: path, image, code.
  both = both.reshape((2 * n * k,) + both.shape[-3:])
  forward, color_halftone = both[:n * k], both[n * k:]
  # The IHN on every colour channel: 3NK one-channel images.
  channels = jnp.moveaxis(color_halftone, -1, 1).reshape(n * k * 3, h, w, 1)
  channel_noise = jnp.repeat(noise, k * 3, axis=0)
  if sequential:
    inverted = jnp.concatenate([
        run_ihn(channels[i:i + 1], channel_noise[i:i + 1])
        for i in range(n * k * 3)])
  else:
    inverted = run_ihn(channels, channel_noise)
  inverse = jnp.moveaxis(inverted.reshape(n * k, 3, h, w), 1, -1)
  return dict(ihn_gray=gray, edges_gray=edges_gray,
              edges_halftone=edges_halftone, forward=forward,
              color_halftone=color_halftone, inverse=inverse)
