"""Precomputed pseudo ground truth: `<example_dir>/<image>_<reference>.png`.

The files the official Deep Exemplar-based Colorization writes for an
(image, reference) pair, matched by file stem (`data.example_dir`).
"""

import os
from typing import Sequence

import numpy as np
from PIL import Image

from ihc_jax import image_io
from ihc_jax.data import skips
from ihc_jax.data import sources


class Examples:
  """Index of `<example_dir>/<target_stem>_<reference_stem>.png` files."""

  def __init__(self, example_dir: str, targets: sources.IndexedSource,
               references: sources.IndexedSource):
    if not os.path.isdir(example_dir):
      raise FileNotFoundError(
          f"data.example_dir {example_dir!r} is not a folder")
    self._dir = example_dir
    duplicates = {s for s in targets.stems if targets.stems.count(s) > 1}
    if duplicates:
      raise ValueError(
          "example files are matched by file stem, but several images share "
          f"the stems {sorted(duplicates)[:5]}")
    target_stems = set(targets.stems)
    reference_index = {}
    for index, stem in enumerate(references.stems):
      reference_index.setdefault(stem, []).append(index)
    self._candidates: dict[str, list[int]] = {}
    for name in sorted(os.listdir(example_dir)):
      if not name.endswith(".png"):
        continue
      base = name[:-len(".png")]
      # Stems may contain "_": try every split point.
      for cut in [i for i, c in enumerate(base) if c == "_"]:
        target, reference = base[:cut], base[cut + 1:]
        if target in target_stems and reference in reference_index:
          self._candidates.setdefault(target, []).extend(
              reference_index[reference])
    missing = [s for s in targets.stems if s not in self._candidates]
    if missing:
      raise ValueError(
          f"data.example_dir {example_dir!r} has no example "
          f"'<image>_<reference>.png' (with a reference from the reference "
          f"source) for {len(missing)} of {len(targets)} images, e.g. "
          f"{missing[:5]}")
    self._references = references

  def path(self, target: str, reference: str) -> str:
    """The example file of a (target, reference) pair of stems."""
    return os.path.join(self._dir, f"{target}_{reference}.png")

  def has(self, target: str, reference_index: int) -> bool:
    """Whether the pair (target stem, reference record) has an example."""
    return reference_index in self._candidates.get(target, ())

  def load(self, target: str, reference_index: int,
           shape: Sequence[int]) -> np.ndarray | None:
    """The example resized to `shape` (the resized target's), or None."""
    path = self.path(target, self._references.stems[reference_index])
    try:
      with open(path, "rb") as f:
        array = image_io.decode_image(f.read())
    except image_io.DECODE_ERRORS as error:
      skips.record(path, f"{type(error).__name__}: {error}")
      return None
    if array.shape[:2] != tuple(shape[:2]):
      if array.dtype != np.uint8:
        array = np.round(np.clip(array, 0, 1) * 255).astype(np.uint8)
      array = np.asarray(Image.fromarray(array).resize(
          (shape[1], shape[0]), Image.Resampling.BILINEAR))
    return array

  def choose(self, target: str, reference_index: int, start: int,
             shape: Sequence[int]) -> tuple[int, np.ndarray, np.ndarray]:
    """(reference index, reference, example) for a target.

    Uses the drawn reference when its example exists, else the candidates of
    the target from position `start` on (cyclically).
    """
    order = []
    if self.has(target, reference_index):
      order.append(reference_index)
    candidates = self._candidates[target]
    order += [candidates[(start + k) % len(candidates)]
              for k in range(len(candidates))]
    for index in order:
      reference = self._references.load(index)
      if reference is None:
        continue
      example = self.load(target, index, shape)
      if example is not None:
        return index, reference, example
    raise RuntimeError(
        f"no readable (reference, example) pair for image {target!r} in "
        f"{self._dir!r}")
