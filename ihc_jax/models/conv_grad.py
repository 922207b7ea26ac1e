"""XLA's convolution with faster gradients on CPU.

`conv_general_dilated` with NHWC inputs and HWIO kernels, whose reverse-mode
derivative is a custom VJP. The forward pass is XLA's on every platform, so
outputs are unchanged. On GPU and TPU both gradients are XLA's (cuDNN's
and the TPU's own convolution gradients), chosen at lowering by
`jax.lax.platform_dependent`. On CPU (`cpu_gradients`) the kernel gradient
takes the first form whose rule holds (`kernel_gradient_form`):

* stride 1, float32, output channels a multiple of 16, a kernel of at
  most `NATIVE_MAX_KERNEL_ELEMENTS` entries and at least
  `NATIVE_MIN_POSITIONS` output pixels per image (the IHN's detail convs,
  E's input conv, the U-Nets' up convs on the large maps), where
  the compiled kernel is available (`ihc_jax.models.native`: built on first
  use; `without_native()` or `IHC_JAX_NATIVE=0` turn it off): an XLA FFI
  call that accumulates dK in register tiles from the input and dY as they
  lie (`kernel_gradient_native`);
* few output channels, kh * kw * C_out <= `SHIFTED_MAX_COLUMN_RATIO` *
  C_in (G's last 128 -> 3 conv, the IHN's and the U-Nets' 64 -> 1 and
  128 -> 1 output convs): one matmul of the input as it lies with kh * kw
  shifted copies of dY (`kernel_gradient_shifted`);
* stride 1, at least `ROWS_MIN_IN_CHANNELS` input and
  `ROWS_MIN_OUT_CHANNELS` output channels and `ROWS_MIN_POSITIONS` output
  pixels per image (every stride-1 conv of the networks but G's last 128
  -> 3, the input convs of E, F and the IHN's detail branch, and the
  U-Nets' smallest maps): one 1-D
  convolution down the rows whose contraction runs over the image columns
  (`kernel_gradient_rows`), which XLA:CPU runs as a few large matmuls;
* the wider strided layers: a sum over the kernel's taps of one matmul
  each (`kernel_gradient_taps`, rule below):

    dK[i, j] = sum over (b, y, x) of X_pad[b, s y + i, s x + j, :]^T dY[b, y, x, :]

* the others, for one image or for up to `PADDED_MAX_BATCH` images
  with at least `PADDED_MIN_POSITIONS` outputs each (`uses_padded`), XLA's
  kernel gradient of the VALID convolution of the explicitly zero-padded
  input, one convolution per image (`kernel_gradient_padded`): XLA:CPU's
  own form is 1.5-2x slower on the large maps at batch 4 and, for some
  shapes, 5-100x (measurements in its doc); smaller maps keep XLA's.

The input gradient of a strided convolution on a large enough map is one
stride-1 convolution with one output-channel group per phase of the
input (`input_gradient_phases`, `uses_phases`), where XLA convolves dY
dilated by the stride (mostly zeros): 2-3x faster for the 4x4 and 3x3
stride-2 convs at 128 px outputs.

The rows form, on the 2-core AMD EPYC (AVX2) of 6 December 2026, ms,
kernel gradient alone as XLA's / padded / taps / rows (`python -m
ihc_jax.bench conv --kernel-grads [--batch 4]`, forms interleaved, one run
each; benchmarks/RESULTS.md has every layer):

  layer (output map, C_in -> C_out, kernel)   batch 1                  batch 4
  IHN detail (256 px, 64 -> 64, 3x3)          414 / 392 / 160 / 87     2640 / 1374 / 1014 / 306
  E input (256 px, 3 -> 64, 7x7)              94 / 99 / 271 / 75       698 / 232 / 969 / 306
  E residual (64 px, 256 -> 256, 3x3)         88 / 97 / 53 / 45        484 / 322 / 179 / 160
  U-Net up (128 px, 256 -> 64, 3x3)           150 / 149 / 85 / 50      1235 / 527 / 401 / 264
  U-Net up (32 px, 1024 -> 256, 3x3)          71 / 66 / 38 / 33        259 / 276 / 182 / 148
  U-Net up (16 px, 1024 -> 512, 3x3)          30 / 30 / 25 / 19        119 / 144 / 85 / 70
  D (31 px, 256 -> 512, 4x4)                  47 / 46 / 38 / 36        271 / 200 / 158 / 157
  G last (256 px, 128 -> 3, 3x3)              196 / 55 / 67 / 60       187 / 236 / 256 / 246

G's last conv (3 output channels) goes to the shifted form (below). E's input
conv (3 input channels) goes to the padded form: the rows form's batch is
the input channels, and below `ROWS_MIN_IN_CHANNELS` its matmuls are too
thin (on the AVX-512 EPYC of 7 December, ms, rows / padded at batch 1 and
4: E input 72 / 24 and 342 / 150; F input, 6 channels, 72 / 42 and 351 /
284; 9 -> 64 at 256 px 28 / 18 and 132 / 110; from 16 channels the two
trade places with the batch).

The rows form's input, transposed to [C_in, H, B * W], is not padded: the
rows' zero padding is the 1-D convolution's own and the columns' is left
out of the shifted copies of dY. XLA:CPU fused a padded input into its
transposing copy as a loop 2-3x slower than the copy alone ([256, 132,
132] 47 ms against 20 ms unpadded inside the colour step); colour step
1.044x without the padding (1.665 -> 1.595 s), IHN step unchanged (2.419
vs 2.429 s), interleaved in one process. Up to
`ROWS_MATMUL_TRANSPOSE_MAX_CHANNELS` channels the transpose is a matmul
with the identity (`channels_first`): XLA:CPU's transposing copy of a [1,
258, 258, 64] map took 25-35 ms inside the IHN step (16 such copies,
about 470 ms of its 3.4 s traced). IHN step at batch 1, the threshold at
64 vs 0, interleaved in one process: 2.43 vs 2.67 s (1.095x) with the
padded input, 2.31 vs 2.38 s (1.03x) without it; 64 vs 256: 1.033x; 64 vs
128: 0.994x (noise); the colour step within noise of all three (few of
its rows layers have 64 channels or fewer).

The shifted form (`kernel_gradient_shifted`) reads the input once as it
lies, where the others pad or transpose it, and costs kh * kw copies of
dY: the form for layers with few output channels. Kernel gradient alone,
batch 1, ms, XLA's / padded / taps / rows (input still padded) / shifted
(same CPU, 6 December):

  G last (256 px, 128 -> 3, 3x3)              126 / 50 / 48 / 47 / 8.5
  IHN out (256 px, 64 -> 1, 3x3)              53 / 13.9 / 34 / 17.5 / 4.4
  U-Net out (256 px, 128 -> 1, 3x3)           111 / 38 / 46 / 38 / 7.7

At batch 4 G's last conv takes 51 ms against XLA's 138 and the padded
form's 218. Against the (unpadded) rows form, by the ratio of the shifted
copies' columns to the input's channels, ms rows vs shifted: 256 -> 16 at
128 px (ratio 0.56) 21.9 vs 9.7; 128 -> 8 (0.56) 37.4 vs 21.2; 64 -> 4
(0.56) 9.4 vs 10.1; 256 -> 32 (1.125) 25.5 vs 27.5; 64 -> 16 (2.25) 17.7
vs 43.5 (benchmarks/RESULTS.md). Hence
the rule's ratio 1. Whole colour step (G's last conv), models' forms with
and without it, interleaved: 1.03x (1.611 -> 1.562 s; noise is about 2 %);
loss identical.

On strided layers it loses (its contraction also runs over the s - 1 zero
columns between dY's): E's 4x4 stride-2 down conv at 128 px 116 ms against
79-103 for the others, so strided layers keep the other rules. Whole steps
(`python -m ihc_jax.bench steps`, models' forms vs XLA's everywhere,
interleaved): IHN step at batch 1 0.89x before the rows form, 1.60x with
it (3.91 vs 6.24 s); colour step 1.26x (2.72 vs 3.41 s).

All forms sum the same products as XLA's, in another order (float
rounding). Before the rows form, on the 2-core AVX2 CPU of 1-4 December
(where the measurements below were taken), whole steps of `python -m
ihc_jax.bench steps` (official widths, 256 px, interleaved in one process,
one run) against XLA's gradients everywhere were: colour step 1.14x at
batch 1 and 1.13x at batch 4, IHN step 1.28x at batch 4
(benchmarks/RESULTS.md, 4 December).

XLA:CPU computes the kernel gradient as a convolution with the pixels as its
contraction and the channels as its "image", a shape its convolution
kernels run slowly and that scales badly with the batch. The taps' matmuls
contract over the pixels with both channel counts as the matrix sides.
Kernel gradient alone, XLA's vs the taps, ms (`python -m ihc_jax.bench conv
--kernel-grads [--batch 4]`, interleaved, 2-core AVX2 CPU; one run each,
this machine's noise is about +-15%):

  layer (output map, C_in -> C_out, kernel)   batch 1        batch 4
  E residual (64 px, 256 -> 256, 3x3)         109 vs 39      477 vs 161
  U-Net up (128 px, 256 -> 64, 3x3)           133 vs 75      703 vs 340
  U-Net up (32 px, 1024 -> 256, 3x3)           34 vs 35      426 vs 162
  U-Net up (16 px, 1024 -> 512, 3x3)           18 vs 26       62 vs 75
  U-Net down (32 px, 128 -> 256, 4x4 s2)      9.4 vs 13.1     73 vs 41
  D (31 px, 256 -> 512, 4x4)                   40 vs 40      231 vs 152
  IHN detail (256 px, 64 -> 64, 3x3)          173 vs 142    1045 vs 908
  E input (256 px, 3 -> 64, 7x7)               48 vs 159     365 vs 1010

The taps lose on small maps (at most 32 x 32 outputs in all) and with few
channels (thin matmuls, and one window copy per tap). Inside a whole
training step the copies count for more than alone: the IHN's 64 -> 64
detail convs (4096 channel pairs), 2.2x faster alone at batch 4 in one
run, left its step unchanged within noise (batch 4, 256 px: 28.1 s with
XLA's gradients, 27.2 s with the taps), and nine unrolled taps (all windows
alive at once; the loop here keeps one) made it 2.6x slower. The colour
step (official-width E + G + D of `python -m ihc_jax.bench official`,
256 px, interleaved in one process) gained 1.19-1.25x at batch 1 and 1.37x
at batch 4 from the taps on its wider layers. So on CPU the taps are used
when both channel counts are at least `TAPS_MIN_CHANNELS`, their product
at least `TAPS_MIN_CHANNEL_PRODUCT` and the output has at least
`TAPS_MIN_POSITIONS` positions (batch times map). Those measurements
compared the taps with XLA's gradient of the padded convolution; against
`kernel_gradient_padded` the taps lose alone on several of these shapes at
batch 1 (E residual 59 vs 48 ms, U-Net up 115 vs 64 ms), while inside
the colour step the two are within noise (batch 1: 2.74 s with the taps,
2.92 s without; batch 4: 12.60 vs 12.11 s; interleaved, one run), so the
rule stays as it was.
"""

