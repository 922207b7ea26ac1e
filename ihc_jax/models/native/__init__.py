"""A compiled kernel gradient for stride-1 convolutions on CPU (XLA FFI).

XLA:CPU's best formulations of the kernel gradient of the IHN's 64 -> 64
detail convolutions (`conv_grad.kernel_gradient_rows` and seven others,
benchmarks/RESULTS.md) copy or transpose the input and run at about 60 %
of its own forward convolution's rate. `conv_kernel_grad.cc` reads the input
and dY where they lie and accumulates dK in register tiles over blocks of
output rows (its header says how): 23 ms for that layer at 256 px on the
2-core AVX-512 EPYC (210 GFLOP/s, XLA's float32 matmul there: 170-200)
against the rows form's 42-56 ms.

It is compiled on first use, on CPU hosts with one device only, with the
C++ compiler of `$CXX` (else `c++`) against the XLA FFI headers jaxlib
ships (`jax.ffi.include_dir()`), for the host's own instruction set, and
kept in `$IHC_JAX_CACHE_DIR` (else `$XDG_CACHE_HOME/ihc_jax`, else
`~/.cache/ihc_jax`) under a name keyed by the source, the flags, the
compiler, jaxlib's version and the CPU, so hosts sharing a home directory
each get their own. Compiling takes about 5 s. Without a compiler, or where
it fails, a warning names the reason once and the convolutions keep their
XLA forms (`conv_grad`), with the same results to float rounding.
`IHC_JAX_NATIVE=0` turns it off.
"""

from __future__ import annotations

import ctypes
import hashlib
import logging
import os
import pathlib
import platform
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import jaxlib
import numpy as np

TARGET = "ihc_conv_kernel_grad"
SOURCE = pathlib.Path(__file__).with_name("conv_kernel_grad.cc")
FLAGS = ("-O3", "-march=native", "-std=c++17", "-shared", "-fPIC")
OUT_CHANNEL_MULTIPLE = 16


class BuildError(RuntimeError):
  """The kernel could not be compiled or loaded; the message says why."""


def enabled() -> bool:
  """Whether `IHC_JAX_NATIVE` (default on) allows the compiled kernel."""
  value = os.environ.get("IHC_JAX_NATIVE", "1").strip().lower()
  if value not in ("0", "1", "false", "true", "no", "yes", "off", "on"):
    raise ValueError(f"IHC_JAX_NATIVE must be 0 or 1 (or off/on, false/true, no/yes), "
                     f"got {value!r}")
  return value in ("1", "true", "yes", "on")


def available() -> bool:
  """Whether the compiled kernel gradient is registered with XLA:CPU.

  False where `IHC_JAX_NATIVE=0`, where the default backend is not the CPU
  (GPU and TPU hosts never build it), where there are several devices
  (XLA's partitioner cannot split a custom call over a sharded batch, so
  it would gather the whole batch on every device), or where compiling
  failed (the warning, logged once, says why). Builds and registers it on
  first call."""
  if not enabled() or jax.default_backend() != "cpu" or jax.device_count() > 1:
    return False
  return _registered()


_state: dict[str, bool] = {}  # "registered": the outcome of the one attempt
_lock = threading.Lock()


def _registered() -> bool:
  with _lock:
    if "registered" not in _state:
      _state["registered"] = _register()
    return _state["registered"]


def _register() -> bool:
  try:
    library = ctypes.CDLL(str(build()))
    handler = library.IhcConvKernelGrad
  except (BuildError, OSError, AttributeError) as err:
    logging.warning("ihc_jax: the compiled kernel gradient is unavailable, so "
                    "convolutions keep their XLA forms: %s", err)
    return False
  jax.ffi.register_ffi_target(TARGET, jax.ffi.pycapsule(handler), platform="cpu")
  return True


def cache_dir() -> pathlib.Path:
  """Where compiled kernels are kept (see the module docstring)."""
  if os.environ.get("IHC_JAX_CACHE_DIR"):
    return pathlib.Path(os.environ["IHC_JAX_CACHE_DIR"])
  base = os.environ.get("XDG_CACHE_HOME") or pathlib.Path.home() / ".cache"
  return pathlib.Path(base) / "ihc_jax"


