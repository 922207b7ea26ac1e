"""One convolution's three passes: `python -m ihc_jax.bench conv [options]`.

A training step runs every convolution three times: forward, gradient with
respect to the input, gradient with respect to the kernel. This times the
three apart, jitted, on one layer (default: the IHN detail branch's 3x3
64 -> 64 conv at 256x256, batch 1, which the IHN has 16 of at full
resolution), and, with `--torch`, PyTorch's forward and forward+backward of
the same layer in the same process, interleaved. With `--rewrites` it also
times two hand-written kernel gradients that a custom VJP could use: one
matmul per kernel tap over the shifted input ("shifted taps"), and one
matmul of the im2col patch matrix. Random inputs.

  python -m ihc_jax.bench conv
  python -m ihc_jax.bench conv --size 128 --channels 128 --torch
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any

import jax
import numpy as np


def _conv(x: jax.Array, kernel: jax.Array) -> jax.Array:
  pad = kernel.shape[0] // 2
  return jax.lax.conv_general_dilated(
      x, kernel, (1, 1), ((pad, pad), (pad, pad)),
      dimension_numbers=("NHWC", "HWIO", "NHWC"))


def jax_passes() -> dict[str, Callable[..., Any]]:
  """name -> jitted fn(x, kernel, dy) for forward, input and kernel grads."""
  return {
      "forward": jax.jit(lambda x, k, dy: _conv(x, k)),
      "input gradient": jax.jit(
          lambda x, k, dy: jax.vjp(lambda x: _conv(x, k), x)[1](dy)[0]),
      "kernel gradient": jax.jit(
          lambda x, k, dy: jax.vjp(lambda k: _conv(x, k), k)[1](dy)[0]),
  }


def _shifted_windows(x: jax.Array, kernel_size: int) -> list[jax.Array]:
  """The k*k shifted views of the zero-padded x, one per kernel tap."""
  pad = kernel_size // 2
  n, h, w, c = x.shape
  xp = jax.numpy.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
  return [jax.lax.slice(xp, (0, i, j, 0), (n, i + h, j + w, c))
          for i in range(kernel_size) for j in range(kernel_size)]


def _contract_pixels(a: jax.Array, b: jax.Array) -> jax.Array:
  """sum over pixels of a[p, :]^T b[p, :] for [N, H, W, C] inputs."""
  return jax.lax.dot_general(a.reshape(-1, a.shape[-1]),
                             b.reshape(-1, b.shape[-1]),
                             (((0,), (0,)), ((), ())))


def kernel_gradient_rewrites() -> dict[str, Callable[..., Any]]:
  """name -> jitted fn(x, kernel, dy): the kernel gradient written by hand."""
  def shifted_taps(x, kernel, dy):
    k = kernel.shape[0]
    taps = [_contract_pixels(v, dy) for v in _shifted_windows(x, k)]
    return jax.numpy.stack(taps).reshape(kernel.shape)

  def im2col(x, kernel, dy):
    patches = jax.numpy.concatenate(_shifted_windows(x, kernel.shape[0]), -1)
    return _contract_pixels(patches, dy).reshape(kernel.shape)

  return {"kernel gradient, shifted taps": jax.jit(shifted_taps),
          "kernel gradient, im2col": jax.jit(im2col)}


def _time_ms(fn: Callable[[], Any]) -> float:
  start = time.perf_counter()
  fn()
  return 1e3 * (time.perf_counter() - start)


def _torch_passes(x: np.ndarray, kernel: np.ndarray, dy: np.ndarray
                  ) -> dict[str, Callable[[], Any]]:
  import torch  # pylint: disable=g-import-not-at-top
  tx = torch.tensor(x.transpose(0, 3, 1, 2).copy(), requires_grad=True)
  tk = torch.tensor(kernel.transpose(3, 2, 0, 1).copy(), requires_grad=True)
  tdy = torch.tensor(dy.transpose(0, 3, 1, 2).copy())
  pad = kernel.shape[0] // 2

  def forward():
    with torch.no_grad():
      return torch.nn.functional.conv2d(tx, tk, padding=pad)

  def forward_backward():
    torch.nn.functional.conv2d(tx, tk, padding=pad).backward(tdy)

  return {"torch forward": forward,
          "torch forward + both gradients": forward_backward}


def main(argv: Sequence[str]) -> None:
  parser = argparse.ArgumentParser(prog="python -m ihc_jax.bench conv")
  parser.add_argument("--size", type=int, default=256)
  parser.add_argument("--channels", type=int, default=64)
  parser.add_argument("--kernel", type=int, default=3)
  parser.add_argument("--batch", type=int, default=1)
  parser.add_argument("--repeats", type=int, default=5)
  parser.add_argument("--torch", action="store_true",
                      help="also time PyTorch's conv2d on the same layer")
  parser.add_argument("--rewrites", action="store_true",
                      help="also time two hand-written kernel gradients")
  args = parser.parse_args(argv)
  rng = np.random.default_rng(0)
  c, s = args.channels, args.size
  x = rng.random((args.batch, s, s, c), np.float32)
  kernel = (rng.standard_normal((args.kernel, args.kernel, c, c)) /
            np.sqrt(args.kernel**2 * c)).astype(np.float32)
  dy = rng.random((args.batch, s, s, c), np.float32)
  arrays = tuple(jax.numpy.asarray(a) for a in (x, kernel, dy))
  passes = jax_passes()
  rewrites = kernel_gradient_rewrites() if args.rewrites else {}
  items = {name: (lambda f=f: jax.block_until_ready(f(*arrays)))
           for name, f in {**passes, **rewrites}.items()}
  if args.torch:
    items.update(_torch_passes(x, kernel, dy))
  print(f"conv {args.kernel}x{args.kernel} {c}->{c}, {args.batch}x{s}x{s}, "
        f"median of {args.repeats}, backend {jax.default_backend()}")
  for fn in items.values():  # compile and warm up
    fn()
  results = {name: [] for name in items}
  for _ in range(args.repeats):  # interleaved, so every item sees one load
    for name, fn in items.items():
      results[name].append(_time_ms(fn))
  for name, values in results.items():
    print(f"  {name:32s} {statistics.median(values):9.1f} ms")
  if rewrites:
    xla = passes["kernel gradient"](*arrays)
    for name, fn in rewrites.items():
      error = float(jax.numpy.max(jax.numpy.abs(fn(*arrays) - xla)) /
                    jax.numpy.max(jax.numpy.abs(xla)))
      print(f"  {name}: max difference to XLA's {error:.1e} of its largest")
  forward = statistics.median(results["forward"])
  print(f"kernel gradient / forward: "
        f"{statistics.median(results['kernel gradient']) / forward:.1f}x")
