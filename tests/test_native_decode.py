"""Native (TensorFlow-op) decoding equals the PIL path within stated bounds.

The PIL path (`input_pipeline._pil_random_crop`: PIL decode with JPEG draft
scaling, antialiased bilinear resize to short side S, crop) is the
reference. Tolerances, on [0, 255] values, measured on the demo photographs
at S = 256 (see docs/data.md):

* PNG: max |difference| <= 1 (PIL rounds its resize to uint8; TF does not);
  1.5 for small synthetic PNG/BMP/GIF/RGBA cases (RGBA is rounded twice).
* JPEG: mean |difference| <= 1.5 and max <= 16: the geometry is the same
  (draft scale, exact resampling offsets, filter margin), what remains is
  libjpeg's rounding in TF's and Pillow's builds (their full decodes of
  china.jpg differ by 1.3 on average, 18 at most).
"""

import io
import os

import numpy as np
from PIL import Image
import pytest
import tensorflow as tf

from ihc_jax import input_pipeline
from ihc_jax.data import decode
from ihc_jax.data import demo

SIZE = 256
DRAWS = [(0.1, 0.7, 0.9), (0.99, 0.0, 0.9), (0.5, 0.5, 0.2)]


def _native(data, uniforms, size=SIZE, flip=False):
  return decode.native_random_crop(tf.constant(data), size,
                                   tf.constant(np.float32(uniforms)),
                                   flip).numpy()


def _pil(data, uniforms, size=SIZE, flip=False):
  return input_pipeline._pil_random_crop(b"test", data, np.float32(uniforms),
                                         size, flip)


@pytest.mark.parametrize("name", demo.available_names("all"))
def test_demo_photos_match_the_pil_path(name):
  path = demo.demo_image_path(name)
  with open(path, "rb") as f:
    data = f.read()
  for uniforms in DRAWS:
    native = _native(data, uniforms, flip=True)
    reference = _pil(data, uniforms, flip=True)
    assert native.shape == reference.shape == (SIZE, SIZE, 3)
    assert native.dtype == np.float32
    assert 0.0 <= native.min() and native.max() <= 1.0
    difference = np.abs(native - reference) * 255
    if path.endswith(".png"):
      assert difference.max() <= 1.0 + 1e-3, (name, difference.max())
    else:
      assert difference.mean() <= 1.5, (name, difference.mean())
      assert difference.max() <= 16.0, (name, difference.max())


def test_jpeg_draft_scale_is_the_one_pil_picks():
  ratio = lambda h, w, s: int(decode.jpeg_draft_ratio(h, w, s))  # pylint: disable=unnecessary-lambda-assignment
  # 600x512 to short side 256: 1/2 keeps 300x256; 1/4 would be too small.
  assert ratio(512, 600, 256) == 2
  assert ratio(480, 640, 256) == 1
  assert ratio(4000, 3000, 256) == 8
  assert ratio(100, 100, 256) == 1  # enlarged, never scaled


def _encode(array, fmt, **kwargs):
  buffer = io.BytesIO()
  Image.fromarray(array).save(buffer, fmt, **kwargs)
  return buffer.getvalue()


def test_formats_modes_and_ranges_match():
  rng = np.random.default_rng(0)
  rgb = (rng.random((40, 56, 3)) * 255).astype(np.uint8)
  rgba = np.concatenate([rgb, (rng.random((40, 56, 1)) * 255).astype(
      np.uint8)], axis=-1)
  cases = {
      "png": _encode(rgb, "PNG"),
      "gray png": _encode(rgb[..., 0], "PNG"),
      "rgba png (on white)": _encode(rgba, "PNG"),
      "16-bit gray png": _encode(
          (rng.random((40, 56)) * 65535).astype(np.uint16), "PNG"),
      "bmp": _encode(rgb, "BMP"),
      "gif": _encode(rgb[..., 0], "GIF"),
  }
  for name, data in cases.items():
    for uniforms in DRAWS:
      native = _native(data, uniforms, size=32, flip=True)
      reference = _pil(data, uniforms, size=32, flip=True)
      # The PIL path rounds to uint8 after compositing and after resizing.
      np.testing.assert_allclose(native, reference, atol=1.5 / 255,
                                 err_msg=name)


def test_cmyk_jpeg_is_refused_natively_and_read_by_pil(tmp_path):
  rgb = np.zeros((40, 40, 3), np.uint8)
  rgb[..., 0] = 200
  buffer = io.BytesIO()
  Image.fromarray(rgb).convert("CMYK").save(buffer, "JPEG", quality=95)
  data = buffer.getvalue()
  with pytest.raises(tf.errors.InvalidArgumentError, match="CMYK"):
    _native(data, DRAWS[0], size=32)
  # In the stream the PIL attempt reads it with the right colours.
  folder = tmp_path / "photos"
  folder.mkdir()
  (folder / "cmyk.jpg").write_bytes(data)
  Image.fromarray(rgb[..., ::-1].copy()).save(folder / "other.tiff")
  config = input_pipeline.default_data_config()
  config.source = f"folder:{folder}"
  config.eval_source = f"folder:{folder}"
  config.image_size = 32
  config.batch_size = 4
  config.num_parallel_calls = 1
  input_pipeline.reset_skipped_files()
  train, _ = input_pipeline.create_datasets(config, seed=0)
  images = next(train.as_numpy_iterator())["image"]
  reds = sorted(round(float(x[..., 0].mean()) * 255) for x in images)
  # Two of each (TIFF also goes through PIL); JPEG is lossy.
  assert abs(reds[0]) <= 3 and abs(reds[-1] - 200) <= 3
  assert input_pipeline.skipped_files() == ()


def test_folder_stream_resumes_exactly_across_unreadable_files(tmp_path):
  rng = np.random.default_rng(1)
  for i in range(7):
    pixels = (rng.random((30, 44, 3)) * 255).astype(np.uint8)
    Image.fromarray(pixels).save(tmp_path / f"photo{i}.jpg", quality=90)
  (tmp_path / "broken.jpg").write_bytes(
      (tmp_path / "photo0.jpg").read_bytes()[:300])
  (tmp_path / "empty.png").write_bytes(b"")
  config = input_pipeline.default_data_config()
  config.source = f"folder:{tmp_path}"
  config.eval_source = f"folder:{tmp_path}"
  config.image_size = 24
  config.batch_size = 3
  config.num_parallel_calls = 2
  input_pipeline.reset_skipped_files()
  train, _ = input_pipeline.create_datasets(config, seed=5)
  iterator = train.as_numpy_iterator()
  fresh = [next(iterator) for _ in range(8)]  # 24 elements, 2+ epochs of 9
  assert sorted(os.path.basename(p) for p in input_pipeline.skipped_files()
                ) == ["broken.jpg", "empty.png"]
  for start in (1, 5):
    resumed = input_pipeline.create_datasets(config, seed=5,
                                             start_step=start)[0]
    iterator = resumed.as_numpy_iterator()
    for want in fresh[start:]:
      got = next(iterator)
      np.testing.assert_array_equal(got["image"], want["image"])
      np.testing.assert_array_equal(got["reference"], want["reference"])
  # Different crops and flips per element: not one image repeated.
  assert len({x.tobytes() for b in fresh for x in b["image"]}) > 12
