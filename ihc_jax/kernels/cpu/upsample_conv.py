"""The U-Nets' up step on XLA:CPU: bilinear x2 upsampling, ReflectionPad2d(1)
and a 3x3 conv as one conv of the small map (`reference.upsample_reflect_conv`
as three layers).

The U-Nets' up path (original-code.md §3.1) is Upsample(scale 2, bilinear,
align_corners=False) -> ReflectionPad2d(1) -> Conv3x3. Along one axis, with
x of length n and P the upsampled, padded signal (length 2n + 2), output
2i + a (phase a = 0, 1) is sum over taps t of k[t] P[2i + a + t], and away
from the borders P[2j] = .75 x[j - 1] + .25 x[j], P[2j + 1] = .75 x[j] +
.25 x[j - 1]. So phase a is a 3-tap convolution of x itself, with taps
sum_t k[t] M[a, t, d] for the neighbours d = -1, 0, 1 (`PHASE_MIX`), and in
2-D the four phases are one zero-padded 3x3 convolution of the small map
with 4 C_out output channels, then depth to space: the multiplies of the
original convolution, without the full-size upsampled and padded copies or
their gradients (on XLA:CPU eight full-size loop fusions per layer).

The zero padding gives P the ghosts x[-1] = x[n] = 0 (the map Z), where the
real P clamps and reflects (the map R). They differ at P[0], P[1], P[2n],
P[2n + 1] only (D = R - Z, `border_difference`), and R x R = Z x Z + D x R
+ Z x D, so the output is the phase convolution plus two convolutions of
strips four pixels wide (D x R: rows, Z x D: columns), added to its first
and last two rows and columns. The same sums in another order: float
rounding apart, `upsample_reflect_conv(x, k)` equals
`reference.upsample_reflect_conv(x, k)`. Plain `jax.lax` ops and the CPU
convolution (`conv`): differentiable like it.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from ihc_jax.kernels import reference
from ihc_jax.kernels.cpu import conv

# [phase a, tap t, neighbour d + 1]: P[2i + a + t] = sum_d PHASE_MIX[a, t, d + 1] x[i + d].
PHASE_MIX = np.array([[[.75, .25, 0.], [.25, .75, 0.], [0., .75, .25]],
                      [[.25, .75, 0.], [0., .75, .25], [0., .25, .75]]], np.float32)
# The smallest map side this form takes (`border_difference` reads x[1] and x[n - 2]).
MIN_SIZE = 2
# `upsample_reflect_conv` takes the fused form for maps of at least this many px a side.
# Measured on the 2-core CPU (AVX-512 AMD EPYC; G's up steps at official
# widths, batch 1, ms, three layers vs this form, forward / forward + both
# gradients, interleaved): 128 px 128 -> 3: 43 / 136 vs 11 / 27; 64 px
# 256 -> 64: 50 / 119 vs 39 / 72; 32 px 512 -> 128: 32 / 85 vs 50 / 100;
# 16 px 1024 -> 256: 44 / 72 vs 150 / 298 (XLA:CPU runs the phase
# convolution's 4 C_out outputs on a small map slowly).
FUSED_MIN_SIZE = 64


def phase_kernel(kernel: jax.Array) -> jax.Array:
  """[3, 3, C_in, C_out] -> [3, 3, C_in, 4 C_out], output channels ordered
  (row phase, column phase, C_out), in float32."""
  mix = jnp.asarray(PHASE_MIX)
  k = jnp.einsum("atd,bse,tsio->deiabo", mix, mix, kernel.astype(jnp.float32),
                 precision=jax.lax.Precision.HIGHEST)
  return k.reshape(3, 3, kernel.shape[2], 4 * kernel.shape[3])


def _take(x: jax.Array, index: int, axis: int) -> jax.Array:
  return jax.lax.index_in_dim(x, index, axis=axis, keepdims=True)


def _pad_one(x: jax.Array, axis: int, mode: str) -> jax.Array:
  """`jnp.pad` by one on both ends of `axis` only."""
  pads = [(0, 0)] * x.ndim
  pads[axis] = (1, 1)
  return jnp.pad(x, pads, mode=mode)


def zero_ghost_upsample(x: jax.Array, axis: int) -> jax.Array:
  """Z along `axis` (n -> 2n + 2): the interior formula with x[-1] = x[n] = 0."""
  n = x.shape[axis]
  xp = _pad_one(x, axis, "constant")
  prev = jax.lax.slice_in_dim(xp, 0, n + 1, axis=axis)
  cur = jax.lax.slice_in_dim(xp, 1, n + 2, axis=axis)
  shape = list(x.shape)
  shape[axis] = 2 * n + 2
  return jnp.stack([.75 * prev + .25 * cur, .75 * cur + .25 * prev], axis=axis + 1).reshape(shape)


def border_difference(x: jax.Array, axis: int) -> tuple[jax.Array, jax.Array]:
  """D = R - Z along `axis`: (its values at P[0], P[1]; at P[2n], P[2n + 1]),
  each two entries long on that axis (the rest of D is zero)."""
  first, second = _take(x, 0, axis), _take(x, 1, axis)
  last, before_last = _take(x, -1, axis), _take(x, -2, axis)
  start = jnp.concatenate([.5 * first + .25 * second, .25 * first], axis=axis)
  end = jnp.concatenate([.25 * last, .5 * last + .25 * before_last], axis=axis)
  return start, end


def reflect_upsample(x: jax.Array, axis: int) -> jax.Array:
  """R along `axis` (n -> 2n + 2): bilinear x2, then reflection by one."""
  return _pad_one(reference.upsample_axis_2x(x, axis), axis, "reflect")


def _strip_conv(start: jax.Array, end: jax.Array, kernel: jax.Array, axis: int
                ) -> tuple[jax.Array, jax.Array]:
  """The VALID convolutions of [start, 0, 0] and [0, 0, end] (two entries
  each along `axis`): the corrections of the first and last two outputs.

  XLA's convolution with the CPU gradients (`conv.conv_xla`), not a patch
  matmul, whose kernel gradient (a [9 C_in, C_out] product over few
  positions) is slow on XLA:CPU (benchmarks/RESULTS.md)."""
  zeros = jnp.zeros_like(start)
  strips = jnp.concatenate([jnp.concatenate([start, zeros], axis=axis),
                            jnp.concatenate([zeros, end], axis=axis)], axis=0)
  out = conv.conv_xla(strips, kernel, 1, ((0, 0), (0, 0)))
  return out[:start.shape[0]], out[start.shape[0]:]


def upsample_reflect_conv(x: jax.Array, kernel: jax.Array) -> jax.Array:
  """`reference.upsample_reflect_conv`: fused (`fused_upsample_reflect_conv`)
  on maps of at least `FUSED_MIN_SIZE` px a side, else the three layers with
  the CPU convolution."""
  if min(x.shape[1], x.shape[2]) >= max(FUSED_MIN_SIZE, MIN_SIZE):
    return fused_upsample_reflect_conv(x, kernel)
  return conv.conv2d(reference.reflect_pad(reference.upsample_bilinear_2x(x), 1),
                     kernel.astype(x.dtype))


def fused_upsample_reflect_conv(x: jax.Array, kernel: jax.Array) -> jax.Array:
  """Conv3x3(ReflectionPad2d(1)(Upsample(2, bilinear)(x))), no bias, as one
  convolution of the small map plus border strips (module docstring).

  Args:
    x: [B, n, m, C_in] with n, m >= `MIN_SIZE`.
    kernel: [3, 3, C_in, C_out] (HWIO), cast to x's dtype after mixing.

  Returns:
    [B, 2n, 2m, C_out] in x's dtype.
  """
  b, n, m, _ = x.shape
  if kernel.shape[:2] != (3, 3):
    raise ValueError(f"the fused up step needs a 3x3 kernel, got {kernel.shape}")
  if min(n, m) < MIN_SIZE:
    raise ValueError(f"the fused up step needs maps of at least {MIN_SIZE} px, "
                     f"got {n}x{m}")
  c_out = kernel.shape[3]
  k = kernel.astype(x.dtype)
  phases = conv.conv2d(x, phase_kernel(kernel).astype(x.dtype), 1, 1)
  y = phases.reshape(b, n, m, 2, 2, c_out).transpose(0, 1, 3, 2, 4, 5)
  y = y.reshape(b, 2 * n, 2 * m, c_out)
  # D x R: rows P[0], P[1] and P[2n], P[2n + 1], reflected and upsampled along the columns.
  top, bottom = (reflect_upsample(d, 2) for d in border_difference(x, 1))
  top, bottom = _strip_conv(top, bottom, k, axis=1)
  # Z x D: columns P[0], P[1] and P[2m], P[2m + 1], zero-ghost upsampled along the rows.
  left, right = (zero_ghost_upsample(d, 1) for d in border_difference(x, 2))
  left, right = _strip_conv(left, right, k, axis=2)
  y = y.at[:, :2].add(top).at[:, -2:].add(bottom)
  return y.at[:, :, :2].add(left).at[:, :, -2:].add(right)
