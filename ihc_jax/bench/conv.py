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

With `--kernel-grads` it times, over the networks' layer shapes
(`GRAD_LAYERS`), the gradient forms of `ihc_jax.models.conv_grad`: the
kernel gradient as XLA's, as XLA's of the explicitly padded input
(`kernel_gradient_padded`), as one matmul per kernel tap
(`kernel_gradient_taps`), as one convolution down the rows
(`kernel_gradient_rows`) and as one matmul of the input with dY's shifted
copies (`kernel_gradient_shifted`); for strided layers also the input gradient as
XLA's and as one convolution per input phase (`input_gradient_phases`).
Each line says which forms the models pick on CPU.

With `--small` it times instead the two forms `ihc_jax.models.layers`
chooses between for the U-Nets' small maps (`SMALL_LAYERS`: the dense
bottleneck's 3x3 conv on the 2x2 innermost map, the reflect-padded up convs
and the 4x4 stride-2 down convs at 4-32 px): XLA's convolution
(`conv_valid_xla`) and one matmul of the patch matrix (`conv_valid_matmul`),
forward and forward + both gradients, and the maximum difference of their
outputs. The models take the matmul form only up to
`layers.MATMUL_CONV_MAX_POSITIONS` outputs (its comment says why).

  python -m ihc_jax.bench conv
  python -m ihc_jax.bench conv --size 128 --channels 128 --torch
  python -m ihc_jax.bench conv --small --batch 8
  python -m ihc_jax.bench conv --kernel-grads --batch 4
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any

import jax
import numpy as np

from ihc_jax.models import conv_grad, native


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

  def models_taps(x, kernel, dy):
    pad = kernel.shape[0] // 2
    return conv_grad.kernel_gradient_taps(x, kernel, dy, 1, ((pad, pad), (pad, pad)))

  return {"kernel gradient, shifted taps": jax.jit(shifted_taps),
          "kernel gradient, im2col": jax.jit(im2col),
          "kernel gradient, taps loop": jax.jit(models_taps)}


# (name, output map size, C_in, C_out, kernel, stride): convolutions of the
# official-width networks at 256 px input (the U-Nets' up convs and E's
# convs are reflect-padded; their kernel gradient is that of the padded
# convolution, timed here with zero padding).
GRAD_LAYERS = (
    ("IHN detail 3x3", 256, 64, 64, 3, 1),
    ("E input 7x7", 256, 3, 64, 7, 1),
    ("E down 4x4 s2", 128, 64, 128, 4, 2),
    ("E residual 3x3", 64, 256, 256, 3, 1),
    ("G first down", 128, 10, 64, 4, 2),
    ("G down 4x4 s2", 64, 64, 128, 4, 2),
    ("G down 4x4 s2", 32, 128, 256, 4, 2),
    ("G down 4x4 s2", 16, 256, 512, 4, 2),
    ("G up 3x3", 128, 256, 64, 3, 1),
    ("G up 3x3", 64, 512, 128, 3, 1),
    ("G up 3x3", 32, 1024, 256, 3, 1),
    ("G up 3x3", 16, 1024, 512, 3, 1),
    ("D 4x4 s2", 128, 11, 64, 4, 2),
    ("D 4x4 s1", 31, 256, 512, 4, 1),
    ("G last 3x3", 256, 128, 3, 3, 1),
    ("IHN out 3x3", 256, 64, 1, 3, 1),
    ("U-Net out 3x3", 256, 128, 1, 3, 1),
)