from __future__ import annotations

import contextlib
import functools
import math
from collections.abc import Iterator, Sequence

import jax
import jax.numpy as jnp

from ihc_jax.models import native

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
NATIVE_MIN_POSITIONS = 16 * 16
NATIVE_MAX_KERNEL_ELEMENTS = 2**18

_NHWC = ("NHWC", "HWIO", "NHWC")
_xla_only = False
_native_allowed = True
Padding = tuple[tuple[int, int], tuple[int, int]]


def conv(x: jax.Array, kernel: jax.Array, stride: int = 1,
         padding: str | Sequence[Sequence[int]] = "VALID") -> jax.Array:
  """`jax.lax.conv_general_dilated` (NHWC, HWIO) with the custom kernel gradient.

  Args:
    x: [B, H, W, C_in].
    kernel: [kh, kw, C_in, C_out].
    stride: the same in both directions.
    padding: "VALID" or ((top, bottom), (left, right)) zero padding.

  Returns:
    [B, H', W', C_out], exactly XLA's convolution.
  """
  if isinstance(padding, str):
    if padding != "VALID":
      raise ValueError(f"padding must be 'VALID' or explicit pairs, got {padding!r}")
    padding = ((0, 0), (0, 0))
  pads = tuple((int(lo), int(hi)) for lo, hi in padding)
  return _conv(x, kernel, int(stride), pads)


