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


def test_list_images_recursive(tmp_path):
  (tmp_path / "a" / "b").mkdir(parents=True)
  (tmp_path / ".hidden").mkdir()
  for p in ["x.png", "a/y.JPG", "a/b/z.tif", "a/notes.txt", ".hidden/h.png"]:
    (tmp_path / p).write_bytes(b"x")
  found = [os.path.relpath(p, tmp_path) for p in image_io.list_images(tmp_path)]
  assert found == ["x.png", "a/y.JPG", "a/b/z.tif"]
