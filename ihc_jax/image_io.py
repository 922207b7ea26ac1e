"""Robust reading and atomic writing of images for inference.

`read_image` turns whatever a scanner or an archive hands over (colour, gray,
RGBA, palette, 16-bit, CMYK JPEG, EXIF-rotated) into a float32 [H, W, C] array
in [0, 1], and turns every way a file can be unusable into one `ImageError`
whose message is a single line naming the file and the problem. Conversions
that change the data (alpha composited on white, 16-bit scaled, CMYK
converted) are logged as notes.

`write_image` writes atomically (temporary name in the destination folder,
then `os.replace`), so a crash never leaves a half-written output, and it
refuses to overwrite any file listed as an input.

Size limits: images smaller than `MIN_SIDE` px on a side are refused (too few
halftone cells to infer anything), as are images larger than `MAX_SIDE` px on
a side. Pillow's decompression-bomb guard (`PIL.Image.MAX_IMAGE_PIXELS`,
about 89 Mpx warns, twice that refuses) is left in place; an image it refuses
is reported as an `ImageError` too. Both checks run on the header, before any
pixel is decoded.

The training data (`ihc_jax.data`) and the CLIs share this module's lister,
`list_image_files` (`IMAGE_EXTENSIONS`, hidden files skipped), and its
pixel decoder, `pil_to_array`; the training stream reads encoded bytes with
`decode_image` (RGB, 8-bit data kept as uint8, JPEG draft scaling, no EXIF
rotation, as the native TensorFlow path), the CLI files with `read_image`.
"""

from __future__ import annotations

import io
import logging
import os
import tempfile
import warnings
from collections.abc import Iterable

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

logger = logging.getLogger(__name__)

MIN_SIDE = 16
MAX_SIDE = 20000
# Every extension the training data or the CLI reads (by PIL, any case).
IMAGE_EXTENSIONS = (".bmp", ".gif", ".jpeg", ".jpg", ".pbm", ".pgm", ".png",
                    ".pnm", ".ppm", ".tif", ".tiff", ".webp")
# Modes of 16-bit (or 32-bit) integer and floating-point data.
_INT_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")
_ALPHA_MODES = ("RGBA", "LA", "PA", "La", "RGBa")
_SAVE_FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG",
                 ".tif": "TIFF", ".tiff": "TIFF", ".bmp": "BMP",
                 ".webp": "WEBP"}


class ImageError(Exception):
  """An image file that cannot be read or written; `str()` is one line."""

  def __init__(self, path: str | os.PathLike, problem: str):
    self.path = os.fspath(path)
    self.problem = " ".join(str(problem).split())
    super().__init__(f"{self.path}: {self.problem}")


def _check_file(path: str) -> None:
  if not os.path.lexists(path):
    raise ImageError(path, "no such file")
  if os.path.isdir(path):
    raise ImageError(path, "is a directory, expected an image file")
  if not os.path.isfile(path):
    raise ImageError(path, "is not a regular file (broken link or device)")
  if os.path.getsize(path) == 0:
    raise ImageError(path, "file is empty (0 bytes)")
  if not os.access(path, os.R_OK):
    raise ImageError(path, "cannot be read (permission denied)")


def _check_size(path: str, width: int, height: int) -> None:
  if width < MIN_SIDE or height < MIN_SIDE:
    raise ImageError(
        path, f"image is {width}x{height} px, too small; the minimum is "
        f"{MIN_SIDE}x{MIN_SIDE} px")
  if width > MAX_SIDE or height > MAX_SIDE:
    raise ImageError(
        path, f"image is {width}x{height} px, too large; the limit is "
        f"{MAX_SIDE} px on a side (crop or downscale the scan first)")