@contextlib.contextmanager
def xla_gradients() -> Iterator[None]:
  """Convolutions traced inside this context take XLA's input and kernel
  gradients on every platform (for comparisons, e.g. `python -m
  ihc_jax.bench steps`).

  The choice is made when a gradient is traced, so a function jitted here
  keeps it; a jitted function traced before keeps the models' choice.
  """
  global _xla_only
  before, _xla_only = _xla_only, True
  try:
    yield
  finally:
    _xla_only = before


@contextlib.contextmanager
def without_native() -> Iterator[None]:
  """Convolutions traced inside this context keep XLA formulations of the
  kernel gradient on CPU (`kernel_gradient_form` never picks 'native'): for
  comparisons, and where a compiled extension is not wanted. Chosen when a
  gradient is traced, like `xla_gradients`."""
  global _native_allowed
  before, _native_allowed = _native_allowed, False
  try:
    yield
  finally:
    _native_allowed = before


def uses_native(kernel_shape: Sequence[int], output_shape: Sequence[int],
                stride: int, dtype=jnp.float32) -> bool:
  """Whether the kernel gradient is `native.kernel_gradient` (the compiled
  kernel) when lowered for CPU: it is available (`native.available`; not
  inside `without_native`), takes the layer (stride 1, float32, output
  channels a multiple of 16), the kernel has at most
  `NATIVE_MAX_KERNEL_ELEMENTS` entries and the output at least
  `NATIVE_MIN_POSITIONS` pixels per image.

  Its accumulator, dK itself, is added to once per block of output rows;
  beyond 2^18 floats (1 MiB) it leaves the cache, and the rows form is as
  fast or faster at batch 1 (ms, native / rows, 2-core AVX-512 EPYC: E's
  256 -> 256 residual convs at 64 px 31 / 27, the U-Nets' 1024 -> 256 and
  1024 -> 512 up convs at 32 and 16 px 29 / 27 and 17 / 14, D's 4x4 256 ->
  512 28 / 21; `python -m ihc_jax.bench conv --kernel-grads`; at batch 4
  the kernel is faster on the first two, 110 / 139 and 107 / 113, but the
  bound follows batch 1, the official benchmark's). Up to it the
  compiled kernel is the fastest form on every map tried from 16 px up:
  the IHN's 64 -> 64 detail convs at 256 px 39 / 60 (batch 4: 150 / 277),
  E's 7x7 input conv 15 / 17 (the padded form's), the U-Nets' 256 -> 64 up
  convs at 128 px 29 / 34, 16 -> 16 at 16 px 0.06 / 0.16."""
  return (_native_allowed and native.supports(kernel_shape, stride, dtype)
          and math.prod(kernel_shape) <= NATIVE_MAX_KERNEL_ELEMENTS
          and output_shape[1] * output_shape[2] >= NATIVE_MIN_POSITIONS
          and native.available())


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


