"""Seamless tiled application of fully convolutional networks.

The U-Nets of IHN and G need heights and widths that are multiples of
2**num_downs (128 for the official networks) and were trained on tiles of one
size (256 px). `tiled_apply` runs a function on images of any size:

- a side no longer than the tile is padded by reflection to the next multiple
  of `multiple` and processed whole;
- a longer side is cut into tiles of `tile` px that overlap by at least
  `overlap` px, spread evenly so the last tile ends at the border;
- tile outputs are blended with weights that ramp (cosine or linear) across
  each overlap and are 1 elsewhere; the weights of two neighbours sum to 1 in
  their overlap, and the accumulated sum is divided out, so the blend is a
  partition of unity everywhere and no seam is visible;
- tiles are processed `tile_batch` at a time (the last batch padded by
  repetition so every call has the same shape and compiles once), which
  bounds memory by the tile batch, not by the image size.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping

import numpy as np

TileFn = Callable[[np.ndarray, np.ndarray], Mapping[str, np.ndarray]]


def round_up(value: int, multiple: int) -> int:
  """Smallest multiple of `multiple` that is >= `value`."""
  return -(-value // multiple) * multiple


def tile_starts(length: int, tile: int, overlap: int) -> list[int]:
  """Start offsets of tiles covering [0, length) with at least `overlap`.

  Args:
    length: size of the side to cover, > tile.
    tile: tile size.
    overlap: minimum overlap of neighbouring tiles, 0 <= overlap < tile.

  Returns:
    Increasing offsets, the first 0 and the last `length - tile`, spread as
    evenly as integers allow.
  """
  if not 0 <= overlap < tile:
    raise ValueError(f"overlap must be in [0, tile={tile}), got {overlap}")
  if length <= tile:
    return [0]
  count = 1 + math.ceil((length - tile) / (tile - overlap))
  return [round(i * (length - tile) / (count - 1)) for i in range(count)]


def _ramp(n: int, blend: str) -> np.ndarray:
  """Rising weights in (0, 1) over n pixels; ramp[i] + ramp[n-1-i] == 1."""
  t = (np.arange(n, dtype=np.float64) + 0.5) / n
  if blend == "cosine":
    return 0.5 - 0.5 * np.cos(np.pi * t)
  if blend == "linear":
    return t
  raise ValueError(f"blend must be 'cosine' or 'linear', got {blend!r}")


def blend_weights_1d(starts: list[int], tile: int, *,
                     blend: str = "cosine") -> list[np.ndarray]:
  """Per-tile 1-D blending weights for tiles at `starts` of size `tile`.

  Each tile's weight is 1 except across its overlap with a neighbour, where it
  ramps: the rising ramp of the right tile and the falling ramp of the left
  tile sum to 1 pixel by pixel.

  Args:
    starts: tile offsets from `tile_starts`.
    tile: tile size.
    blend: 'cosine' (raised cosine) or 'linear'.

  Returns:
    One float64 array [tile] per tile.
  """
  weights = []
  for k, start in enumerate(starts):
    w = np.ones(tile, np.float64)
    if k > 0:
      n = starts[k - 1] + tile - start
      if n > 0:
        w[:n] *= _ramp(n, blend)
    if k + 1 < len(starts):
      n = start + tile - starts[k + 1]
      if n > 0:
        w[tile - n:] *= 1.0 - _ramp(n, blend)
    weights.append(w)
  return weights


def _axis_plan(length: int, tile: int, overlap: int,
               multiple: int) -> tuple[int, int, list[int]]:
  """Returns (padded length, tile length, starts) for one axis."""
  if length <= tile:
    padded = round_up(length, multiple)
    return padded, padded, [0]
  return length, tile, tile_starts(length, tile, overlap)


def _reflect_pad(image: np.ndarray, pad_h: int, pad_w: int) -> np.ndarray:
  if pad_h == 0 and pad_w == 0:
    return image
  # numpy's 'reflect' repeats the reflection when the pad exceeds the size.
  return np.pad(image, ((0, 0), (0, pad_h), (0, pad_w), (0, 0)),
                mode="reflect")


def tiled_apply(fn: TileFn, images: np.ndarray, *, tile: int, overlap: int,
                multiple: int, tile_batch: int = 4,
                blend: str = "cosine") -> dict[str, np.ndarray]:
  """Applies a same-size function to images of any size, tile by tile.

  Args:
    fn: `fn(tiles [N, th, tw, C], image_index [N] int32)` returning a mapping
      name -> [N, th, tw, C_k] (same spatial size). `image_index` says which
      input image each tile came from, so `fn` can pick per-image inputs.
      Every call has the same N (= min(tile_batch, number of tiles)).
    images: [B, H, W, C] float array.
    tile: tile size in px, a multiple of `multiple`.
    overlap: minimum overlap between neighbouring tiles in px.
    multiple: sides fed to `fn` are multiples of this (2**num_downs).
    tile_batch: tiles per call of `fn`; bounds memory.
    blend: 'cosine' or 'linear' weights in overlaps.

  Returns:
    name -> float32 [B, H, W, C_k], the blended outputs cropped to the input.
  """
  images = np.asarray(images)
  if images.ndim != 4:
    raise ValueError(f"images must be [B, H, W, C], got shape {images.shape}")
  if tile % multiple:
    raise ValueError(f"tile={tile} must be a multiple of {multiple}")
  if tile_batch < 1:
    raise ValueError(f"tile_batch must be >= 1, got {tile_batch}")
  batch, height, width, _ = images.shape
  padded_h, tile_h, starts_h = _axis_plan(height, tile, overlap, multiple)
  padded_w, tile_w, starts_w = _axis_plan(width, tile, overlap, multiple)
  padded = _reflect_pad(images, padded_h - height, padded_w - width)
  weights_h = blend_weights_1d(starts_h, tile_h, blend=blend)
  weights_w = blend_weights_1d(starts_w, tile_w, blend=blend)
  jobs = [(b, i, j) for b in range(batch) for i in range(len(starts_h))
          for j in range(len(starts_w))]
  n = min(tile_batch, len(jobs))
  sums: dict[str, np.ndarray] = {}
  total = np.zeros((batch, padded_h, padded_w, 1), np.float32)
  for first in range(0, len(jobs), n):
    chunk = jobs[first:first + n]
    real = len(chunk)
    chunk = chunk + [chunk[-1]] * (n - real)  # keep the shape constant
    tiles = np.stack([
        padded[b, starts_h[i]:starts_h[i] + tile_h,
               starts_w[j]:starts_w[j] + tile_w] for b, i, j in chunk])
    index = np.asarray([b for b, _, _ in chunk], np.int32)
    outputs = {k: np.asarray(v) for k, v in fn(tiles, index).items()}
    for t, (b, i, j) in enumerate(chunk[:real]):
      w = np.outer(weights_h[i], weights_w[j]).astype(np.float32)[..., None]
      rows = slice(starts_h[i], starts_h[i] + tile_h)
      cols = slice(starts_w[j], starts_w[j] + tile_w)
      total[b, rows, cols] += w
      for name, value in outputs.items():
        if value.shape[1:3] != (tile_h, tile_w):
          raise ValueError(f"fn output {name!r} has spatial shape "
                           f"{value.shape[1:3]}, expected {(tile_h, tile_w)}")
        if name not in sums:
          sums[name] = np.zeros(
              (batch, padded_h, padded_w, value.shape[-1]), np.float32)
        sums[name][b, rows, cols] += w * value[t]
  return {name: (s / total)[:, :height, :width]
          for name, s in sums.items()}
