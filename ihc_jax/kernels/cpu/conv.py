"""XLA:CPU's fast forms of `reference.conv2d`, differentiable to any order.

Forward: an output of at most `MATMUL_MAX_POSITIONS` pixels per image is one
matmul of the patch matrix (`conv_matmul`); an unpadded stride-1 convolution
with an odd kernel runs as XLA's padded convolution with the extra output
ring cropped (`conv_pad_and_crop`); the rest is XLA's convolution. All are
the same sums as `reference.conv2d` in another order.

Derivatives: XLA's convolution here (`conv_xla`) is a `jax.custom_jvp`
whose tangent is written so that its transpose, which reverse mode runs, is
the fastest gradient form of `conv_grads` for the layer. For a gradient
form g(dY), linear in dY, the tangent is g's transpose applied to the
kernel's (or input's) tangent (`_transpose_of`); JAX transposes it back to
g. Every form is made of `jax.lax` ops in x, the kernel and dY, so forward
mode (`jax.jvp`, `jax.jacfwd`), reverse mode and any composition of the two
(Hessian-vector products, gradients of gradients) go through, with the
same values as the reference to float rounding. The tangent is rematerialised
(`jax.checkpoint`): reverse mode keeps x and the kernel, as XLA's own
gradient does, and recomputes the form's copies of x in the backward pass.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp

from ihc_jax.kernels import reference
from ihc_jax.kernels.cpu import conv_grads

Padding = reference.Padding

# Convolutions with at most this many output positions per image run as one
# matmul over a patch matrix: XLA:CPU turns a convolution whose input is
# smaller than its kernel into one with input and kernel swapped, on a slow
# generic path (the IHN's dense-block 1024 -> 256 conv on its 2x2 innermost
# map: 17.6 ms forward against 1.6 ms as a matmul; benchmarks/RESULTS.md).
MATMUL_MAX_POSITIONS = 2 * 2


def conv2d(x: jax.Array, kernel: jax.Array, stride: int = 1,
           padding: int | tuple[tuple[int, int], tuple[int, int]] = 0) -> jax.Array:
  """`reference.conv2d` in the form XLA:CPU runs fastest (`forward_form`)."""
  pads = reference.padding_pairs(padding)
  form = forward_form(x.shape, kernel.shape, stride, pads)
  if form == "matmul":
    return conv_matmul(x, kernel, stride, pads)
  if form == "pad_and_crop":
    return conv_pad_and_crop(x, kernel)
  return conv_xla(x, kernel, stride, pads)


def forward_form(x_shape, kernel_shape, stride: int, padding: Padding) -> str:
  """'matmul' for at most `MATMUL_MAX_POSITIONS` output pixels per image,
  'pad_and_crop' for an unpadded stride-1 convolution with an odd square
  kernel larger than 1x1, else 'xla'."""
  _, out_h, out_w, _ = output_shape(x_shape, kernel_shape, stride, padding)
  k_h, k_w = kernel_shape[:2]
  if out_h * out_w <= MATMUL_MAX_POSITIONS:
    return "matmul"
  if (padding == ((0, 0), (0, 0)) and stride == 1 and k_h == k_w and k_h % 2 == 1
      and k_h > 1):
    return "pad_and_crop"
  return "xla"


def conv_matmul(x: jax.Array, kernel: jax.Array, stride: int, padding: Padding) -> jax.Array:
  """The convolution as one matmul of the [B, H', W', kh*kw*C_in] patch
  matrix (taps in HWI order) with the kernel as [kh*kw*C_in, C_out]."""
  (top, bottom), (left, right) = padding
  x = jnp.pad(x, ((0, 0), (top, bottom), (left, right), (0, 0)))
  k_h, k_w = kernel.shape[:2]
  out_h = (x.shape[1] - k_h) // stride + 1
  out_w = (x.shape[2] - k_w) // stride + 1
  patches = jnp.concatenate([
      x[:, i:i + stride * (out_h - 1) + 1:stride, j:j + stride * (out_w - 1) + 1:stride]
      for i in range(k_h) for j in range(k_w)], axis=-1)
  return jnp.einsum("bhwp,po->bhwo", patches, kernel.reshape(-1, kernel.shape[-1]))


def conv_pad_and_crop(x: jax.Array, kernel: jax.Array) -> jax.Array:
  """An unpadded stride-1 convolution (odd kernel) as the padded one, cropped.

  XLA:CPU runs a VALID convolution 3-4x slower than one with explicit
  padding, so x is convolved with `pad = (k - 1) // 2` zeros more and the
  outer output ring (windows that overlap the zeros) is cropped: the kept
  outputs read exactly the VALID windows. The ring costs (1 + 2 pad / H')^2
  - 1 more work (6 % for a 3x3 conv at 64 px).
  """
  pad = (kernel.shape[0] - 1) // 2
  y = conv_xla(x, kernel, 1, ((pad, pad), (pad, pad)))
  return y[:, pad:-pad, pad:-pad, :]


@functools.partial(jax.custom_jvp, nondiff_argnums=(2, 3))
def conv_xla(x: jax.Array, kernel: jax.Array, stride: int, padding: Padding) -> jax.Array:
  """XLA's convolution whose derivatives run `conv_grads`' forms."""
  return reference.conv2d(x, kernel, stride, padding)


def _transpose_of(gradient: Callable[[jax.Array], jax.Array],
                  cotangent: jax.ShapeDtypeStruct) -> Callable[[jax.Array], jax.Array]:
  """The linear map whose transpose is `gradient` (linear in its argument, a
  value like `cotangent`)."""
  transposed = jax.linear_transpose(gradient, cotangent)
  return lambda tangent: transposed(tangent)[0]


def input_tangent(x: jax.Array, kernel: jax.Array, dx: jax.Array, stride: int,
                  padding: Padding) -> jax.Array:
  """conv(dx, kernel), written as the transpose of the CPU input gradient."""
  y = jax.ShapeDtypeStruct(output_shape(x.shape, kernel.shape, stride, padding), dx.dtype)
  if not conv_grads.uses_phases(kernel.shape, y.shape, stride):
    return reference.conv2d(dx, kernel, stride, padding)
  return _transpose_of(
      lambda dy: conv_grads.input_gradient_phases(x, kernel, dy, stride, padding), y)(dx)


def kernel_tangent(x: jax.Array, kernel: jax.Array, dk: jax.Array, stride: int,
                   padding: Padding) -> jax.Array:
  """conv(x, dk), written as the transpose of the CPU kernel gradient."""
  y = jax.ShapeDtypeStruct(output_shape(x.shape, kernel.shape, stride, padding), dk.dtype)
  form = conv_grads.kernel_gradient_form(kernel.shape, y.shape, stride)
  if form == "xla":
    return reference.conv2d(x, dk, stride, padding)
  gradient = conv_grads.KERNEL_GRADIENTS[form]
  return _transpose_of(lambda dy: gradient(x, kernel, dy, stride, padding), y)(dk)


def output_shape(x_shape, kernel_shape, stride: int, padding: Padding) -> tuple[int, ...]:
  """[B, H', W', C_out] of the convolution of an x_shape input."""
  (top, bottom), (left, right) = padding
  return (x_shape[0], (x_shape[1] + top + bottom - kernel_shape[0]) // stride + 1,
          (x_shape[2] + left + right - kernel_shape[1]) // stride + 1, kernel_shape[3])


def _is_zero(tangent) -> bool:
  return isinstance(tangent, jax.custom_derivatives.SymbolicZero)


@functools.partial(jax.checkpoint, static_argnums=(4, 5))
def _tangent(x: jax.Array, kernel: jax.Array, dx: jax.Array | None,
             dk: jax.Array | None, stride: int, padding: Padding) -> jax.Array:
  out = None
  if dx is not None:
    out = input_tangent(x, kernel, dx, stride, padding)
  if dk is not None:
    t = kernel_tangent(x, kernel, dk, stride, padding)
    out = t if out is None else out + t
  return out


def _conv_xla_jvp(stride, padding, primals, tangents):
  x, kernel = primals
  dx, dk = tangents
  y = conv_xla(x, kernel, stride, padding)
  dx = None if _is_zero(dx) else dx
  dk = None if _is_zero(dk) else dk
  if dx is None and dk is None:
    return y, jnp.zeros_like(y)
  return y, _tangent(x, kernel, dx, dk, stride, padding)


conv_xla.defjvp(_conv_xla_jvp, symbolic_zeros=True)
