"""Pictures of a trained chain on photos it never saw, through the pipeline.

    python -m ihc_jax.tools.heldout_grid --workdir=quality \\
        --output=heldout.png [--size=128] [--source=photos] [--seed=0]

A stage's `samples/` grids show training crops at the training size. This
tool shows what a person gets: every held-out photo of the source (the
`photos` or `demo` catalogue's eval split, or every image of a folder) is
resized to short side `--size`, centre-cropped, halftoned with the
training screen (`halftone.synthesize`, the chain's colour-stage settings),
and colourised by `inference.Pipeline.from_workdir` (IHN, E, G, F; the same
code as `ihc-colorize`). One row per photo: halftone | IHN gray | recovery
(the photo itself as reference, z = mu) after F | the same before F
(IHN->C) | two random codes after F | ground truth.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence

import jax
import numpy as np

TITLES = ("halftone", "IHN gray", "recovery (F)", "recovery (IHN->C)",
          "random 1", "random 2", "ground truth")


def heldout_photos(source: str, size: int) -> list[tuple[str, np.ndarray]]:
  """(name, [size, size, 3] float32 in [0, 1]) of the source's held-out
  photos (catalogue eval split) or of every image of `folder:<path>`."""
  from ihc_jax import image_io  # pylint: disable=g-import-not-at-top
  from ihc_jax.data import crops  # pylint: disable=g-import-not-at-top
  from ihc_jax.data import sources  # pylint: disable=g-import-not-at-top
  if source in sources.CATALOGUES:
    files = sources.CATALOGUES[source].photo_files("eval")
  elif source.startswith("folder:"):
    files = [(os.path.splitext(os.path.basename(p))[0], p)
             for p in image_io.list_image_files(source[len("folder:"):])]
  else:
    raise ValueError(f"--source must be 'photos', 'demo' or folder:<path>, "
                     f"got {source!r}")
  if not files:
    raise ValueError(f"no held-out photo in {source!r}")
  out = []
  for name, path in files:
    array = crops.resize_short_side(
        (image_io.read_image(path) * 255).round().astype(np.uint8), size)
    top, left = crops.center_crop_params(array.shape, size)
    out.append((name, crops.crop(array, size, top, left, False)))
  return out


def columns(pipeline, photos: np.ndarray, halftone_config, seed: int
            ) -> list[np.ndarray]:
  """The grid's columns (`TITLES`) for photos [B, S, S, 3]."""
  from ihc_jax import colorspace  # pylint: disable=g-import-not-at-top
  from ihc_jax import halftone  # pylint: disable=g-import-not-at-top
  gray = np.asarray(colorspace.rgb_to_gray(photos))
  ht = np.asarray(halftone.synthesize(jax.random.PRNGKey(seed), gray,
                                      halftone_config))
  result = pipeline.colorize(ht, photos, num_samples=2, seed=seed,
                             reference_mode="mean",
                             return_intermediates=True)
  inter = result.intermediates
  return [ht, inter["ihn_gray"], result.reference, inter["ref_forward"],
          result.samples[:, 0], result.samples[:, 1], photos]


def main(argv: Sequence[str] | None = None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--workdir", required=True, help="Chain workdir.")
  parser.add_argument("--output", default="heldout.png", help="PNG to write.")
  parser.add_argument("--size", type=int, default=128,
                      help="Side of the square crops.")
  parser.add_argument("--source", default="photos",
                      help="photos, demo or folder:<path>.")
  parser.add_argument("--seed", type=int, default=0,
                      help="Seed of the screen and the codes.")
  args = parser.parse_args(argv)
  from ihc_jax import inference  # pylint: disable=g-import-not-at-top
  from ihc_jax.trainers import checkpoints  # pylint: disable=g-import-not-at-top
  from ihc_jax.trainers import grids  # pylint: disable=g-import-not-at-top
  pipeline = inference.Pipeline.from_workdir(args.workdir)
  halftone_config = checkpoints.load_stage_config(
      os.path.join(args.workdir, "color")).halftone
  named = heldout_photos(args.source, args.size)
  photos = np.stack([p for _, p in named])
  cols = columns(pipeline, photos, halftone_config, args.seed)
  grid = grids.image_grid(list(zip(TITLES, cols)), max_rows=len(named))
  grids.save_png(os.path.abspath(args.output), grid)
  print(f"Wrote {args.output}: rows " + ", ".join(n for n, _ in named))


if __name__ == "__main__":
  main()
