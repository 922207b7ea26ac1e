"""Geometry of the PIL path: resize to short side S, then S x S crops.

Arrays are [H,W,3], uint8 (8-bit data) or float32 in [0, 1]; crops come out
float32 in [0, 1]. `ihc_jax.data.decode` reproduces this geometry with
TensorFlow ops for the native train stream.
"""

from typing import Sequence

import numpy as np
from PIL import Image


def resize_short_side(array: np.ndarray, size: int) -> np.ndarray:
  """Resizes so that the shorter side is `size` (bilinear, antialiased).

  PIL's bilinear filter widens its support when shrinking, so downscaling is
  antialiased (torchvision's `Resize` on PIL images, as in the official code).

  Args:
    array: uint8 or float32 [H,W,3].
    size: target length of the shorter side.

  Returns:
    The resized array, same dtype.
  """
  height, width = array.shape[:2]
  scale = size / min(height, width)
  new_height = max(size, int(round(height * scale)))
  new_width = max(size, int(round(width * scale)))
  if (new_height, new_width) == (height, width):
    return array
  if array.dtype == np.uint8:
    resized = Image.fromarray(array).resize(
        (new_width, new_height), Image.Resampling.BILINEAR)
    return np.asarray(resized)
  channels = [
      np.asarray(Image.fromarray(array[..., c].astype(np.float32), "F").resize(
          (new_width, new_height), Image.Resampling.BILINEAR))
      for c in range(array.shape[-1])]
  return np.stack(channels, axis=-1)


def _to_float(array: np.ndarray) -> np.ndarray:
  if array.dtype == np.uint8:
    return array.astype(np.float32) / 255.0
  return array.astype(np.float32)


def crop(array: np.ndarray, size: int, top: int, left: int,
         flip: bool) -> np.ndarray:
  """The S x S window at (top, left), flipped if asked: float32 [0, 1]."""
  out = array[top:top + size, left:left + size]
  if flip:
    out = out[:, ::-1]
  return np.ascontiguousarray(_to_float(out))


def random_crop_params(rng: np.random.Generator, shape: Sequence[int],
                       size: int, random_flip: bool) -> tuple[int, int, bool]:
  """(top, left, flip) of a random S x S crop, drawn from `rng`."""
  top = int(rng.integers(0, shape[0] - size + 1))
  left = int(rng.integers(0, shape[1] - size + 1))
  flip = bool(random_flip and rng.random() < 0.5)
  return top, left, flip


def center_crop_params(shape: Sequence[int], size: int) -> tuple[int, int]:
  """(top, left) of the centred S x S crop."""
  return (int(round((shape[0] - size) / 2.0)),
          int(round((shape[1] - size) / 2.0)))