def xla_conv(x: jax.Array, kernel: jax.Array, stride: int, padding: Padding) -> jax.Array:
  """XLA's convolution, differentiated by XLA."""
  return jax.lax.conv_general_dilated(x, kernel, (stride, stride), padding,
                                      dimension_numbers=_NHWC)


def kernel_gradient_xla(x: jax.Array, kernel: jax.Array, dy: jax.Array, stride: int,
                        padding: Padding) -> jax.Array:
  """XLA's kernel gradient of `xla_conv` for the output cotangent dy."""
  return jax.vjp(lambda k: xla_conv(x, k, stride, padding), kernel)[1](dy)[0]


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
  return jax.vjp(lambda v: xla_conv(v, kernel, stride, padding), x)[1](dy)[0]


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


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def _conv(x: jax.Array, kernel: jax.Array, stride: int, padding: Padding) -> jax.Array:
  return xla_conv(x, kernel, stride, padding)


def _conv_fwd(x, kernel, stride, padding):
  return xla_conv(x, kernel, stride, padding), (x, kernel)


def _conv_bwd(stride, padding, residuals, dy):
  x, kernel = residuals
  xla_forms = functools.partial(xla_gradients_of, stride=stride, padding=padding)
  if _xla_only:
    return xla_forms(x, kernel, dy)
  cpu_forms = functools.partial(cpu_gradients, stride=stride, padding=padding)
  return jax.lax.platform_dependent(x, kernel, dy, cpu=cpu_forms, default=xla_forms)


