"""`ihc-colorize`: colorize scanned halftone prints from the command line.

  ihc-colorize SCAN_OR_FOLDER [...] --checkpoint WEIGHTS [--reference IMG]
      [--samples N] [--seed S] [--out DIR] [--intermediates]
      [--screen-period auto|PX]

Also `python -m ihc_jax.cli`. A folder is searched recursively for images
(the output folder is skipped). Every file is processed on its own: a file
that fails is reported and the run goes on; the summary at the end lists
failures with their reasons and the exit status is 1 if any file failed
(2 for bad arguments, an unusable checkpoint or reference). Outputs are
`<stem>_ref.png` (reference colorization), `<stem>_rand{k}.png` (k = 1..N
random colorizations) and with `--intermediates` `<stem>_<name>.png` for the
IHN gray, the edge maps and each path's intermediate colour images; files
from a folder keep their sub-folder under `--out`. Outputs are written
atomically, inputs are never overwritten, and when a file fails its outputs
written so far are removed.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence

from ihc_jax import image_io

logger = logging.getLogger("ihc_jax.cli")
CHECKPOINT_ENV = "IHC_CHECKPOINT"


class _TqdmHandler(logging.Handler):
  """Logs through `tqdm.write` so notes do not break the progress bar."""

  def emit(self, record: logging.LogRecord) -> None:
    from tqdm import tqdm  # pylint: disable=g-import-not-at-top
    try:
      tqdm.write(self.format(record), file=sys.stderr)
    except Exception:  # pylint: disable=broad-except
      self.handleError(record)


def _screen_period(text: str) -> str | float:
  if text == "auto":
    return text
  try:
    value = float(text)
  except ValueError:
    raise argparse.ArgumentTypeError(
        f"must be 'auto' or a period in px, got {text!r}") from None
  if not 1.0 <= value <= 64.0:
    raise argparse.ArgumentTypeError(
        f"period must be between 1 and 64 px, got {value}")
  return value


def _non_negative(text: str) -> int:
  try:
    value = int(text)
  except ValueError:
    raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
  if value < 0:
    raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
  return value


def build_parser() -> argparse.ArgumentParser:
  """The argument parser of `ihc-colorize`."""
  parser = argparse.ArgumentParser(
      prog="ihc-colorize",
      description="Colorize black-and-white halftone prints (Inverse Halftone "
      "Colorization, ICIP 2021).")
  parser.add_argument("inputs", nargs="+", metavar="INPUT",
                      help="halftone scan(s) or folder(s), searched "
                      "recursively")
  parser.add_argument("--checkpoint", default=os.environ.get(CHECKPOINT_ENV),
                      help="a training workdir (ihn/, color/, fusion/) or a "
                      "folder of converted official weights (ihn.npz, "
                      "generator.npz, encoder.npz, fusion.npz); default $"
                      + CHECKPOINT_ENV)
  parser.add_argument("--reference", metavar="IMG",
                      help="colour exemplar image to take the colours from")
  parser.add_argument("--samples", type=_non_negative, default=None,
                      metavar="N", help="random colorizations per scan "
                      "(default 2 without --reference, 0 with it)")
  parser.add_argument("--seed", type=int, default=0,
                      help="seed of the random codes and noise (default 0)")
  parser.add_argument("--out", default="colorized", metavar="DIR",
                      help="output folder (default ./colorized)")
  parser.add_argument("--intermediates", action="store_true",
                      help="also save IHN gray, edge maps and the colour "
                      "images of both paths")
  parser.add_argument("--screen-period", type=_screen_period, default=None,
                      metavar="auto|PX",
                      help="rescale scans so their halftone dot pitch matches "
                      "the training data: 'auto' estimates it from the "
                      "spectrum, a number gives it in px (default: no "
                      "rescaling)")
  parser.add_argument("--reference-mode", choices=("sample", "mean"),
                      default="sample",
                      help="z of the reference: sampled from E's "
                      "distribution like the official test (default) or "
                      "its mean (deterministic)")
  parser.add_argument("--tile-batch", type=int, default=2, metavar="N",
                      help="tiles per network call; lower it to save memory "
                      "(default 2)")
  parser.add_argument("--dtype", choices=("float32", "bfloat16", "float16"),
                      default=None,
                      help="compute dtype of the networks (default: the "
                      "checkpoint's, float32 unless trained otherwise); "
                      "bfloat16 is faster on GPUs/TPUs, results differ "
                      "slightly")
  parser.add_argument("--format", choices=("png", "jpg", "tif"),
                      default="png", help="output format (default png)")
  parser.add_argument("-q", "--quiet", action="store_true",
                      help="no progress bar or notes")
  return parser


def _inside(path: str, folder: str) -> bool:
  path, folder = os.path.realpath(path), os.path.realpath(folder)
  return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


def collect_inputs(inputs: Sequence[str], out_dir: str
                   ) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
  """Expands files and folders into (file, output sub-folder) jobs.

  Args:
    inputs: files and folders given on the command line.
    out_dir: the output folder (never searched for inputs).

  Returns:
    (jobs, failures): jobs as (input file, relative output folder); failures
    as (path, reason) for arguments that are neither a file nor a folder
    holding images.
  """
  jobs, failures = [], []
  for item in inputs:
    if os.path.isdir(item):
      # Results of an earlier run in an --out folder below the input folder
      # are not inputs; an --out equal to the input folder excludes nothing.
      skip = (_inside(out_dir, item)
              and os.path.realpath(out_dir) != os.path.realpath(item))
      files = [f for f in image_io.list_image_files(item)
               if not (skip and _inside(f, out_dir))]
      if not files:
        failures.append((item, "folder holds no image files"))
      for f in files:
        jobs.append((f, os.path.dirname(os.path.relpath(f, item))))
    else:
      jobs.append((item, ""))  # read_image reports missing files
  return jobs, failures


def _colorize_file(pipeline, path: str, rel_dir: str, args, reference,
                   protect: list[str], taken: dict[str, str]) -> list[str]:
  """Colorizes one file and writes its outputs; returns the written paths."""
  from ihc_jax import inference  # pylint: disable=g-import-not-at-top
  halftone = image_io.read_image(path, channels=1)
  num_samples = args.samples if args.samples is not None else (
      0 if reference is not None else 2)
  try:
    result = pipeline.colorize(
        halftone[None], reference, num_samples=num_samples, seed=args.seed,
        reference_mode=args.reference_mode,
        return_intermediates=args.intermediates,
        screen_period=args.screen_period)
  except ValueError as e:
    raise image_io.ImageError(path, str(e)) from None
  stem = os.path.splitext(os.path.basename(path))[0]
  outputs = inference.list_outputs(stem, result, ext="." + args.format)
  targets = []
  for name, _ in outputs:
    target = os.path.normpath(os.path.join(args.out, rel_dir, name))
    if taken.get(target, path) != path:
      raise image_io.ImageError(
          path, f"output {target} would overwrite the result of "
          f"{taken[target]} (same name stem); rename one of them")
    targets.append(target)
  written = []
  try:
    for target, (_, image) in zip(targets, outputs):
      image_io.write_image(target, image, protect=protect)
      written.append(target)
      taken[target] = path
  except BaseException:
    # No partial set of outputs for a failed (or interrupted) file.
    for target in written:
      os.remove(target)
      taken.pop(target, None)
    raise
  return written


def main(argv: Sequence[str] | None = None) -> int:
  """Runs `ihc-colorize`.

  Args:
    argv: arguments without the program name (default `sys.argv[1:]`).

  Returns:
    0 if every file was colorized, 1 if any failed, 2 for unusable
    arguments, checkpoint or reference.
  """
  parser = build_parser()
  args = parser.parse_args(argv)
  handler = _TqdmHandler()
  handler.setFormatter(logging.Formatter("note: %(message)s"))
  package_logger = logging.getLogger("ihc_jax")
  saved = package_logger.level, package_logger.propagate
  package_logger.addHandler(handler)
  package_logger.setLevel(logging.WARNING if args.quiet else logging.INFO)
  package_logger.propagate = False
  try:
    return _run(parser, args)
  finally:
    package_logger.removeHandler(handler)
    package_logger.setLevel(saved[0])
    package_logger.propagate = saved[1]


def _error(message: str) -> int:
  print(f"ihc-colorize: error: {message}", file=sys.stderr)
  return 2


def _run(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
  """The body of `main` once logging is set up."""
  if not args.checkpoint:
    parser.print_usage(sys.stderr)
    return _error(f"--checkpoint is required (or set ${CHECKPOINT_ENV})")
  if args.tile_batch < 1:
    return _error(f"--tile-batch must be >= 1, got {args.tile_batch}")
  if args.samples == 0 and not args.reference:
    return _error("nothing to do: --samples 0 without --reference")
  try:
    os.makedirs(args.out, exist_ok=True)
  except OSError as e:
    reason = ("a non-directory is in the way"
              if isinstance(e, (FileExistsError, NotADirectoryError))
              else e.strerror)
    return _error(f"cannot create output folder {args.out}: {reason}")
  if not os.access(args.out, os.W_OK):
    return _error(f"output folder {args.out} is not writable")
  reference = None
  if args.reference:
    try:
      reference = image_io.read_image(args.reference, channels=3)
    except image_io.ImageError as e:
      return _error(f"reference {e}")
  jobs, failures = collect_inputs(args.inputs, args.out)
  if not jobs:
    for path, reason in failures:
      print(f"failed: {path}: {reason}", file=sys.stderr)
    return _error("no input images")
  from ihc_jax import inference  # pylint: disable=g-import-not-at-top
  try:
    pipeline = inference.Pipeline.load(args.checkpoint,
                                       tile_batch=args.tile_batch,
                                       dtype=args.dtype)
  except inference.PipelineError as e:
    return _error(str(e))
  if args.screen_period is not None and pipeline.trained_period is None:
    return _error(f"{args.checkpoint}: the training screen period is "
                  f"unknown, so --screen-period cannot be used")
  protect = [path for path, _ in jobs]
  if args.reference:
    protect.append(args.reference)
  from tqdm import tqdm  # pylint: disable=g-import-not-at-top
  done, taken = [], {}
  for path, rel_dir in tqdm(jobs, desc="colorizing", unit="file",
                            disable=args.quiet, file=sys.stderr):
    try:
      written = _colorize_file(pipeline, path, rel_dir, args, reference,
                               protect, taken)
    except image_io.ImageError as e:
      failures.append((e.path, e.problem))
      continue
    except Exception as e:  # pylint: disable=broad-except
      # One broken scan must not stop a folder run; the reason is reported.
      failures.append((path, f"{type(e).__name__}: "
                       f"{' '.join(str(e).split())}"))
      continue
    done.append((path, written))
  print(f"colorized {len(done)} of {len(done) + len(failures)} input(s) "
        f"into {args.out}", file=sys.stderr)
  for path, reason in failures:
    print(f"failed: {path}: {reason}", file=sys.stderr)
  return 1 if failures else 0


if __name__ == "__main__":
  sys.exit(main())
