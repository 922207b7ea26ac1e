"""Native (TensorFlow-op) decoding and random crops of training photographs.

The train stream's hot path: JPEG, PNG, BMP and GIF bytes are decoded by
TensorFlow ops, so decoding runs in tf.data's threads without the Python GIL.
The geometry is the one of the PIL path
(`ihc_jax.data.streams.pil_random_crop`):

1. the image is resized so that its short side is S (`resized_shape`, the
   same rounding as `crops.resize_short_side`), bilinear with
   antialiasing (a triangle filter widened by the shrink factor, as PIL's
   BILINEAR; `tf.image.resize(..., antialias=True)`),
2. an S x S crop at offsets drawn from three uniforms u (`crop_offsets`),
3. a horizontal flip when `u[2] < 0.5` (if flips are on).

JPEGs take a shortcut with the same result: they are decoded at the DCT
scale (1/2, 1/4, 1/8) PIL's `draft` picks in the PIL path (the short side
stays >= S), and only the crop's window plus a margin of the filter's
support is decoded (`tf.io.decode_and_crop_jpeg`) and resampled with the
exact scale and offset of the crop in the resized image. What remains are
the two libjpeg builds' rounding differences (measured against the PIL path
on the demo photographs in tests/test_native_decode.py).

Value ranges: the output is float32 in [0, 1]; 8-bit data is divided by 255,
16-bit PNGs by 65535 (PIL reduces 16-bit colour PNGs to 8 bits; here they
keep 16). Transparent PNGs are composited on white as in the PIL path.

What is not decoded here (the caller falls back to PIL): TIFF, WebP and
other formats TensorFlow has no op for, and CMYK JPEGs (TensorFlow would
return them with wrong colours): `native_random_crop` fails on them with an
InvalidArgumentError, which the input pipeline catches.
"""

import tensorflow as tf

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def resized_shape(height: tf.Tensor, width: tf.Tensor, size: int
                  ) -> tuple[tf.Tensor, tf.Tensor]:
  """(height, width) after resizing the short side to `size`.

  Args:
    height: int32 scalar, the original height.
    width: int32 scalar, the original width.
    size: S.

  Returns:
    int32 scalars max(S, round(side * S / short side)), as the PIL path.
  """
  scale = tf.cast(size, tf.float64) / tf.cast(tf.minimum(height, width),
                                              tf.float64)
  def new(side):
    # Python's round() (PIL path) rounds halves to even, as tf.round.
    scaled = tf.cast(tf.round(tf.cast(side, tf.float64) * scale), tf.int32)
    return tf.maximum(size, scaled)
  return new(height), new(width)


