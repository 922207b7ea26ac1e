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
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".gif",
                    ".webp", ".ppm", ".pgm", ".pbm", ".pnm")
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


def _to_float(path: str, img: Image.Image) -> np.ndarray:
  """Converts a loaded PIL image to float32 [H, W, 1|3] in [0, 1]."""
  mode = img.mode
  if mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):
    data = np.asarray(img).astype(np.float32)
    if data.max(initial=0) > 65535 or data.min(initial=0) < 0:
      raise ImageError(path, "32-bit integer image with values outside "
                       "[0, 65535] is not supported")
    logger.info("%s: 16-bit image scaled to [0, 1]", path)
    return (data / 65535.0)[..., None]
  if mode == "F":
    data = np.asarray(img, dtype=np.float32)
    if not np.all(np.isfinite(data)):
      raise ImageError(path, "floating-point image contains NaN or inf")
    if data.min() < 0 or data.max() > 1:
      logger.info("%s: floating-point image clipped to [0, 1]", path)
    return np.clip(data, 0.0, 1.0)[..., None]
  if mode == "P":
    img = img.convert("RGBA" if "transparency" in img.info else "RGB")
    mode = img.mode
  if mode in ("RGBA", "LA", "PA", "La", "RGBa"):
    logger.info("%s: transparent image composited on white", path)
    rgba = np.asarray(img.convert("RGBA"), dtype=np.float32) / 255.0
    alpha = rgba[..., 3:]
    rgb = rgba[..., :3] * alpha + (1.0 - alpha)
    return rgb if mode in ("RGBA", "PA", "RGBa") else rgb[..., :1]
  if mode == "CMYK":
    logger.info("%s: CMYK image converted to RGB", path)
    img = img.convert("RGB")
  elif mode == "1":
    img = img.convert("L")
  elif mode not in ("L", "RGB"):
    logger.info("%s: %s image converted to RGB", path, mode)
    img = img.convert("RGB")
  data = np.asarray(img, dtype=np.float32) / 255.0
  return data[..., None] if data.ndim == 2 else data


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
        data = _to_float(path, img)
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


def list_images(folder: str | os.PathLike) -> list[str]:
  """Image files (by extension) under `folder`, recursively, sorted.

  Hidden files and folders (names starting with '.') are skipped.
  """
  found = []
  for root, dirs, files in os.walk(os.fspath(folder)):
    dirs[:] = sorted(d for d in dirs if not d.startswith("."))
    for name in sorted(files):
      if (not name.startswith(".")
          and os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS):
        found.append(os.path.join(root, name))
  return found


# --------------------------------------------------------------------------
# Decoding and listing for the training data (ihc_jax.data).

TRAIN_IMAGE_EXTENSIONS = (".bmp", ".jpeg", ".jpg", ".png", ".tif", ".tiff",
                          ".webp")
# Errors PIL raises for unreadable or broken image data.
DECODE_ERRORS = (OSError, ValueError, SyntaxError, EOFError,
                 Image.DecompressionBombError)


def _pil_to_array(image: Image.Image) -> np.ndarray:
  """PIL image -> uint8 [H,W,3] or float32 [H,W,3] in [0, 1]."""
  if image.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
    # 16-bit gray (PNG/TIFF): full scale is 65535.
    gray = np.asarray(image, dtype=np.float32) / 65535.0
    return np.repeat(np.clip(gray, 0.0, 1.0)[..., None], 3, axis=-1)
  if image.mode == "F":
    # Float TIFFs are taken to be in [0, 1] already.
    gray = np.asarray(image, dtype=np.float32)
    return np.repeat(np.clip(gray, 0.0, 1.0)[..., None], 3, axis=-1)
  has_alpha = image.mode in ("RGBA", "LA", "PA", "La", "RGBa") or (
      image.mode == "P" and "transparency" in image.info)
  if has_alpha:
    # Composite on white: fully transparent pixels often hold black RGB.
    rgba = np.asarray(image.convert("RGBA"), dtype=np.float32) / 255.0
    alpha = rgba[..., 3:]
    rgb = rgba[..., :3] * alpha + (1.0 - alpha)
    return np.round(rgb * 255.0).astype(np.uint8)
  return np.asarray(image.convert("RGB"), dtype=np.uint8)


def decode_image(data: bytes, min_short_side: int | None = None) -> np.ndarray:
  """Decodes encoded image bytes to RGB.

  Gray images are replicated to three channels, RGBA is composited on white,
  16-bit gray is scaled by 1/65535 (PIL reduces 16-bit colour PNGs to 8 bits).

  Args:
    data: the encoded file contents.
    min_short_side: if set, JPEGs may be decoded at a reduced scale (DCT
      scaling, 1/2 to 1/8) as long as the shorter side stays >= this; much
      faster for large photographs that are shrunk anyway.

  Returns:
    uint8 [H,W,3] (8-bit sources) or float32 [H,W,3] in [0, 1].

  Raises:
    OSError, ValueError, SyntaxError, EOFError: unreadable data.
  """
  with Image.open(io.BytesIO(data)) as image:
    if min_short_side and image.format == "JPEG":
      width, height = image.size
      scale = min_short_side / min(width, height)
      if scale < 1:
        image.draft("RGB", (int(np.ceil(width * scale)),
                            int(np.ceil(height * scale))))
    image.load()
    array = _pil_to_array(image)
  if array.shape[0] < 1 or array.shape[1] < 1:
    raise ValueError(f"empty image of shape {array.shape}")
  return array


def list_image_files(root: str) -> list[str]:
  """Image files below `root`, recursive, sorted by relative path.

  Args:
    root: a folder.

  Returns:
    Absolute paths of files with an image extension (any case).

  Raises:
    FileNotFoundError: `root` is not a folder.
  """
  if not os.path.isdir(root):
    raise FileNotFoundError(f"image folder {root!r} does not exist")
  found = []
  for directory, _, files in os.walk(root):
    for name in files:
      if os.path.splitext(name)[1].lower() in TRAIN_IMAGE_EXTENSIONS:
        found.append(os.path.relpath(os.path.join(directory, name), root))
  return [os.path.join(os.path.abspath(root), rel) for rel in sorted(found)]
