"""`ihc-prepare-dataset`: a folder of photos -> a resized TFDS data set.

    python -m ihc_jax.tools.prepare_dataset --input_dir /photos \
        --name my_photos --data_dir /data/tfds [--short_side 256] \
        [--quality 95]

Every image below `--input_dir` (the files `image_io.list_image_files`
lists) is decoded once, resized so that its short side is `--short_side`
(the train stream's PIL path: JPEG draft scaling, antialiased bilinear; an
image already that small is kept as it is), re-encoded as JPEG and written
to `<data_dir>/<name>/1.0.0/` as a TFDS data set with one split, `train`
(features `image`, `name` = the path relative to the input folder).
Unreadable files are skipped and listed at the end.

Train on it with

    --config.data.source=tfds:<name>:train --config.data.num_eval=<N> \
    --config.data.tfds_data_dir=/data/tfds

(the first N records, in TFDS's stored order, are held out). Choose
`--short_side` >= `data.image_size`: the stream then crops without
resampling, and decodes far less than full-size photographs. Resizing is
done once here, so several runs (and epochs) share the cost.
"""

from __future__ import annotations

import argparse
import io
import os
import sys
from typing import Iterator, Sequence

import numpy as np

PROG = "ihc-prepare-dataset"


def _resized_photos(paths: Sequence[str], root: str, short_side: int,
                    skipped: list[str]) -> Iterator[dict[str, object]]:
  """Decoded, resized uint8 photos with their relative names."""
  from ihc_jax import image_io  # pylint: disable=g-import-not-at-top
  from ihc_jax.data import crops  # pylint: disable=g-import-not-at-top
  for path in paths:
    try:
      with open(path, "rb") as f:
        array = image_io.decode_image(f.read(), short_side)
    except (OSError, ValueError, SyntaxError, EOFError) as error:
      skipped.append(f"{path}: {type(error).__name__}: {error}")
      continue
    if min(array.shape[:2]) > short_side:
      array = crops.resize_short_side(array, short_side)
    if array.dtype != np.uint8:
      array = np.round(np.clip(array, 0.0, 1.0) * 255.0).astype(np.uint8)
    yield {"image": array, "name": os.path.relpath(path, root)}


def prepare(input_dir: str, name: str, data_dir: str, *,
            short_side: int = 256, quality: int = 95) -> tuple[int, list[str]]:
  """Writes the TFDS data set `name` into `data_dir`.

  Args:
    input_dir: the folder of photos (recursive).
    name: the data set's name (a Python identifier, lower case).
    data_dir: the TFDS data_dir.
    short_side: photos larger than this are shrunk to this short side.
    quality: JPEG quality of the stored images.

  Returns:
    (number of images written, "path: reason" of the skipped files).

  Raises:
    FileNotFoundError: `input_dir` is not a folder.
    ValueError: it holds no image, or the arguments are out of range.
  """
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  tf.config.set_visible_devices([], "GPU")
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  from ihc_jax import image_io  # pylint: disable=g-import-not-at-top
  if short_side <= 0:
    raise ValueError(f"--short_side must be positive, got {short_side}")
  if not 1 <= quality <= 100:
    raise ValueError(f"--quality must be in [1, 100], got {quality}")
  if not name.isidentifier() or name != name.lower():
    raise ValueError(f"--name must be a lower-case identifier, got {name!r}")
  paths = image_io.list_image_files(input_dir)
  if not paths:
    raise ValueError(f"{input_dir!r} holds no image files")
  skipped: list[str] = []
  features = tfds.features.FeaturesDict({
      "image": tfds.features.Image(shape=(None, None, 3),
                                   encoding_format="jpeg"),
      "name": tfds.features.Text()})
  # TFDS encodes arrays with tf.io.encode_jpeg at its default quality; encode
  # here instead so that --quality holds.
  def examples():
    for example in _resized_photos(paths, os.path.abspath(input_dir),
                                   short_side, skipped):
      encoded = tf.io.encode_jpeg(example["image"], quality=quality).numpy()
      # A file object is stored as it is (no second encoding); the relative
      # name is the unique key TFDS shuffles the records by.
      yield example["name"], {"image": io.BytesIO(encoded),
                              "name": example["name"]}

  builder = tfds.dataset_builders.store_as_tfds_dataset(
      name=name, version="1.0.0", features=features,
      split_datasets={"train": examples()}, data_dir=data_dir,
      description=f"Photos of {os.path.abspath(input_dir)}, short side "
      f"{short_side}, JPEG quality {quality} (ihc_jax prepare_dataset).")
  count = builder.info.splits["train"].num_examples
  return count, skipped


def main(argv: Sequence[str] | None = None) -> int:
  """Command-line entry point; returns the exit status."""
  parser = argparse.ArgumentParser(prog=PROG, description=__doc__.split(
      "\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--input_dir", required=True, help="folder of photos")
  parser.add_argument("--name", required=True, help="TFDS data set name")
  parser.add_argument("--data_dir", required=True, help="TFDS data_dir")
  parser.add_argument("--short_side", type=int, default=256,
                      help="shrink photos to this short side (default 256)")
  parser.add_argument("--quality", type=int, default=95,
                      help="JPEG quality (default 95)")
  args = parser.parse_args(argv)
  try:
    count, skipped = prepare(args.input_dir, args.name, args.data_dir,
                             short_side=args.short_side, quality=args.quality)
  except (FileNotFoundError, ValueError) as error:
    print(f"{PROG}: {error}", file=sys.stderr)
    return 2
  for line in skipped:
    print(f"{PROG}: skipped {line}", file=sys.stderr)
  print(f"{PROG}: wrote {count} images to "
        f"{os.path.join(args.data_dir, args.name)} (source: "
        f"tfds:{args.name}:train, data.tfds_data_dir={args.data_dir}); "
        f"skipped {len(skipped)}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
