"""Image grids of samples (TensorBoard and PNG)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import jax
import numpy as np


def image_grid(columns: Sequence[tuple[str, Any]], max_rows: int = 4
               ) -> np.ndarray:
  """Tiles images into one [rows*H, cols*W, 3] uint8 grid.

  Args:
    columns: (title, [B, H, W, 1 or 3] images on the [0, 1] scale); values
      outside [0, 1] are clipped, gray is repeated to RGB.
    max_rows: at most this many examples (rows).

  Returns:
    uint8 array, one row per example, one column per entry of `columns`.
  """
  tiles = []
  for _, images in columns:
    images = np.asarray(jax.device_get(images), np.float32)[:max_rows]
    if images.shape[-1] == 1:
      images = np.repeat(images, 3, axis=-1)
    tiles.append(np.concatenate(list(images), axis=0))
  grid = np.concatenate(tiles, axis=1)
  return (np.clip(grid, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def save_png(path: str, image: np.ndarray) -> None:
  """Writes a uint8 [H, W, 3] array as PNG."""
  from PIL import Image  # pylint: disable=g-import-not-at-top
  os.makedirs(os.path.dirname(path), exist_ok=True)
  Image.fromarray(image).save(path)
