"""`ihc-halftone`: halftone an image or a folder of images from the command line.

Examples:

  python -m ihc_jax.halftone.cli photo.jpg out.png --method am --period 3 --angle 45
  python -m ihc_jax.halftone.cli photo.jpg out.png --method bayer --size 8
  python -m ihc_jax.halftone.cli photo.jpg out.png --method fs --serpentine
  python -m ihc_jax.halftone.cli photos/ halftones/ --method am --color

With a folder as IN, every image below it (recursively) is written to the same
relative path under OUT with a .png suffix. A file that cannot be read is
reported on one line naming it, the others are still processed, and the exit
status is 1 at the end. Outputs are written to a temporary name and renamed,
and an input file is never overwritten.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import sys
import tempfile
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image

from ihc_jax import halftone

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp",
                  ".gif", ".ppm", ".pgm")
METHODS = ("am", "bayer", "fs", "jarvis")
PROG = "ihc-halftone"


class HalftoneError(Exception):
  """A per-file failure reported on one line."""


def _parse_angles(text: str) -> tuple[float, float, float]:
  try:
    angles = tuple(float(part) for part in text.split(","))
  except ValueError:
    raise argparse.ArgumentTypeError(
        f"--angles needs three comma-separated numbers; got {text!r}") from None
  if len(angles) != 3:
    raise argparse.ArgumentTypeError(
        f"--angles needs three comma-separated numbers; got {text!r}")
  return angles


def _positive(text: str) -> float:
  value = float(text)
  if not value > 0:
    raise argparse.ArgumentTypeError(f"must be > 0; got {text}")
  return value


def build_parser() -> argparse.ArgumentParser:
  """The command-line parser of `ihc-halftone`."""
  parser = argparse.ArgumentParser(
      prog=PROG, description="Halftone an image, or every image in a folder.")
  parser.add_argument("input", help="image file or folder")
  parser.add_argument("output", help="output image file or folder")
  parser.add_argument("--method", choices=METHODS, default="am",
                      help="am: clustered-dot screen; bayer: ordered dither; "
                      "fs / jarvis: error diffusion (default: am)")
  parser.add_argument("--period", type=_positive, default=3.0,
                      help="AM screen period in pixels (default: 3)")
  parser.add_argument("--angle", type=float, default=45.0,
                      help="AM screen angle in degrees (default: 45)")
  parser.add_argument("--angles", type=_parse_angles, default=(15.0, 75.0, 0.0),
                      help="AM angles of R,G,B with --color (default: 15,75,0)")
  parser.add_argument("--tone-curve", choices=halftone.TONE_CURVES,
                      default="official", help="AM tone curve (default: official)")
  parser.add_argument("--dot", choices=halftone.DOTS, default="white",
                      help="AM dot colour (default: white)")
  parser.add_argument("--supersample", type=int, default=4,
                      help="AM antialiasing grid per pixel side (default: 4)")
  parser.add_argument("--binary", action="store_true",
                      help="AM: output exactly 0/1 (no antialiasing)")
  parser.add_argument("--size", type=int, choices=(2, 4, 8), default=8,
                      help="Bayer matrix size (default: 8)")
  parser.add_argument("--serpentine", action="store_true",
                      help="error diffusion: alternate row direction")
  parser.add_argument("--color", action="store_true",
                      help="halftone R, G and B separately (colour halftone)")
  parser.add_argument("--blur", type=float, default=0.0,
                      help="Gaussian blur sigma after halftoning (default: 0)")
  parser.add_argument("--noise", type=float, default=0.0,
                      help="additive Gaussian noise std (default: 0)")
  parser.add_argument("--jpeg", type=int, default=None,
                      help="JPEG-compress at this quality (default: off)")
  parser.add_argument("--seed", type=int, default=0,
                      help="random seed for the noise (default: 0)")
  return parser


def _load(path: pathlib.Path, color: bool) -> np.ndarray:
  try:
    with Image.open(path) as image:
      image = image.convert("RGB" if color else "L")
      pixels = np.asarray(image, np.float32) / 255.0
  except (OSError, ValueError, Image.DecompressionBombError) as error:
    raise HalftoneError(f"cannot read image: {error}") from None
  return pixels if color else pixels[..., None]


def halftone_image(pixels: np.ndarray, args: argparse.Namespace,
                   key: jax.Array) -> np.ndarray:
  """Halftones one [H,W,C] float image in [0, 1] as the arguments say.

  Args:
    pixels: [H,W,1] gray or [H,W,3] RGB, float in [0, 1].
    args: parsed `ihc-halftone` arguments.
    key: a `jax.random` key for the degradations.

  Returns:
    [H,W,C] float32 in [0, 1].
  """
  batch = jnp.asarray(pixels)[None]
  if args.method == "am":
    options = dict(supersample=args.supersample, binary=args.binary,
                   dot=args.dot, tone_curve=args.tone_curve)
    if args.color:
      out = halftone.am_screen_color(batch, period=args.period,
                                     angles=args.angles, **options)
    else:
      out = halftone.am_screen(batch, period=args.period, angle=args.angle,
                               **options)
  elif args.method == "bayer":
    out = halftone.ordered_dither(batch, size=args.size)
  else:
    kernel = "floyd_steinberg" if args.method == "fs" else "jarvis"
    out = halftone.error_diffusion(batch, kernel=kernel,
                                   serpentine=args.serpentine)
  out = halftone.degrade(out, key, blur_sigma=args.blur, noise_std=args.noise,
                         jpeg_quality=args.jpeg)
  return np.asarray(out[0])


def _save_atomic(pixels: np.ndarray, path: pathlib.Path) -> None:
  path.parent.mkdir(parents=True, exist_ok=True)
  data = np.clip(np.rint(pixels * 255.0), 0, 255).astype(np.uint8)
  image = Image.fromarray(data[..., 0] if data.shape[-1] == 1 else data)
  image_format = Image.registered_extensions().get(path.suffix.lower(), "PNG")
  handle, temp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp",
                                       dir=path.parent)
  try:
    with os.fdopen(handle, "wb") as stream:
      image.save(stream, format=image_format)
    os.replace(temp_name, path)
  except BaseException:
    if os.path.exists(temp_name):
      os.remove(temp_name)
    raise


def _same_file(a: pathlib.Path, b: pathlib.Path) -> bool:
  return a.resolve() == b.resolve() or (
      a.exists() and b.exists() and os.path.samefile(a, b))


def _process(source: pathlib.Path, target: pathlib.Path,
             args: argparse.Namespace, key: jax.Array) -> None:
  if _same_file(source, target):
    raise HalftoneError(f"refusing to overwrite the input with {target}")
  pixels = _load(source, args.color)
  try:
    _save_atomic(halftone_image(pixels, args, key), target)
  except OSError as error:
    raise HalftoneError(f"cannot write {target}: {error}") from None


def _folder_jobs(root: pathlib.Path, out_root: pathlib.Path
                 ) -> list[tuple[pathlib.Path, pathlib.Path]]:
  out_resolved = out_root.resolve()
  jobs = []
  for dirpath, dirnames, filenames in os.walk(root):
    directory = pathlib.Path(dirpath)
    # Do not descend into the output folder when it lies inside the input.
    dirnames[:] = sorted(d for d in dirnames
                         if (directory / d).resolve() != out_resolved)
    for name in sorted(filenames):
      source = directory / name
      if source.suffix.lower() in IMAGE_SUFFIXES:
        jobs.append((source, out_root / source.relative_to(root).with_suffix(".png")))
  return jobs


def main(argv: Sequence[str] | None = None) -> int:
  """Runs `ihc-halftone`; returns the exit status (0 ok, 1 some file failed)."""
  args = build_parser().parse_args(argv)
  source, target = pathlib.Path(args.input), pathlib.Path(args.output)
  if args.jpeg is not None and not 1 <= args.jpeg <= 100:
    print(f"{PROG}: error: --jpeg must be in 1..100; got {args.jpeg}",
          file=sys.stderr)
    return 1
  if args.supersample < 1:
    print(f"{PROG}: error: --supersample must be >= 1; got {args.supersample}",
          file=sys.stderr)
    return 1
  if not source.exists():
    print(f"{PROG}: error: {source}: no such file or folder", file=sys.stderr)
    return 1
  if source.is_dir():
    if target.exists() and not target.is_dir():
      print(f"{PROG}: error: {target}: output must be a folder when the input "
            "is a folder", file=sys.stderr)
      return 1
    jobs = _folder_jobs(source, target)
    if not jobs:
      print(f"{PROG}: error: {source}: no images found", file=sys.stderr)
      return 1
  else:
    if target.is_dir():
      target = target / source.with_suffix(".png").name
    jobs = [(source, target)]

  key = jax.random.PRNGKey(args.seed)
  failures, written = 0, set()
  for index, (src, dst) in enumerate(jobs):
    try:
      if dst.resolve() in written:
        raise HalftoneError(f"output {dst} already written from another input")
      _process(src, dst, args, jax.random.fold_in(key, index))
      written.add(dst.resolve())
    except HalftoneError as error:
      failures += 1
      print(f"{PROG}: error: {src}: {error}", file=sys.stderr)
  if len(jobs) > 1:
    print(f"{PROG}: {len(jobs) - failures} of {len(jobs)} images written to "
          f"{target}", file=sys.stderr)
  return 1 if failures else 0


if __name__ == "__main__":
  sys.exit(main())