def pil_to_array(image: Image.Image, *, path: str = "image data",
                 log_notes: bool = False) -> np.ndarray:
  """Converts a loaded PIL image to an array on the [0, 1] scale.

  The one pixel decoder of ihc_jax (training data and CLI). Transparent
  images are composited on white (transparent pixels often hold black RGB),
  16-bit gray is scaled by 1/65535, palette, CMYK and other modes are
  converted to RGB.

  Args:
    image: a loaded PIL image.
    path: names the image in errors and notes.
    log_notes: log (INFO) the conversions that change the data.

  Returns:
    uint8 [H,W,1|3] for 8-bit data (0..255), float32 [H,W,1|3] in [0, 1]
    for 16-bit, floating-point and composited images; one channel for gray
    modes (L, 1, LA, La, I;16, I, F), three otherwise.

  Raises:
    ImageError: integer data outside [0, 65535], or NaN/inf in a float image.
  """
  def note(message: str) -> None:
    if log_notes:
      logger.info("%s: %s", path, message)

  mode = image.mode
  if mode in _INT_MODES:
    data = np.asarray(image).astype(np.float32)
    if data.max(initial=0) > 65535 or data.min(initial=0) < 0:
      raise ImageError(path, "32-bit integer image with values outside "
                       "[0, 65535] is not supported")
    note("16-bit image scaled to [0, 1]")
    return (data / 65535.0)[..., None]
  if mode == "F":
    data = np.asarray(image, dtype=np.float32)
    if not np.all(np.isfinite(data)):
      raise ImageError(path, "floating-point image contains NaN or inf")
    if np.any(data < 0) or np.any(data > 1):
      note("floating-point image clipped to [0, 1]")
    return np.clip(data, 0.0, 1.0)[..., None]
  if mode == "P":
    image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    mode = image.mode
  if mode in _ALPHA_MODES:
    note("transparent image composited on white")
    rgba = np.asarray(image.convert("RGBA"), dtype=np.float32) / 255.0
    alpha = rgba[..., 3:]
    rgb = rgba[..., :3] * alpha + (1.0 - alpha)
    return rgb if mode in ("RGBA", "PA", "RGBa") else rgb[..., :1]
  if mode == "CMYK":
    note("CMYK image converted to RGB")
    image = image.convert("RGB")
  elif mode == "1":
    image = image.convert("L")
  elif mode not in ("L", "RGB"):
    note(f"{mode} image converted to RGB")
    image = image.convert("RGB")
  data = np.asarray(image, dtype=np.uint8)
  return data[..., None] if data.ndim == 2 else data


def _unit_float(data: np.ndarray) -> np.ndarray:
  if data.dtype == np.uint8:
    return data.astype(np.float32) / 255.0
  return data


def _to_channels(data: np.ndarray, channels: int, path: str) -> np.ndarray:
  if data.shape[-1] == channels:
    return data
  if channels == 1:
    logger.info("%s: colour image converted to gray (ITU-R 601 luma)", path)
    luma = data @ np.asarray([0.299, 0.587, 0.114], np.float32)
    return luma[..., None].astype(np.float32)
  return np.repeat(data, 3, axis=-1)


def read_image(path: str | os.PathLike, *, channels: int = 3) -> np.ndarray:
  """Reads an image file fully into float32 [H, W, channels] in [0, 1].

  Args:
    path: the image file.
    channels: 1 (gray, ITU-R 601 luma) or 3 (RGB).

  Returns:
    The decoded image, EXIF orientation applied.

  Raises:
    ImageError: the file is missing, a directory, empty, truncated, not an
      image, smaller than `MIN_SIDE` or larger than `MAX_SIDE` px on a side,
      or refused by Pillow's decompression-bomb guard.
  """
  if channels not in (1, 3):
    raise ValueError(f"channels must be 1 or 3, got {channels}")
  path = os.fspath(path)
  _check_file(path)
  try:
    with warnings.catch_warnings():
      warnings.simplefilter("error", Image.DecompressionBombWarning)
      with Image.open(path) as img:
        _check_size(path, *img.size)
        img.load()
        img = ImageOps.exif_transpose(img)
        data = _unit_float(pil_to_array(img, path=path, log_notes=True))
  except ImageError:
    raise
  except UnidentifiedImageError:
    raise ImageError(path, "not an image file Pillow can read (unknown or "
                     "damaged format)") from None
  except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
    raise ImageError(path, f"refused by Pillow's decompression-bomb guard "
                     f"({e})") from None
  except PermissionError:
    raise ImageError(path, "cannot be read (permission denied)") from None
  except (OSError, SyntaxError, ValueError, EOFError) as e:
    raise ImageError(path, f"truncated or corrupt image data ({e})") from None
  return _to_channels(data, channels, path)


def _same_file(a: str, b: str) -> bool:
  if os.path.realpath(a) == os.path.realpath(b):
    return True
  try:
    return os.path.samefile(a, b)
  except OSError:
    return False