def crop_offsets(height: tf.Tensor, width: tf.Tensor, size: int,
                 uniforms: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
  """(top, left) of an S x S crop of a [height, width] image from u in [0,1).

  Args:
    height: int32 scalar >= size.
    width: int32 scalar >= size.
    size: S.
    uniforms: float32 [>= 2], u[0] picks the row, u[1] the column.

  Returns:
    int32 scalars, top = floor(u0 * (height - S + 1)) and likewise left.
  """
  def offset(u, side):
    choices = side - size + 1
    pick = tf.cast(tf.floor(tf.cast(u, tf.float64) *
                            tf.cast(choices, tf.float64)), tf.int32)
    return tf.clip_by_value(pick, 0, choices - 1)
  return offset(uniforms[0], height), offset(uniforms[1], width)


def _to_unit(image: tf.Tensor) -> tf.Tensor:
  return tf.clip_by_value(image, 0.0, 1.0)


def _resize(image: tf.Tensor, height: tf.Tensor, width: tf.Tensor
            ) -> tf.Tensor:
  return tf.image.resize(image, tf.stack([height, width]),
                         method=tf.image.ResizeMethod.BILINEAR,
                         antialias=True)


def jpeg_draft_ratio(height: tf.Tensor, width: tf.Tensor, size: int
                     ) -> tf.Tensor:
  """The DCT scaling (1, 2, 4 or 8) PIL's `draft` picks for short side S.

  As `image_io.decode_image(data, S)`: the largest ratio r with
  side // r >= the resized side on both axes (resized: ceil(side * S /
  short side)); 1 when the image is not shrunk.
  """
  scale = tf.cast(size, tf.float64) / tf.cast(tf.minimum(height, width),
                                              tf.float64)
  wanted_h = tf.cast(tf.math.ceil(tf.cast(height, tf.float64) * scale),
                     tf.int32)
  wanted_w = tf.cast(tf.math.ceil(tf.cast(width, tf.float64) * scale),
                     tf.int32)
  most = tf.minimum(height // wanted_h, width // wanted_w)
  ratio = tf.constant(1, tf.int32)
  for candidate in (2, 4, 8):
    ratio = tf.where(most >= candidate, candidate, ratio)
  return tf.where(scale < 1.0, ratio, 1)


def _jpeg_crop(contents: tf.Tensor, size: int, uniforms: tf.Tensor
               ) -> tf.Tensor:
  """Decodes only (a margin around) the crop of a JPEG: float32 [S, S, 3].

  Same result as decoding at PIL's draft scale, resizing the whole image to
  short side S (antialiased bilinear) and cropping: the window is resampled
  with the exact scale and offset of that crop (`ScaleAndTranslate`), and a
  margin of the filter's support around it keeps the border pixels exact.
  """
  shape = tf.image.extract_jpeg_shape(contents, output_type=tf.int32)
  height, width, components = shape[0], shape[1], shape[2]
  tf.debugging.assert_less(
      components, 4, message="CMYK JPEG: decoded by PIL instead")
  ratio = jpeg_draft_ratio(height, width, size)
  # libjpeg's scaled size (and PIL's draft size): ceil(side / ratio).
  height = (height + ratio - 1) // ratio
  width = (width + ratio - 1) // ratio
  new_height, new_width = resized_shape(height, width, size)
  top, left = crop_offsets(new_height, new_width, size, uniforms)

  def window(start, side, new_side):
    scale = tf.cast(new_side, tf.float64) / tf.cast(side, tf.float64)
    margin = tf.cast(tf.math.ceil(1.0 / scale), tf.int32) + 1
    begin = tf.cast(tf.floor(tf.cast(start, tf.float64) / scale),
                    tf.int32) - margin
    end = tf.cast(tf.math.ceil(tf.cast(start + size, tf.float64) / scale),
                  tf.int32) + margin
    begin = tf.clip_by_value(begin, 0, side - 1)
    end = tf.clip_by_value(end, begin + 1, side)
    # Output x samples window coordinate (x + 0.5 - t) / scale, which is
    # original (start + x + 0.5) / scale - begin when t = begin * scale - start.
    translation = tf.cast(begin, tf.float64) * scale - tf.cast(start,
                                                               tf.float64)
    return begin, end, tf.cast(scale, tf.float32), tf.cast(translation,
                                                           tf.float32)

  y0, y1, scale_y, shift_y = window(top, height, new_height)
  x0, x1, scale_x, shift_x = window(left, width, new_width)
  scale_index = tf.cast(tf.round(tf.math.log(tf.cast(ratio, tf.float32)) /
                                 tf.math.log(2.0)), tf.int32)

  def decode_window(crop_window):
    # `ratio` is an attribute (a Python int): one branch per DCT scale.
    branches = [
        lambda r=r: tf.io.decode_and_crop_jpeg(contents, crop_window,
                                               channels=3, ratio=r)
        for r in (1, 2, 4, 8)]
    pixels = tf.switch_case(scale_index, branches)
    pixels.set_shape([None, None, 3])
    return pixels

  def resampled():
    pixels = decode_window(tf.stack([y0, x0, y1 - y0, x1 - x0]))
    # uint8 in: TF's antialiased resampling is ~1.5x faster than on float32.
    return tf.raw_ops.ScaleAndTranslate(
        images=pixels[None], size=tf.constant([size, size], tf.int32),
        scale=tf.stack([scale_y, scale_x]),
        translation=tf.stack([shift_y, shift_x]), kernel_type="triangle",
        antialias=True)[0]

  def cropped():
    # Already at short side S after DCT scaling (e.g. a prepared data set):
    # no resampling.
    return tf.cast(decode_window(tf.stack([top, left, size, size])),
                   tf.float32)

  unscaled = tf.logical_and(tf.equal(new_height, height),
                            tf.equal(new_width, width))
  image = tf.cond(unscaled, cropped, resampled)
  return _to_unit(image / 255.0)


def _png_rgb(contents: tf.Tensor) -> tf.Tensor:
  """PNG (8 or 16 bit, any colour type) -> float32 [H, W, 3] on white."""
  rgba = tf.cast(tf.io.decode_png(contents, channels=4, dtype=tf.uint16),
                 tf.float32) / 65535.0
  alpha = rgba[..., 3:]
  return rgba[..., :3] * alpha + (1.0 - alpha)


def _other_rgb(contents: tf.Tensor) -> tf.Tensor:
  """BMP / GIF (first frame) -> float32 [H, W, 3] in [0, 1]."""
  image = tf.io.decode_image(contents, channels=3, expand_animations=False,
                             dtype=tf.uint8)
  return tf.cast(image, tf.float32) / 255.0


def _full_crop(contents: tf.Tensor, size: int, uniforms: tf.Tensor
               ) -> tf.Tensor:
  """Decodes a whole PNG/BMP/GIF, resizes, crops: float32 [S, S, 3]."""
  is_png = tf.equal(tf.strings.substr(contents, 0, len(_PNG_SIGNATURE)),
                    _PNG_SIGNATURE)
  image = tf.cond(is_png, lambda: _png_rgb(contents),
                  lambda: _other_rgb(contents))
  image.set_shape([None, None, 3])
  height, width = tf.shape(image)[0], tf.shape(image)[1]
  new_height, new_width = resized_shape(height, width, size)
  same = tf.logical_and(tf.equal(new_height, height),
                        tf.equal(new_width, width))
  image = tf.cond(same, lambda: image,
                  lambda: _resize(image, new_height, new_width))
  top, left = crop_offsets(new_height, new_width, size, uniforms)
  return _to_unit(image[top:top + size, left:left + size])


def native_random_crop(contents: tf.Tensor, size: int, uniforms: tf.Tensor,
                       random_flip: bool) -> tf.Tensor:
  """A random S x S crop of an encoded JPEG, PNG, BMP or GIF.

  Args:
    contents: scalar string, the encoded file.
    size: S, the crop side (also the short side after resizing).
    uniforms: float32 [3] in [0, 1): row, column and flip draws.
    random_flip: flip horizontally when u[2] < 0.5.

  Returns:
    float32 [S, S, 3] in [0, 1].

  Raises:
    tf.errors.InvalidArgumentError (when run): unreadable or truncated data,
      a format TensorFlow cannot decode, or a CMYK JPEG.
  """
  image = tf.cond(tf.io.is_jpeg(contents),
                  lambda: _jpeg_crop(contents, size, uniforms),
                  lambda: _full_crop(contents, size, uniforms))
  image.set_shape([size, size, 3])
  if random_flip:
    image = tf.cond(uniforms[2] < 0.5,
                    lambda: tf.image.flip_left_right(image), lambda: image)
  return image