def xla_gradients_of(x: jax.Array, kernel: jax.Array, dy: jax.Array, stride: int,
                     padding: Padding) -> tuple[jax.Array, jax.Array]:
  """(dX, dK) as XLA computes them (GPU, TPU, and `xla_gradients()`)."""
  return (input_gradient_xla(x, kernel, dy, stride, padding),
          kernel_gradient_xla(x, kernel, dy, stride, padding))


def cpu_gradients(x: jax.Array, kernel: jax.Array, dy: jax.Array, stride: int,
                  padding: Padding) -> tuple[jax.Array, jax.Array]:
  """(dX, dK) in the forms chosen for XLA:CPU by `uses_phases`, `uses_shifted`,
  `uses_rows`, `uses_taps` and `uses_padded`."""
  if uses_phases(kernel.shape, dy.shape, stride):
    dx = input_gradient_phases(x, kernel, dy, stride, padding)
  else:
    dx = input_gradient_xla(x, kernel, dy, stride, padding)
  form = kernel_gradient_form(kernel.shape, dy.shape, stride,
                              jnp.result_type(x.dtype, kernel.dtype, dy.dtype))
  return dx, _KERNEL_GRADIENTS[form](x, kernel, dy, stride, padding)


def kernel_gradient_form(kernel_shape: Sequence[int], output_shape: Sequence[int],
                         stride: int, dtype=jnp.float32) -> str:
  """The kernel gradient XLA:CPU gets for a [kh, kw, C_in, C_out] kernel with
  a [B, H', W', C_out] output: 'native', 'shifted', 'rows', 'taps', 'padded'
  or 'xla', the first whose `uses_*` rule holds."""
  if uses_native(kernel_shape, output_shape, stride, dtype):
    return "native"
  if uses_shifted(kernel_shape):
    return "shifted"
  if uses_rows(kernel_shape, output_shape, stride):
    return "rows"
  if uses_taps(kernel_shape, output_shape):
    return "taps"
  return "padded" if uses_padded(output_shape) else "xla"


def kernel_gradient_native(x: jax.Array, kernel: jax.Array, dy: jax.Array, stride: int,
                           padding: Padding) -> jax.Array:
  """`native.kernel_gradient` (stride 1 only) with the forms' signature."""
  if stride != 1:
    raise ValueError(f"the compiled kernel gradient is for stride 1, got {stride}")
  return native.kernel_gradient(x, kernel, dy, padding).astype(kernel.dtype)


_KERNEL_GRADIENTS = {"native": kernel_gradient_native, "shifted": kernel_gradient_shifted,
                     "rows": kernel_gradient_rows, "taps": kernel_gradient_taps,
                     "padded": kernel_gradient_padded, "xla": kernel_gradient_xla}


_conv.defvjp(_conv_fwd, _conv_bwd)