def kernel_grads_main(batch: int, repeats: int,
                      grad_layers: Sequence[tuple[Any, ...]] = GRAD_LAYERS) -> None:
  """Times the gradient forms of `conv_grad` on `GRAD_LAYERS`: the kernel
  gradient as XLA's, padded, taps and rows, and for strided layers the input
  gradient as XLA's and phases."""
  rng = np.random.default_rng(0)
  print(f"convolution gradients, batch {batch}, median of {repeats}, backend "
        f"{jax.default_backend()}, ms: kernel gradient as XLA's, of the padded input, taps, rows, shifted, "
        f"native (compiled; '-' where unavailable or not applicable); "
        f"input gradient (strided layers) as XLA's, phases; 'models' is what "
        f"ihc_jax.models.conv_grad picks on CPU")
  for name, size, c_in, c_out, k, stride in grad_layers:
    padding = ((k - 1) // 2, k // 2) if stride == 1 else (1, 1)
    pads = (padding, padding)
    x = jax.numpy.asarray(rng.random((batch, size * stride, size * stride, c_in),
                                     np.float32))
    kernel = jax.numpy.asarray(rng.standard_normal((k, k, c_in, c_out)).astype(np.float32))
    dy = jax.numpy.asarray(rng.random(
        conv_grad.xla_conv(x, kernel, stride, pads).shape, np.float32))
    forms = {"xla": conv_grad.kernel_gradient_xla, "padded": conv_grad.kernel_gradient_padded,
             "taps": conv_grad.kernel_gradient_taps, "rows": conv_grad.kernel_gradient_rows,
             "shifted": conv_grad.kernel_gradient_shifted}
    if native.available() and native.supports(kernel.shape, stride, kernel.dtype):
      forms["native"] = conv_grad.kernel_gradient_native
    if stride > 1:
      forms.update({"dx xla": conv_grad.input_gradient_xla,
                    "dx phases": conv_grad.input_gradient_phases})
    forms = {form: jax.jit(lambda x, k, dy, f=f: f(x, k, dy, stride, pads))
             for form, f in forms.items()}
    ms = _interleaved_median_ms(
        {form: (lambda f=f: jax.block_until_ready(f(x, kernel, dy))) for form, f in forms.items()},
        repeats)
    out = {form: f(x, kernel, dy) for form, f in forms.items()}
    diff = max(_relative_difference(out[a], out[b])
               for a, b in (("padded", "xla"), ("taps", "xla"), ("rows", "xla"), ("shifted", "xla"),
                            ("native", "xla"), ("dx phases", "dx xla"))
               if a in out)
    picked = conv_grad.kernel_gradient_form(kernel.shape, dy.shape, stride)
    line = (f"  {name:15s} {size:3d} px {c_in:4d}->{c_out:<4d} {k}x{k} s{stride}  dK "
            + " ".join(f"{ms[form]:8.2f}" if form in ms else f"{'-':>8s}"
                       for form in ("xla", "padded", "taps", "rows", "shifted", "native"))
            + f"  models: {picked:6s}")
    if stride > 1:
      dx_picked = "phases" if conv_grad.uses_phases(kernel.shape, dy.shape, stride) else "xla"
      line += (f"  dX {ms['dx xla']:8.2f} {ms['dx phases']:8.2f}  models: {dx_picked:6s}")
    print(line + f"  rel diff {diff:.1e}", flush=True)


def _relative_difference(a: Any, b: Any) -> float:
  return float(jax.numpy.max(jax.numpy.abs(a - b)) / jax.numpy.max(jax.numpy.abs(b)))


# (name, map size, C_in, C_out, kernel, stride, padding, reflect): layers of
# the official-width U-Nets at 256 px input whose outputs are 2-32 px.
SMALL_LAYERS = (
    ("dense 3x3", 2, 1024, 256, 3, 1, 1, False),
    ("up 3x3 reflect", 4, 1024, 512, 3, 1, 1, True),
    ("up 3x3 reflect", 8, 1024, 512, 3, 1, 1, True),
    ("up 3x3 reflect", 16, 1024, 512, 3, 1, 1, True),
    ("up 3x3 reflect", 32, 1024, 256, 3, 1, 1, True),
    ("down 4x4 s2", 8, 512, 512, 4, 2, 1, False),
    ("down 4x4 s2", 16, 256, 512, 4, 2, 1, False),
    ("down 4x4 s2", 32, 128, 256, 4, 2, 1, False),
)


def small_conv_forms(stride: int, padding: int, reflect: bool
                     ) -> dict[str, tuple[Callable[..., Any], Callable[..., Any]]]:
  """form -> (jitted forward(x, kernel), jitted forward + both gradients)."""
  from ihc_jax.models import layers  # pylint: disable=g-import-not-at-top

  def padded(x):
    if reflect:
      return layers.reflect_pad(x, padding)
    return jax.numpy.pad(x, ((0, 0), (padding, padding), (padding, padding), (0, 0)))

  forms = {}
  for name, valid in (("xla", layers.conv_valid_xla), ("matmul", layers.conv_valid_matmul)):
    forward = lambda x, k, valid=valid: valid(padded(x), k, stride)
    grads = jax.grad(lambda x, k, f=forward: jax.numpy.sum(f(x, k) ** 2), argnums=(0, 1))
    forms[name] = (jax.jit(forward), jax.jit(grads))
  return forms


def _small_main(batch: int, repeats: int) -> None:
  """Times both forms of every `SMALL_LAYERS` layer, interleaved."""
  rng = np.random.default_rng(0)
  print(f"small convolutions, batch {batch}, median of {repeats}, backend "
        f"{jax.default_backend()}: XLA conv vs one matmul (ms)")
  for name, size, c_in, c_out, k, stride, padding, reflect in SMALL_LAYERS:
    x = jax.numpy.asarray(rng.random((batch, size, size, c_in), np.float32))
    kernel = jax.numpy.asarray((rng.standard_normal((k, k, c_in, c_out)) /
                                np.sqrt(k * k * c_in)).astype(np.float32))
    forms = small_conv_forms(stride, padding, reflect)
    calls = {(form, part): (lambda f=f: jax.block_until_ready(f(x, kernel)))
             for form, fns in forms.items() for part, f in zip(("fwd", "grad"), fns)}
    ms = _interleaved_median_ms(calls, repeats)
    diff = float(jax.numpy.max(jax.numpy.abs(forms["xla"][0](x, kernel) -
                                             forms["matmul"][0](x, kernel))))
    print(f"  {name:15s} {size:3d} px {c_in:4d}->{c_out:<4d} forward "
          f"{ms['xla', 'fwd']:8.2f} -> {ms['matmul', 'fwd']:8.2f} ({ms['xla', 'fwd'] / ms['matmul', 'fwd']:5.2f}x)"
          f"  fwd+grads {ms['xla', 'grad']:8.2f} -> {ms['matmul', 'grad']:8.2f} "
          f"({ms['xla', 'grad'] / ms['matmul', 'grad']:5.2f}x)  max diff {diff:.1e}", flush=True)


def _interleaved_median_ms(calls: dict[Any, Callable[[], Any]], repeats: int
                           ) -> dict[Any, float]:
  """Median ms per call: one warm-up call each (compiles), then `repeats`
  rounds over all calls, interleaved so that every call sees one load."""
  for fn in calls.values():
    fn()
  times = {key: [] for key in calls}
  for _ in range(repeats):
    for key, fn in calls.items():
      start = time.perf_counter()
      fn()
      times[key].append(1e3 * (time.perf_counter() - start))
  return {key: statistics.median(values) for key, values in times.items()}


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
  parser.add_argument("--kernel-grads", action="store_true",
                      help="time XLA's kernel gradient against the taps form on the networks' layers")
  parser.add_argument("--small", action="store_true",
                      help="time XLA's conv against one matmul on the U-Nets' small maps")
  args = parser.parse_args(argv)
  if args.small:
    _small_main(args.batch, args.repeats)
    return
  if args.kernel_grads:
    kernel_grads_main(args.batch, args.repeats)
    return
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
  results = _interleaved_median_ms(items, args.repeats)
  for name, value in results.items():
    print(f"  {name:32s} {value:9.1f} ms")
  if rewrites:
    xla = passes["kernel gradient"](*arrays)
    for name, fn in rewrites.items():
      error = float(jax.numpy.max(jax.numpy.abs(fn(*arrays) - xla)) /
                    jax.numpy.max(jax.numpy.abs(xla)))
      print(f"  {name}: max difference to XLA's {error:.1e} of its largest")
  print(f"kernel gradient / forward: "
        f"{results['kernel gradient'] / results['forward']:.1f}x")