def cpu_identity() -> str:
  """The CPU's model and instruction-set flags (what `-march=native` reads)."""
  try:
    lines = pathlib.Path("/proc/cpuinfo").read_text().splitlines()
  except OSError:
    lines = []
  wanted = ("model name", "flags", "features", "cpu part", "isa")
  found = {}
  for line in lines:
    key = line.split(":", 1)[0].strip().lower()
    if key in wanted and key not in found:
      found[key] = line
  return "\n".join(found.values()) or f"{platform.machine()} {platform.processor()}"


def compiler() -> str:
  """The C++ compiler used: `$CXX`, else `c++`."""
  return os.environ.get("CXX", "c++")


def library_path() -> pathlib.Path:
  """Where the compiled kernel for this source, compiler, jaxlib and CPU
  is kept (whether or not it is built yet)."""
  key = hashlib.sha256(b"\0".join([
      SOURCE.read_bytes(), " ".join(FLAGS).encode(), compiler().encode(),
      jaxlib.__version__.encode(),
      cpu_identity().encode()])).hexdigest()[:16]
  return cache_dir() / f"conv_kernel_grad-{key}.so"


def build() -> pathlib.Path:
  """The compiled kernel's path (`library_path`), compiling it if needed.

  Raises:
    BuildError: naming the missing compiler or the compiler's errors.
  """
  target = library_path()
  if target.exists():
    return target
  if shutil.which(compiler()) is None:
    raise BuildError(f"no C++ compiler {compiler()!r} on PATH (set $CXX)")
  try:
    target.parent.mkdir(parents=True, exist_ok=True)
  except OSError as err:
    raise BuildError(f"cannot create the cache directory {target.parent}: {err}") from err
  fd, partial = tempfile.mkstemp(prefix=".partial-", suffix=".so", dir=target.parent)
  os.close(fd)
  command = [compiler(), *FLAGS, "-isystem", jax.ffi.include_dir(), str(SOURCE), "-o", partial]
  try:
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
      raise BuildError(f"`{' '.join(command)}` failed:\n{result.stderr[-2000:]}")
    os.replace(partial, target)  # atomic: concurrent builders each write their own
  finally:
    if os.path.exists(partial):
      os.remove(partial)
  return target


def supports(kernel_shape: Sequence[int], stride: int, dtype) -> bool:
  """Whether the compiled kernel computes this gradient: stride 1, float32,
  output channels a multiple of `OUT_CHANNEL_MULTIPLE` (its vector width)."""
  return (stride == 1 and jnp.dtype(dtype) == jnp.float32
          and kernel_shape[3] % OUT_CHANNEL_MULTIPLE == 0)


def kernel_gradient(x: jax.Array, kernel: jax.Array, dy: jax.Array,
                    padding: tuple[tuple[int, int], tuple[int, int]]) -> jax.Array:
  """dK of a stride-1 convolution, by the compiled kernel (CPU only).

  Args:
    x: the convolution's input [B, H, W, C_in], float32.
    kernel: its kernel [kh, kw, C_in, C_out] (only shape and dtype are read).
    dy: the output cotangent [B, H', W', C_out], float32.
    padding: the convolution's zero padding ((top, bottom), (left, right));
      the bottom and right follow from H' and W'.

  Returns:
    dK [kh, kw, C_in, C_out], float32.

  Raises:
    ValueError: for inputs it does not take (see `supports`).
    BuildError: where the kernel could not be built or loaded (the warning
      logged says why).
  """
  if not supports(kernel.shape, 1, x.dtype) or dy.dtype != jnp.float32:
    raise ValueError(f"the compiled kernel gradient takes float32 and output channels "
                     f"a multiple of {OUT_CHANNEL_MULTIPLE}, got {x.dtype}, {dy.dtype} "
                     f"and kernel {tuple(kernel.shape)}")
  if not _registered():
    raise BuildError("the compiled kernel gradient is unavailable (the warning logged "
                     "says why); conv_grad's XLA forms compute the same gradient")
  call = jax.ffi.ffi_call(TARGET, jax.ShapeDtypeStruct(kernel.shape, jnp.float32),
                          vmap_method="sequential")
  return call(x, dy, pad_top=np.int64(padding[0][0]), pad_left=np.int64(padding[1][0]))
