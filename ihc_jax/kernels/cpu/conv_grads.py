"""Gradients of a convolution in the forms XLA:CPU runs fastest.

`ihc_jax.kernels.cpu.conv` differentiates XLA's convolution on CPU with these:
each is a linear function of the output cotangent dY that computes the same
sums as XLA's own gradient (`kernel_gradient_xla`, `input_gradient_xla`) in
another order. The kernel gradient takes the first form whose rule holds
(`kernel_gradient_form`):

* `kernel_gradient_shifted`: few output channels (kh * kw * C_out at most
  `SHIFTED_MAX_COLUMN_RATIO` * C_in: G's last 128 -> 3 conv, the IHN's and
  the U-Nets' output convs): one matmul of the input as it lies with kh * kw
  shifted copies of dY;
* `kernel_gradient_rows`: stride 1 with at least `ROWS_MIN_IN_CHANNELS`
  input and `ROWS_MIN_OUT_CHANNELS` output channels and `ROWS_MIN_POSITIONS`
  output pixels per image (most stride-1 layers): one 1-D convolution down
  the rows whose contraction runs over the image columns;
* `kernel_gradient_taps`: wide strided layers (`uses_taps`): one
  pixel-contracting matmul per kernel tap;
* `kernel_gradient_padded`: the rest, for one image or a bounded batch of
  large maps (`uses_padded`): XLA's gradient of the VALID convolution of the
  zero-padded input, one image at a time;
* else XLA's own.

The input gradient of a strided convolution on a large enough map is
`input_gradient_phases` (one stride-1 convolution with a channel group per
phase of the input) where XLA convolves dY dilated by the stride.

XLA:CPU computes the kernel gradient as a convolution with the pixels as its
contraction and the channels as its "image", a shape its convolution kernels
run slowly; these forms contract over pixels with the channel counts as the
matrix sides. The measurements behind every rule and threshold (per layer and
whole steps, 1-7 December 2026) are in benchmarks/RESULTS.md, "CPU
convolution gradients".
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp

from ihc_jax.kernels import reference

TAPS_MIN_CHANNELS = 64
TAPS_MIN_CHANNEL_PRODUCT = 64 * 128
TAPS_MIN_POSITIONS = 2048
PHASES_MIN_POSITIONS = 32 * 32
PADDED_MIN_POSITIONS = 64 * 64
PADDED_MAX_BATCH = 16
PHASES_PADDED_MIN_POSITIONS = 128 * 128
ROWS_MIN_IN_CHANNELS = 16
ROWS_MIN_OUT_CHANNELS = 16
ROWS_MIN_POSITIONS = 16 * 16
ROWS_MATMUL_TRANSPOSE_MAX_CHANNELS = 64
SHIFTED_MAX_COLUMN_RATIO = 1.0

_NHWC = reference.DIMENSION_NUMBERS
Padding = reference.Padding


def uses_rows(kernel_shape: Sequence[int], output_shape: Sequence[int],
              stride: int) -> bool:
  """Whether the kernel gradient of a [kh, kw, C_in, C_out] kernel with a
  [B, H', W', C_out] output and this stride is `kernel_gradient_rows` when
  lowered for CPU (else `uses_taps` and `uses_padded` decide; on every other
  platform it is XLA's): stride 1, at least `ROWS_MIN_IN_CHANNELS` input
  and `ROWS_MIN_OUT_CHANNELS` output channels, and `ROWS_MIN_POSITIONS`
  output pixels per image.

  The input channels are the rows form's batch: with few of them (E's and
  F's 7x7 input convs, 3 and 6 channels; the IHN's first detail conv, 9)
  its matmuls are too thin, and the padded form is 1.2-3x faster."""
  return (stride == 1 and kernel_shape[2] >= ROWS_MIN_IN_CHANNELS
          and kernel_shape[3] >= ROWS_MIN_OUT_CHANNELS
          and output_shape[1] * output_shape[2] >= ROWS_MIN_POSITIONS)


def kernel_gradient_rows(x: jax.Array, kernel: jax.Array, dy: jax.Array, stride: int,
                         padding: Padding) -> jax.Array:
  """The kernel gradient as one 1-D convolution down the rows, whose
  contraction runs over the image columns as its channels.

  With X_pad the zero-padded input and s the stride,

    dK[i, j, c, o] = sum over (b, y) of
        sum over w of X_pad[b, s y + i, w, c] R[b, y, w, (j, o)],
    R[b, y, w, (j, o)] = dY[b, y, (w - j) / s, o] where s divides w - j, else 0:

  a convolution along the rows (kernel dY, dilated by s; output length kh)
  with the input channels as its batch, the (image, column) pairs as its
  input channels and the (tap column, output channel) pairs as its output
  channels. R is kw shifted copies of dY (dilated by s along the columns).
  XLA:CPU runs this as a few large matmuls, where its own kernel gradient
  contracts over the pixels with one channel per "image" (6-8x slower on
  the IHN's 64 -> 64 detail convs). A stride s multiplies the columns
  contracted by s (the zeros of R).

  Args:
    x: the convolution's input [B, H, W, C_in].
    kernel: its kernel [kh, kw, C_in, C_out] (only shape and dtype are read).
    dy: the output cotangent [B, H', W', C_out].
    stride: the convolution's stride.
    padding: its zero padding ((top, bottom), (left, right)).

  Returns:
    dK [kh, kw, C_in, C_out], accumulated in float32.
  """
  kh, kw, c_in, c_out = kernel.shape
  batch, out_h, out_w, _ = dy.shape
  s = stride
  rows = s * (out_h - 1) + kh
  (top, _), (left, _) = padding
  height, width = x.shape[1], x.shape[2]
  bottom = rows - height - top  # negative: the last rows are never read
  if bottom < 0:
    x, height, bottom = x[:, :height + bottom], height + bottom, 0
  # The input as it lies, channels first: the rows' zero padding is the
  # convolution's, the columns' is left out of R (XLA:CPU fuses a padded
  # input into its transposing copy, a loop 2-3x slower than the copy).
  if c_in <= ROWS_MATMUL_TRANSPOSE_MAX_CHANNELS:
    lhs = channels_first(x).transpose(0, 2, 1, 3)
  else:
    lhs = x.transpose(3, 1, 0, 2)
  lhs = lhs.reshape(c_in, height, batch * width)
  zero = jnp.zeros((), dy.dtype)

  def placed(j: int) -> jax.Array:
    return jax.lax.pad(dy, zero, ((0, 0, 0), (0, 0, 0),
                                  _tap_placement(j - left, width, out_w, s), (0, 0, 0)))

  rhs = jnp.stack([placed(j) for j in range(kw)], axis=3).transpose(1, 0, 2, 3, 4)
  rhs = rhs.reshape(out_h, batch * width, kw * c_out)
  out = jax.lax.conv_general_dilated(
      lhs, rhs, (1,), ((top, bottom),), rhs_dilation=(s,),
      dimension_numbers=("NHC", "HIO", "NHC"), preferred_element_type=jnp.float32)
  return out.reshape(c_in, kh, kw, c_out).transpose(1, 2, 0, 3).astype(kernel.dtype)


def _tap_placement(offset: int, length: int, out_length: int,
                   stride: int) -> tuple[int, int, int]:
  """`lax.pad`'s (low, high, interior) for one axis of dY that puts its
  element y at input position stride * y + offset (a tap's offset less the
  padding) on an axis of `length`, zeros between; negative ends crop."""
  return offset, length - offset - stride * (out_length - 1) - 1, stride - 1


def uses_shifted(kernel_shape: Sequence[int]) -> bool:
  """Whether the kernel gradient of a [kh, kw, C_in, C_out] kernel is
  `kernel_gradient_shifted` when lowered for CPU (on every other platform
  it is XLA's): its shifted copies of dY, kh * kw * C_out values per input
  pixel, are at most `SHIFTED_MAX_COLUMN_RATIO` times the input's C_in."""
  kh, kw, c_in, c_out = kernel_shape
  return kh * kw * c_out <= SHIFTED_MAX_COLUMN_RATIO * c_in


def kernel_gradient_shifted(x: jax.Array, kernel: jax.Array, dy: jax.Array,
                            stride: int, padding: Padding) -> jax.Array:
  """The kernel gradient as one matmul of the input with every tap's
  shifted copy of dY.

  With s the stride and (top, left) the padding,

    dK[i, j, c, o] = sum over (b, p, q) of X[b, p, q, c] S[b, p, q, (i, j, o)],
    S[b, p, q, (i, j, o)] = dY[b, (p + top - i) / s, (q + left - j) / s, o]
                            where that is a whole output pixel, else 0:

  one matmul that contracts the pixels of the input as it lies (no padded
  or transposed copy of it) with S, kh * kw copies of dY, each placed
  where its tap reads the input. Building S costs kh * kw * C_out values
  per input pixel, so this is the form for few output channels (G's last
  128 -> 3 conv: S has 27 columns against the input's 128).

  Args:
    x: the convolution's input [B, H, W, C_in].
    kernel: its kernel [kh, kw, C_in, C_out] (only shape and dtype are read).
    dy: the output cotangent [B, H', W', C_out].
    stride: the convolution's stride.
    padding: its zero padding ((top, bottom), (left, right)).

  Returns:
    dK [kh, kw, C_in, C_out], accumulated in float32.
  """
  kh, kw, c_in, c_out = kernel.shape
  batch, height, width, _ = x.shape
  _, out_h, out_w, _ = dy.shape
  (top, _), (left, _) = padding
  s = stride
  zero = jnp.zeros((), dy.dtype)

  def placed(i: int, j: int) -> jax.Array:
    return jax.lax.pad(dy, zero, ((0, 0, 0), _tap_placement(i - top, height, out_h, s),
                                  _tap_placement(j - left, width, out_w, s), (0, 0, 0)))

  taps = jnp.stack([placed(i, j) for i in range(kh) for j in range(kw)], axis=3)
  taps = taps.reshape(batch * height * width, kh * kw * c_out)
  dk = jax.lax.dot_general(taps, x.reshape(batch * height * width, c_in),
                           (((0,), (0,)), ((), ())), preferred_element_type=jnp.float32)
  return dk.reshape(kh, kw, c_out, c_in).transpose(0, 1, 3, 2).astype(kernel.dtype)


def channels_first(x: jax.Array) -> jax.Array:
  """x [B, H, W, C] as [C, B, H, W], by a matmul with the identity matrix.

  Exact (each output is one product with 1.0 plus zeros; a non-finite
  input spreads to its whole pixel, as it would spread through the
  gradient anyway). Alone, XLA:CPU's transposing copy of a [1, 256, 256,
  64] map is faster (2.2 ms against 3.1 ms for this matmul of C
  multiply-adds per value), but inside the IHN step the copies ran at a
  fraction of that speed (25-35 ms each for the padded input), and the
  step is 1.03x faster with this form for up to
  `ROWS_MATMUL_TRANSPOSE_MAX_CHANNELS` channels.
  """
  batch, height, width, channels = x.shape
  eye = jnp.eye(channels, dtype=x.dtype)
  out = jax.lax.dot_general(eye, x.reshape(-1, channels), (((1,), (1,)), ((), ())))
  return out.reshape(channels, batch, height, width)


def uses_taps(kernel_shape: Sequence[int], output_shape: Sequence[int]) -> bool:
  """Whether the kernel gradient of a [kh, kw, C_in, C_out] kernel with a
  [B, H', W', C_out] output is the taps form when lowered for CPU (else
  `uses_padded` decides; on every other platform it is XLA's)."""
  c_in, c_out = kernel_shape[2:]
  positions = output_shape[0] * output_shape[1] * output_shape[2]
  return (min(c_in, c_out) >= TAPS_MIN_CHANNELS
          and c_in * c_out >= TAPS_MIN_CHANNEL_PRODUCT
          and positions >= TAPS_MIN_POSITIONS)


def kernel_gradient_xla(x: jax.Array, kernel: jax.Array, dy: jax.Array, stride: int,
                        padding: Padding) -> jax.Array:
  """XLA's kernel gradient of `xla_conv` for the output cotangent dy."""
  return jax.vjp(lambda k: reference.conv2d(x, k, stride, padding), kernel)[1](dy)[0]


def kernel_gradient_padded(x: jax.Array, kernel: jax.Array, dy: jax.Array, stride: int,
                           padding: Padding) -> jax.Array:
  """XLA's kernel gradient of the VALID convolution of the zero-padded x,
  one image at a time (summed in float32).

  The same products as `kernel_gradient_xla`. XLA:CPU runs its own form
  (the gradient of the padded convolution, all images in one) slowly on
  many shapes. Standalone, one run each, ms, XLA's vs this:

    batch 1: G's last 128 -> 3 conv at 256 px 162 vs 68; a 4x4 256 -> 512
             conv at 32 px with padding 2 2855 vs 30;
    batch 4: the IHN's 64 -> 64 detail conv at 256 px 892 vs 460; E's
             residual 3x3 256 -> 256 at 64 px 321 vs 200; G's 3x3
             256 -> 64 up conv at 128 px 495 vs 307.

  All images in one VALID gradient was 1.7-2.3x slower than XLA's form at
  batch 4, and a `fori_loop` over the images 45x slower (XLA:CPU runs a
  convolution inside a loop body on a slow path), hence one unrolled
  convolution per image (`uses_padded` bounds the batch).
  """
  (top, bottom), (left, right) = padding
  xp = jnp.pad(x, ((0, 0), (top, bottom), (left, right), (0, 0)))
  per_image = [kernel_gradient_xla(xp[i:i + 1], kernel, dy[i:i + 1], stride,
                                   ((0, 0), (0, 0))) for i in range(x.shape[0])]
  if len(per_image) == 1:
    return per_image[0]
  dk = per_image[0].astype(jnp.float32)
  for grad in per_image[1:]:
    dk = dk + grad.astype(jnp.float32)
  return dk.astype(kernel.dtype)


def uses_padded(output_shape: Sequence[int]) -> bool:
  """Whether a kernel gradient that is not the taps is `kernel_gradient_padded`
  on CPU for a [B, H', W', C_out] output: always for one image; for up to
  `PADDED_MAX_BATCH` images from `PADDED_MIN_POSITIONS` outputs per image
  (one convolution per image: on smaller maps XLA's batched form is as
  fast, and the graph stays small)."""
  batch, height, width = output_shape[:3]
  return batch == 1 or (batch <= PADDED_MAX_BATCH
                        and height * width >= PADDED_MIN_POSITIONS)


def input_gradient_xla(x: jax.Array, kernel: jax.Array, dy: jax.Array, stride: int,
                       padding: Padding) -> jax.Array:
  """XLA's input gradient of `xla_conv` (a convolution of dy dilated by the
  stride) for the output cotangent dy."""
  return jax.vjp(lambda v: reference.conv2d(v, kernel, stride, padding), x)[1](dy)[0]


def uses_phases(kernel_shape: Sequence[int], output_shape: Sequence[int],
                stride: int) -> bool:
  """Whether the input gradient of a [kh, kw, C_in, C_out] kernel with a
  [B, H', W', C_out] output and this stride is `input_gradient_phases`
  when lowered for CPU (else XLA's, and on every other platform)."""
  if stride == 1:
    return False
  divisible = kernel_shape[0] % stride == 0 and kernel_shape[1] % stride == 0
  minimum = PHASES_MIN_POSITIONS if divisible else PHASES_PADDED_MIN_POSITIONS
  return output_shape[1] * output_shape[2] >= minimum


def input_gradient_phases(x: jax.Array, kernel: jax.Array, dy: jax.Array, stride: int,
                          padding: Padding) -> jax.Array:
  """The input gradient of a strided convolution as one stride-1 convolution
  of dy with s * s * C_in output channels, one group per phase of the input.

  With s the stride and a kernel side k divisible by s, input pixel
  s u + r (of the padded input, 0 <= r < s) receives dY[u - a] K[s a + r]
  for a = 0 .. k / s - 1 in each direction: a full stride-1 correlation of
  dY with the flipped sub-kernel K[r::s] of phase r. Stacking the s * s
  sub-kernels as output channels gives one convolution of dY (zero-padded
  by k / s - 1) whose channels, moved back into space, are the padded
  input's gradient; rows no window reached are zero, and the padding is
  cropped. XLA's form convolves dY dilated by s (s * s - 1 zeros in every
  s * s pixels), about s * s times the products: 79 vs 26 ms for E's
  first 4x4 stride-2 conv at 256 px on this CPU, whose forward takes 27 ms.
  The same products as XLA's, summed in another order.

  Args:
    x: the convolution's input [B, H, W, C_in] (only its shape is read).
    kernel: its kernel [kh, kw, C_in, C_out].
    dy: the output cotangent [B, H', W', C_out].
    stride: the convolution's stride.
    padding: its zero padding ((top, bottom), (left, right)).

  Returns:
    dX [B, H, W, C_in].
  """
  s = stride
  # Zero taps at the end make the sides multiples of s (3x3 -> 4x4 for s = 2).
  kernel = jnp.pad(kernel, ((0, -kernel.shape[0] % s), (0, -kernel.shape[1] % s),
                            (0, 0), (0, 0)))
  kh, kw, c_in, c_out = kernel.shape
  ka, kb = kh // s, kw // s
  batch, out_h, out_w, _ = dy.shape
  # sub[a, b, :, (r, q, ci)] = K[s (ka - 1 - a) + r, s (kb - 1 - b) + q, ci, :]
  sub = kernel.reshape(ka, s, kb, s, c_in, c_out)[::-1, :, ::-1]
  sub = sub.transpose(0, 2, 5, 1, 3, 4).reshape(ka, kb, c_out, s * s * c_in)
  grouped = jax.lax.conv_general_dilated(
      dy, sub, (1, 1), ((ka - 1, ka - 1), (kb - 1, kb - 1)), dimension_numbers=_NHWC)
  rows, cols = out_h + ka - 1, out_w + kb - 1
  dxp = grouped.reshape(batch, rows, cols, s, s, c_in).transpose(0, 1, 3, 2, 4, 5)
  dxp = dxp.reshape(batch, rows * s, cols * s, c_in)
  (top, bottom), (left, right) = padding
  height, width = x.shape[1], x.shape[2]
  dxp = jnp.pad(dxp, ((0, 0), (0, max(0, top + height - rows * s)),
                      (0, max(0, left + width - cols * s)), (0, 0)))
  return dxp[:, top:top + height, left:left + width].astype(x.dtype)


def kernel_gradient_taps(x: jax.Array, kernel: jax.Array, dy: jax.Array, stride: int,
                         padding: Padding) -> jax.Array:
  """The kernel gradient as one pixel-contracting matmul per kernel tap.

  Each tap's matmul reads its shifted input window as one contiguous slice
  of a flattened image, not a strided copy: dy is zero-padded on the right
  to the row length of the (padded) input, so that the window of tap (i, j)
  is the flat input from offset i * row + j on, and the padded columns of
  dy, which are zero, cancel the window's wrap-around. A stride s first
  splits the input into its s * s phase images (x[r::s, q::s]), in which
  every tap is a stride-1 shift. The extra work is the padded columns,
  (W' + ceil(kw / s)) / W' - 1 of it.

  Args:
    x: the convolution's input [B, H, W, C_in].
    kernel: its kernel [kh, kw, C_in, C_out] (only shape and dtype are read).
    dy: the output cotangent [B, H', W', C_out].
    stride: the convolution's stride.
    padding: its zero padding ((top, bottom), (left, right)).

  Returns:
    dK [kh, kw, C_in, C_out], accumulated in float32.
  """
  kh, kw, channels, _ = kernel.shape
  b, out_h, out_w, _ = dy.shape
  s = stride
  # Phase images of ph x pw pixels, one row more than the taps reach.
  ph, pw = out_h + -(-kh // s), out_w + -(-kw // s)
  (top, _), (left, _) = padding
  zero = jnp.zeros((), x.dtype)
  xp = jax.lax.pad(x, zero, ((0, 0, 0), (top, ph * s - x.shape[1] - top, 0),
                             (left, pw * s - x.shape[2] - left, 0), (0, 0, 0)))
  phases = xp.reshape(b, ph, s, pw, s, channels).transpose(0, 2, 4, 1, 3, 5)
  phases = phases.reshape(b, s, s, ph * pw, channels)
  dy_rows = jnp.pad(dy, ((0, 0), (0, 0), (0, pw - out_w), (0, 0)))
  dy_flat = dy_rows.reshape(b, out_h * pw, dy.shape[-1])
  rows = out_h * pw

  def tap(t, dk):
    i, j = t // kw, t % kw
    window = jax.lax.dynamic_slice(
        phases, (0, i % s, j % s, (i // s) * pw + j // s, 0), (b, 1, 1, rows, channels))
    grad = jax.lax.dot_general(dy_flat, window.reshape(b, rows, channels),
                               (((0, 1), (0, 1)), ((), ())),
                               preferred_element_type=jnp.float32)
    return dk.at[t].set(grad)

  dk = jax.lax.fori_loop(0, kh * kw, tap,
                         jnp.zeros((kh * kw, dy.shape[-1], channels), jnp.float32))
  return dk.transpose(0, 2, 1).reshape(kernel.shape).astype(kernel.dtype)


def cpu_gradients(x: jax.Array, kernel: jax.Array, dy: jax.Array, stride: int,
                  padding: Padding) -> tuple[jax.Array, jax.Array]:
  """(dX, dK) in the forms chosen for XLA:CPU by `uses_phases`, `uses_shifted`,
  `uses_rows`, `uses_taps` and `uses_padded`."""
  if uses_phases(kernel.shape, dy.shape, stride):
    dx = input_gradient_phases(x, kernel, dy, stride, padding)
  else:
    dx = input_gradient_xla(x, kernel, dy, stride, padding)
  form = kernel_gradient_form(kernel.shape, dy.shape, stride)
  return dx, KERNEL_GRADIENTS[form](x, kernel, dy, stride, padding)


def kernel_gradient_form(kernel_shape: Sequence[int], output_shape: Sequence[int],
                         stride: int) -> str:
  """The kernel gradient XLA:CPU gets for a [kh, kw, C_in, C_out] kernel with
  a [B, H', W', C_out] output: 'shifted', 'rows', 'taps', 'padded' or
  'xla', the first whose `uses_*` rule holds."""
  if uses_shifted(kernel_shape):
    return "shifted"
  if uses_rows(kernel_shape, output_shape, stride):
    return "rows"
  if uses_taps(kernel_shape, output_shape):
    return "taps"
  return "padded" if uses_padded(output_shape) else "xla"


KERNEL_GRADIENTS = {"shifted": kernel_gradient_shifted, "rows": kernel_gradient_rows,
                    "taps": kernel_gradient_taps, "padded": kernel_gradient_padded,
                    "xla": kernel_gradient_xla}
