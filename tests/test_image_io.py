"""Tests for ihc_jax.image_io: every bad input gets one clear line."""

import logging
import os

import numpy as np
import pytest
from PIL import Image

from ihc_jax import image_io
from ihc_jax.image_io import ImageError


def _rgb(h=32, w=40, seed=0):
  rng = np.random.default_rng(seed)
  return (rng.random((h, w, 3)) * 255).astype(np.uint8)


def _assert_one_line(excinfo, path, *words):
  message = str(excinfo.value)
  assert "\n" not in message
  assert message.startswith(os.fspath(path))
  for word in words:
    assert word in message, message


def test_reads_rgb_and_gray_png(tmp_path):
  pixels = _rgb()
  Image.fromarray(pixels).save(tmp_path / "a.png")
  rgb = image_io.read_image(tmp_path / "a.png")
  assert rgb.dtype == np.float32 and rgb.shape == (32, 40, 3)
  np.testing.assert_allclose(rgb, pixels / 255.0, atol=1e-7)
  gray = image_io.read_image(tmp_path / "a.png", channels=1)
  want = pixels.astype(np.float32) @ np.float32([0.299, 0.587, 0.114]) / 255
  np.testing.assert_allclose(gray[..., 0], want, atol=1e-5)


@pytest.mark.parametrize("kind,words", [
    ("missing", ["no such file"]),
    ("directory", ["is a directory"]),
    ("empty", ["empty", "0 bytes"]),
    ("truncated_png", ["truncated"]),
    ("truncated_jpg", ["truncated"]),
    ("not_image", ["not an image"]),
    ("tiny", ["1x1", "minimum is 16x16"]),
    ("huge", ["20001x16", "limit is 20000"]),
])
def test_bad_inputs_raise_one_line(tmp_path, kind, words):
  path = tmp_path / "bad.png"
  if kind == "directory":
    path.mkdir()
  elif kind == "empty":
    path.write_bytes(b"")
  elif kind in ("truncated_png", "truncated_jpg"):
    fmt = "PNG" if kind == "truncated_png" else "JPEG"
    path = tmp_path / ("bad.png" if fmt == "PNG" else "bad.jpg")
    Image.fromarray(_rgb(64, 64)).save(path, format=fmt)
    data = path.read_bytes()
    path.write_bytes(data[:len(data) * 2 // 3])
  elif kind == "not_image":
    path.write_text("this is a text file, not a PNG\n")
  elif kind == "tiny":
    Image.new("L", (1, 1)).save(path)
  elif kind == "huge":
    Image.new("L", (20001, 16)).save(path)  # 99 bytes of PNG; header check
  with pytest.raises(ImageError) as excinfo:
    image_io.read_image(path)
  _assert_one_line(excinfo, path, *words)


def test_decompression_bomb_guard_kept(tmp_path, monkeypatch):
  Image.new("L", (64, 64)).save(tmp_path / "b.png")
  monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
  with pytest.raises(ImageError) as excinfo:
    image_io.read_image(tmp_path / "b.png")
  _assert_one_line(excinfo, tmp_path / "b.png", "decompression-bomb")


def test_rgba_composited_on_white(tmp_path, caplog):
  rgba = np.zeros((16, 16, 4), np.uint8)
  rgba[..., 0] = 255
  rgba[:8, :, 3] = 255  # top half opaque red, bottom half transparent
  Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
  with caplog.at_level(logging.INFO, logger="ihc_jax.image_io"):
    out = image_io.read_image(tmp_path / "a.png")
  np.testing.assert_allclose(out[0, 0], [1, 0, 0])
  np.testing.assert_allclose(out[15, 0], [1, 1, 1])
  assert "composited on white" in caplog.text


def test_16bit_png_scaled(tmp_path, caplog):
  values = np.full((16, 16), 65535, np.uint16)
  values[0, 0] = 0
  values[0, 1] = 32768
  Image.fromarray(values).save(tmp_path / "g16.png")
  with caplog.at_level(logging.INFO, logger="ihc_jax.image_io"):
    out = image_io.read_image(tmp_path / "g16.png", channels=1)
  assert out.shape == (16, 16, 1)
  np.testing.assert_allclose(out[0, :3, 0], [0, 32768 / 65535, 1], atol=1e-7)
  assert "16-bit" in caplog.text


def test_cmyk_jpeg_converted(tmp_path, caplog):
  Image.new("CMYK", (16, 16), (0, 255, 255, 0)).save(tmp_path / "c.jpg",
                                                     quality=95)
  with caplog.at_level(logging.INFO, logger="ihc_jax.image_io"):
    out = image_io.read_image(tmp_path / "c.jpg")
  # Full magenta + yellow, no cyan/black = red.
  np.testing.assert_allclose(out.mean(axis=(0, 1)), [1, 0, 0], atol=0.03)
  assert "CMYK" in caplog.text


def test_palette_and_exif_orientation(tmp_path):
  pixels = _rgb(16, 24)
  Image.fromarray(pixels).convert("P").save(tmp_path / "p.png")
  assert image_io.read_image(tmp_path / "p.png").shape == (16, 24, 3)
  img = Image.fromarray(pixels)
  exif = img.getexif()
  exif[0x0112] = 6  # rotate 90 degrees clockwise on display
  img.save(tmp_path / "r.jpg", exif=exif, quality=95)
  assert image_io.read_image(tmp_path / "r.jpg").shape == (24, 16, 3)


def test_write_round_trip_clips_and_is_atomic(tmp_path):
  image = np.array([[-0.5, 0.0], [0.5, 2.0]], np.float32)
  image = np.tile(image, (8, 8))[..., None]
  out = tmp_path / "sub" / "o.png"
  image_io.write_image(out, image)
  back = np.asarray(Image.open(out))
  np.testing.assert_array_equal(back[:2, :2], [[0, 0], [128, 255]])
  assert sorted(os.listdir(out.parent)) == ["o.png"]  # no temporary left


def test_write_never_overwrites_input(tmp_path):
  Image.fromarray(_rgb()).save(tmp_path / "in.png")
  before = (tmp_path / "in.png").read_bytes()
  with pytest.raises(ImageError) as excinfo:
    image_io.write_image(tmp_path / "in.png", np.zeros((16, 16, 3)),
                         protect=[tmp_path / "in.png"])
  _assert_one_line(excinfo, tmp_path / "in.png", "overwrite an input")
  assert (tmp_path / "in.png").read_bytes() == before


def test_write_unwritable_folder(tmp_path):
  # Tests run as root, so permissions cannot block: a file as parent can.
  (tmp_path / "afile").write_text("x")
  target = tmp_path / "afile" / "out" / "o.png"
  with pytest.raises(ImageError) as excinfo:
    image_io.write_image(target, np.zeros((16, 16, 3)))
  _assert_one_line(excinfo, target, "cannot create output folder")
  assert (tmp_path / "afile").read_text() == "x"


def test_write_failure_leaves_no_partial_output(tmp_path, monkeypatch):
  def fail(*args, **kwargs):
    raise OSError(28, "No space left on device")

  monkeypatch.setattr(Image.Image, "save", fail)
  with pytest.raises(ImageError, match="No space left"):
    image_io.write_image(tmp_path / "o.png", np.zeros((16, 16, 3)))
  assert os.listdir(tmp_path) == []


def test_list_image_files_recursive(tmp_path):
  (tmp_path / "a" / "b").mkdir(parents=True)
  (tmp_path / ".hidden").mkdir()
  for p in ["x.png", "a/y.JPG", "a/b/z.tif", "a/notes.txt", ".hidden/h.png",
            "a/.h.png"]:
    (tmp_path / p).write_bytes(b"x")
  found = [os.path.relpath(p, tmp_path)
           for p in image_io.list_image_files(tmp_path)]
  # Sorted by relative path, as the training data's folder source needs.
  assert found == ["a/b/z.tif", "a/y.JPG", "x.png"]
  with pytest.raises(FileNotFoundError, match="does not exist"):
    image_io.list_image_files(tmp_path / "missing")


def _mixed_folder(root):
  """One decodable image per extension (several cases), plus non-images."""
  (root / "sub").mkdir(parents=True)
  pixels = _rgb(20, 24)
  saved = {"a.png": "PNG", "sub/b.JPG": "JPEG", "c.jpeg": "JPEG",
           "sub/d.bmp": "BMP", "e.gif": "GIF", "sub/f.TIF": "TIFF",
           "g.tiff": "TIFF", "h.webp": "WEBP", "sub/i.ppm": "PPM"}
  for name, image_format in saved.items():
    Image.fromarray(pixels).save(root / name, format=image_format)
  Image.fromarray(pixels).convert("L").save(root / "j.pgm", format="PPM")
  Image.fromarray(pixels).convert("1").save(root / "k.pbm", format="PPM")
  Image.fromarray(pixels).save(root / "l.pnm", format="PPM")
  (root / "notes.txt").write_text("not an image")
  (root / "m.psd").write_bytes(b"x")
  Image.fromarray(pixels).save(root / ".hidden.png")
  return sorted(list(saved) + ["j.pgm", "k.pbm", "l.pnm"])


def test_cli_and_training_list_the_same_files(tmp_path):
  from ihc_jax import cli  # pylint: disable=g-import-not-at-top
  from ihc_jax import input_pipeline  # pylint: disable=g-import-not-at-top
  from ihc_jax.data import sources  # pylint: disable=g-import-not-at-top
  expected = _mixed_folder(tmp_path / "mixed")
  root = str(tmp_path / "mixed")
  assert input_pipeline.list_image_files is image_io.list_image_files
  jobs, failures = cli.collect_inputs([root], str(tmp_path / "out"))
  assert not failures
  cli_files = [os.path.relpath(f, root) for f, _ in jobs]
  config = input_pipeline.default_data_config()
  config.source = f"folder:{root}"
  config.eval_source = f"folder:{root}"
  config.image_size = 16
  train = sources.build_sources(config, 0, 1).train
  train_files = [os.path.relpath(f, root) for f in train.items]
  assert cli_files == train_files == expected
  # Every listed file is an image both readers decode, to the same pixels.
  for name in expected:
    path = os.path.join(root, name)
    cli_pixels = image_io.read_image(path)
    with open(path, "rb") as f:
      train_pixels = image_io.decode_image(f.read()).astype(np.float32) / 255
    np.testing.assert_array_equal(cli_pixels, train_pixels, err_msg=name)


@pytest.mark.parametrize("mode", ["RGB", "L", "1", "P", "RGBA", "LA", "PA",
                                  "CMYK", "I;16", "F"])
def test_training_decode_and_cli_read_share_the_pixel_decoder(tmp_path, mode):
  rgba = np.concatenate([_rgb(16, 20), _rgb(16, 20, seed=1)[..., :1]], -1)
  image = Image.fromarray(rgba, "RGBA")
  if mode == "I;16":
    image = Image.fromarray(
        (np.asarray(image.convert("L"), np.uint16) * 257).astype(np.uint16))
  elif mode == "F":
    image = Image.fromarray(np.asarray(image.convert("L"), np.float32) / 255)
  elif mode == "PA":
    image = image.convert("P").convert("PA")
  elif mode != "RGBA":
    image = image.convert(mode)
  path = tmp_path / ("a.jpg" if mode == "CMYK" else
                     "a.tif" if mode in ("F", "PA") else "a.png")
  image.save(path)
  cli_pixels = image_io.read_image(path)
  train_pixels = image_io.decode_image(path.read_bytes())
  assert train_pixels.shape == cli_pixels.shape == (16, 20, 3)
  if train_pixels.dtype == np.uint8:
    train_pixels = train_pixels.astype(np.float32) / 255
  # Composited 8-bit images (RGBA converted to P keeps a transparent
  # index) go back to 8 bits for training: at most half a level apart.
  tolerance = 0.5 / 255 + 1e-6 if mode in ("RGBA", "LA", "P", "PA") else 0
  np.testing.assert_allclose(train_pixels, cli_pixels, rtol=0,
                             atol=tolerance)
  with Image.open(path) as loaded:
    loaded.load()
    pixels = image_io.pil_to_array(loaded)
  assert pixels.shape[-1] == (1 if mode in ("L", "1", "LA", "I;16", "F")
                              else 3)


def test_unusable_pixel_data_is_an_image_error():
  with pytest.raises(ImageError, match="NaN"):
    image_io.pil_to_array(Image.fromarray(np.full((4, 4), np.nan,
                                                  np.float32)))
  assert ImageError in image_io.DECODE_ERRORS
