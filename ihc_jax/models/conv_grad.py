"""XLA's convolution with a faster kernel gradient on CPU.

`conv_general_dilated` with NHWC inputs and HWIO kernels, whose reverse-mode
derivative is a custom VJP: the input gradient is XLA's own (the transposed
convolution), and the kernel gradient is, on CPU, a sum over the kernel's
taps of one matmul each (`kernel_gradient_taps`):

    dK[i, j] = sum over (b, y, x) of X_pad[b, s y + i, s x + j, :]^T dY[b, y, x, :]

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
`TAPS_MIN_POSITIONS` positions (batch times map). On GPU and TPU the kernel
gradient stays XLA's (cuDNN's and the TPU's own convolution gradients),
chosen at lowering by `jax.lax.platform_dependent`. The forward pass and
the input gradient are XLA's on every platform, so outputs are unchanged;
the kernel gradient differs from XLA's by float rounding only (the same
products, summed in another order).
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator, Sequence

import jax
import jax.numpy as jnp

TAPS_MIN_CHANNELS = 64
TAPS_MIN_CHANNEL_PRODUCT = 64 * 128
TAPS_MIN_POSITIONS = 2048

_NHWC = ("NHWC", "HWIO", "NHWC")
_xla_only = False
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
def xla_kernel_gradients() -> Iterator[None]:
  """Convolutions traced inside this context take XLA's kernel gradient on
  every platform (for comparisons, e.g. `python -m ihc_jax.bench steps`).

  The choice is made when a gradient is traced, so a function jitted here
  keeps it; a jitted function traced before keeps the models' choice.
  """
  global _xla_only
  before, _xla_only = _xla_only, True
  try:
    yield
  finally:
    _xla_only = before


def uses_taps(kernel_shape: Sequence[int], output_shape: Sequence[int]) -> bool:
  """Whether the kernel gradient of a [kh, kw, C_in, C_out] kernel with a
  [B, H', W', C_out] output is the taps form when lowered for CPU (else
  XLA's, and on every other platform)."""
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
  dx = jax.vjp(lambda v: xla_conv(v, kernel, stride, padding), x)[1](dy)[0]
  xla_form = functools.partial(kernel_gradient_xla, stride=stride, padding=padding)
  if _xla_only or not uses_taps(kernel.shape, dy.shape):
    return dx, xla_form(x, kernel, dy)
  taps_form = functools.partial(kernel_gradient_taps, stride=stride, padding=padding)
  dk = jax.lax.platform_dependent(x, kernel, dy, cpu=taps_form, default=xla_form)
  return dx, dk


_conv.defvjp(_conv_fwd, _conv_bwd)