def write_image(path: str | os.PathLike, image: np.ndarray, *,
                protect: Iterable[str | os.PathLike] = ()) -> None:
  """Writes float [H, W, 1|3] in [0, 1] as 8-bit, atomically.

  Values are clipped to [0, 1] and rounded (x * 255 + 0.5, as PyTorch's
  `save_image`). Missing parent folders are created.

  Args:
    path: destination; its extension picks the format (PNG, JPEG, ...).
    image: [H, W], [H, W, 1] or [H, W, 3] float array.
    protect: paths that must never be overwritten (the inputs).

  Raises:
    ImageError: the destination is a protected input, has an unknown
      extension, or its folder cannot be created or written.
  """
  path = os.fspath(path)
  image = np.asarray(image, dtype=np.float32)
  if image.ndim == 3 and image.shape[-1] == 1:
    image = image[..., 0]
  if image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[-1] != 3):
    raise ValueError(f"image must be [H, W], [H, W, 1] or [H, W, 3], got "
                     f"shape {image.shape}")
  ext = os.path.splitext(path)[1].lower()
  if ext not in _SAVE_FORMATS:
    raise ImageError(path, f"unknown output extension {ext!r}; use one of "
                     f"{', '.join(sorted(_SAVE_FORMATS))}")
  for p in protect:
    if os.path.exists(path) and _same_file(path, os.fspath(p)):
      raise ImageError(path, "refusing to overwrite an input image")
  folder = os.path.dirname(os.path.abspath(path))
  try:
    os.makedirs(folder, exist_ok=True)
  except (FileExistsError, NotADirectoryError):
    raise ImageError(path, f"cannot create output folder {folder}: a "
                     f"non-directory is in the way") from None
  except OSError as e:
    raise ImageError(path, f"cannot create output folder {folder} "
                     f"({e.strerror})") from None
  if os.path.isdir(path):
    raise ImageError(path, "output path is an existing directory")
  pixels = (np.clip(image, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
  try:
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-",
                               suffix=ext)
  except OSError as e:
    raise ImageError(path, f"cannot write in output folder {folder} "
                     f"({e.strerror})") from None
  try:
    with os.fdopen(fd, "wb") as f:
      Image.fromarray(pixels).save(f, format=_SAVE_FORMATS[ext])
    os.chmod(tmp, 0o644)  # mkstemp creates 0600; outputs are ordinary files.
    os.replace(tmp, path)
  except OSError as e:
    raise ImageError(path, f"cannot write ({e.strerror or e})") from None
  finally:
    if os.path.exists(tmp):
      os.remove(tmp)


# Errors that mean "unreadable image data" (the training data skips the file).
DECODE_ERRORS = (OSError, ValueError, SyntaxError, EOFError, ImageError,
                 Image.DecompressionBombError)


def decode_image(data: bytes, min_short_side: int | None = None) -> np.ndarray:
  """Decodes encoded image bytes to RGB (the training data's PIL path).

  Gray images are replicated to three channels, RGBA is composited on white
  (and rounded back to 8 bits), 16-bit gray is scaled by 1/65535 (PIL
  reduces 16-bit colour PNGs to 8 bits); see `pil_to_array`. No EXIF
  rotation, as in the native TensorFlow path.

  Args:
    data: the encoded file contents.
    min_short_side: if set, JPEGs may be decoded at a reduced scale (DCT
      scaling, 1/2 to 1/8) as long as the shorter side stays >= this; much
      faster for large photographs that are shrunk anyway.

  Returns:
    uint8 [H,W,3] (8-bit sources) or float32 [H,W,3] in [0, 1].

  Raises:
    One of `DECODE_ERRORS`: unreadable data.
  """
  with Image.open(io.BytesIO(data)) as image:
    if min_short_side and image.format == "JPEG":
      width, height = image.size
      scale = min_short_side / min(width, height)
      if scale < 1:
        image.draft("RGB", (int(np.ceil(width * scale)),
                            int(np.ceil(height * scale))))
    image.load()
    high_depth = image.mode in _INT_MODES or image.mode == "F"
    array = pil_to_array(image)
  if array.dtype != np.uint8 and not high_depth:
    # 8-bit data composited on white: back to 8 bits for the uint8 resize.
    array = np.round(array * 255.0).astype(np.uint8)
  if array.shape[-1] == 1:
    array = np.repeat(array, 3, axis=-1)
  if array.shape[0] < 1 or array.shape[1] < 1:
    raise ValueError(f"empty image of shape {array.shape}")
  return array


def list_image_files(root: str | os.PathLike) -> list[str]:
  """Image files below `root`, recursive, sorted by relative path.

  The one lister of image folders: `folder:` data sources,
  `ihc-prepare-dataset` and `ihc-colorize`. Files with an extension of
  `IMAGE_EXTENSIONS` (any case) count; hidden files and folders (names
  starting with '.') are skipped.

  Args:
    root: a folder.

  Returns:
    `os.path.join(root, relative path)` of every image file (absolute when
    `root` is).

  Raises:
    FileNotFoundError: `root` is not a folder.
  """
  root = os.fspath(root)
  if not os.path.isdir(root):
    raise FileNotFoundError(f"image folder {root!r} does not exist")
  found = []
  for directory, dirs, files in os.walk(root):
    dirs[:] = [d for d in dirs if not d.startswith(".")]
    for name in files:
      if (not name.startswith(".")
          and os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS):
        found.append(os.path.relpath(os.path.join(directory, name), root))
  return [os.path.join(root, rel) for rel in sorted(found)]
