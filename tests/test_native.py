"""The compiled kernel gradient (`ihc_jax.models.native`): its build, its
results against a float64 reference and XLA's, the rule that picks it, and
its failures. Random inputs made here."""

import logging
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ihc_jax.models import conv_grad, native

HAS_COMPILER = shutil.which(native.compiler()) is not None
needs_native = pytest.mark.skipif(
    not (HAS_COMPILER and native.enabled()),
    reason="no C++ compiler on PATH (or IHC_JAX_NATIVE=0): the kernel cannot be built")


def _reference(x, dy, kh, kw, padding):
  """dK in float64 by its definition: a sum over taps of X_pad^T dY."""
  (top, bottom), (left, right) = padding
  x = np.pad(np.asarray(x, np.float64), ((0, 0), (top, bottom), (left, right), (0, 0)))
  dy = np.asarray(dy, np.float64)
  _, ho, wo, _ = dy.shape
  return np.stack([np.stack([np.einsum("byxc,byxo->co", x[:, i:i + ho, j:j + wo], dy)
                             for j in range(kw)]) for i in range(kh)])


@needs_native
def test_the_kernel_builds_where_a_compiler_is():
  """With a C++ compiler, the kernel compiles, loads and is registered (a
  broken source or flag would turn every test below into the fallback)."""
  assert native.available()
  assert native.build().name.startswith("conv_kernel_grad-")


@needs_native
@pytest.mark.parametrize("batch,h,w,c_in,c_out,kh,kw,padding", [
    (1, 20, 17, 64, 64, 3, 3, ((1, 1), (1, 1))),    # several tiles, ragged last ones
    (2, 9, 150, 7, 16, 3, 3, ((1, 1), (1, 1))),     # columns past one segment
    (1, 15, 15, 3, 48, 7, 7, ((3, 3), (3, 3))),     # E's input conv: few channels
    (3, 12, 10, 13, 80, 4, 4, ((1, 2), (2, 1))),    # even kernel, asymmetric padding
    (1, 11, 13, 5, 32, 3, 3, ((0, 0), (0, 0))),     # VALID
    (1, 6, 7, 300, 16, 1, 1, ((0, 0), (0, 0))),     # 1x1 with many channels
    (1, 5, 5, 4, 16, 3, 3, ((3, 0), (0, 3))),       # padding wider than the kernel's reach
    (0, 5, 5, 4, 16, 3, 3, ((1, 1), (1, 1))),       # no images: an empty sum
    (1, 5, 2, 4, 16, 3, 3, ((0, 0), (0, 0))),       # no output columns: an empty sum
])
def test_kernel_gradient_matches_the_definition(batch, h, w, c_in, c_out, kh, kw, padding):
  rng = np.random.default_rng(0)
  x = rng.standard_normal((batch, h, w, c_in)).astype(np.float32)
  kernel = jnp.zeros((kh, kw, c_in, c_out), jnp.float32)
  out_shape = conv_grad.xla_conv(jnp.asarray(x), kernel, 1, padding).shape
  dy = rng.standard_normal(out_shape).astype(np.float32)
  got = jax.jit(lambda x, dy: native.kernel_gradient(x, kernel, dy, padding))(x, dy)
  want = _reference(x, dy, kh, kw, padding)
  assert got.shape == want.shape and got.dtype == jnp.float32
  np.testing.assert_allclose(np.asarray(got), want, rtol=0, atol=2e-5 * np.abs(want).max(initial=1))
  # As close to the float64 sum as XLA's own float32 kernel gradient.
  xla = np.asarray(conv_grad.kernel_gradient_xla(jnp.asarray(x), kernel, jnp.asarray(dy), 1,
                                                 padding))
  assert np.abs(np.asarray(got) - want).max() <= 4 * np.abs(xla - want).max() + 1e-6


@needs_native
def test_conv_takes_the_native_kernel_gradient_on_large_maps():
  """A stride-1 float32 conv with >= NATIVE_MIN_POSITIONS output pixels and
  16k output channels gets the compiled kernel gradient inside `conv`'s
  VJP on CPU: its custom call is in the compiled step, and both gradients
  equal XLA's."""
  rng = np.random.default_rng(3)
  side = int(np.ceil(np.sqrt(conv_grad.NATIVE_MIN_POSITIONS)))
  x = jnp.asarray(rng.standard_normal((1, side, side + 3, 8)), jnp.float32)
  kernel = jnp.asarray(rng.standard_normal((3, 3, 8, 16)) * 0.1, jnp.float32)
  pads = ((1, 1), (1, 1))
  dy = jnp.asarray(rng.standard_normal((1, side, side + 3, 16)), jnp.float32)
  assert conv_grad.kernel_gradient_form(kernel.shape, dy.shape, 1) == "native"

  def vjp(conv_fn):
    return jax.jit(lambda x, k: jax.vjp(lambda x, k: conv_fn(x, k, 1, pads), x, k)[1](dy))

  ours = vjp(conv_grad.conv)
  assert native.TARGET in ours.lower(x, kernel).as_text()
  with conv_grad.xla_gradients():
    xla = vjp(conv_grad.conv)
    assert native.TARGET not in xla.lower(x, kernel).as_text()
  for a, b in zip(ours(x, kernel), xla(x, kernel)):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=0,
                               atol=2e-5 * float(jnp.abs(b).max()))


def test_rule_layers_it_takes_and_leaves():
  with conv_grad.without_native():
    assert not conv_grad.uses_native((3, 3, 64, 64), (1, 256, 256, 64), 1)
    assert conv_grad.kernel_gradient_form((3, 3, 64, 64), (1, 256, 256, 64), 1) == "rows"
  # Whatever the host: strides, other dtypes, output channels that are not a
  # multiple of 16, kernels above NATIVE_MAX_KERNEL_ELEMENTS (E's residual
  # convs, the U-Nets' widest up convs) and tiny maps keep the XLA forms.
  assert not conv_grad.uses_native((4, 4, 64, 128), (1, 128, 128, 128), 2)
  assert not conv_grad.uses_native((3, 3, 64, 64), (1, 256, 256, 64), 1, jnp.bfloat16)
  assert not conv_grad.uses_native((3, 3, 128, 3), (1, 256, 256, 3), 1)
  assert not conv_grad.uses_native((3, 3, 64, 24), (1, 256, 256, 24), 1)
  assert not conv_grad.uses_native((3, 3, 256, 256), (4, 64, 64, 256), 1)
  assert not conv_grad.uses_native((3, 3, 1024, 256), (1, 32, 32, 256), 1)
  assert not conv_grad.uses_native((3, 3, 16, 16), (8, 15, 16, 16), 1)
  assert conv_grad.kernel_gradient_form((3, 3, 256, 256), (4, 64, 64, 256), 1) == "rows"
  assert conv_grad.kernel_gradient_form((3, 3, 128, 3), (1, 256, 256, 3), 1) == "shifted"


@pytest.mark.skipif(not native.available(),
                    reason="the compiled kernel gradient is not built here")
def test_native_form_is_chosen_for_the_large_maps():
  # The IHN's detail convs, E's input conv, the U-Nets' up convs on the
  # large maps, the demo's narrow convs.
  for shape, out in (((3, 3, 64, 64), (1, 256, 256, 64)), ((7, 7, 3, 64), (1, 256, 256, 64)),
                     ((3, 3, 256, 64), (1, 128, 128, 64)), ((3, 3, 16, 16), (4, 16, 16, 16))):
    assert conv_grad.kernel_gradient_form(shape, out, 1) == "native"


def test_kernel_gradient_rejects_what_it_does_not_compute():
  x = jnp.zeros((1, 8, 8, 4), jnp.float32)
  with pytest.raises(ValueError, match="multiple of 16"):
    native.kernel_gradient(x, jnp.zeros((3, 3, 4, 8)), jnp.zeros((1, 8, 8, 8)), ((1, 1), (1, 1)))
  with pytest.raises(ValueError, match="float32"):
    native.kernel_gradient(x.astype(jnp.bfloat16), jnp.zeros((3, 3, 4, 16), jnp.bfloat16),
                           jnp.zeros((1, 8, 8, 16), jnp.bfloat16), ((1, 1), (1, 1)))
  with pytest.raises(ValueError, match="stride 1"):
    conv_grad.kernel_gradient_native(x, jnp.zeros((3, 3, 4, 16)), jnp.zeros((1, 4, 4, 16)), 2,
                                     ((1, 1), (1, 1)))


def test_switch_off_by_environment(monkeypatch):
  monkeypatch.setenv("IHC_JAX_NATIVE", "0")
  assert not native.available()
  assert conv_grad.kernel_gradient_form((3, 3, 64, 64), (1, 256, 256, 64), 1) == "rows"
  monkeypatch.setenv("IHC_JAX_NATIVE", "maybe")
  with pytest.raises(ValueError, match="IHC_JAX_NATIVE must be 0 or 1"):
    native.enabled()


def test_build_names_a_missing_compiler(monkeypatch, tmp_path):
  monkeypatch.setenv("IHC_JAX_CACHE_DIR", str(tmp_path))
  monkeypatch.setenv("CXX", "no-such-compiler-ihc")
  with pytest.raises(native.BuildError, match="no C\\+\\+ compiler 'no-such-compiler-ihc'"):
    native.build()


def test_build_reports_compiler_errors_and_leaves_no_partial_file(monkeypatch, tmp_path):
  """A compiler that fails: the error carries its command and output, and
  the cache directory holds no half-written library."""
  broken = tmp_path / "bin" / "broken-cxx"
  broken.parent.mkdir()
  broken.write_text("#!/bin/sh\necho 'error: this compiler is broken' >&2\nexit 1\n")
  broken.chmod(0o755)
  cache = tmp_path / "cache"
  monkeypatch.setenv("IHC_JAX_CACHE_DIR", str(cache))
  monkeypatch.setenv("CXX", str(broken))
  with pytest.raises(native.BuildError, match="this compiler is broken"):
    native.build()
  assert list(cache.iterdir()) == []


def test_an_unbuildable_kernel_falls_back_with_one_warning(monkeypatch, tmp_path, caplog):
  """Where the build fails, `available()` is False, a warning says why,
  and convolutions keep the XLA forms."""
  monkeypatch.setenv("IHC_JAX_CACHE_DIR", str(tmp_path))
  monkeypatch.setenv("CXX", "no-such-compiler-ihc")
  monkeypatch.setattr(native, "_state", {})
  with caplog.at_level(logging.WARNING):
    assert not native.available()
    assert not native.available()
  warnings = [r for r in caplog.records if "kernel gradient is unavailable" in r.getMessage()]
  assert len(warnings) == 1 and "no-such-compiler-ihc" in warnings[0].getMessage()
  assert conv_grad.kernel_gradient_form((3, 3, 64, 64), (1, 256, 256, 64), 1) == "rows"
  with pytest.raises(native.BuildError, match="unavailable"):
    native.kernel_gradient(jnp.zeros((1, 4, 4, 2)), jnp.zeros((3, 3, 2, 16)),
                           jnp.zeros((1, 4, 4, 16)), ((1, 1), (1, 1)))


def test_cache_key_follows_the_cpu_and_the_compiler(monkeypatch, tmp_path):
  """Hosts sharing a home directory but not an instruction set each build
  their own library (`-march=native`), and so does another compiler."""
  monkeypatch.setenv("IHC_JAX_CACHE_DIR", str(tmp_path))
  first = native.library_path()
  assert first.parent == tmp_path and first.name.startswith("conv_kernel_grad-")
  assert native.library_path() == first
  monkeypatch.setattr(native, "cpu_identity", lambda: "another cpu")
  second = native.library_path()
  monkeypatch.setenv("CXX", "clang++")
  assert len({first, second, native.library_path()}) == 3


@needs_native
def test_flop_counts_come_from_the_xla_forms():
  """XLA's cost analysis counts no FLOPs in the custom call (for this
  small graph it gives up: -1, read as no count): `flops.lowered_for_count`
  traces with XLA's forms, so a step's count is the same with the compiled
  kernel as without it."""
  from ihc_jax.bench import flops  # pylint: disable=g-import-not-at-top
  x = jnp.ones((1, 32, 32, 16), jnp.float32)
  kernel = jnp.ones((3, 3, 16, 16), jnp.float32)
  step = lambda x, k: jax.grad(lambda k: jnp.sum(conv_grad.conv(x, k, 1, ((1, 1), (1, 1)))))(k)
  count = lambda lowered: flops.flops_per_step(lowered.cost_analysis())
  with_native = count(jax.jit(step).lower(x, kernel))
  counted = count(flops.lowered_for_count(step, x, kernel))
  with conv_grad.without_native():  # a new function: JAX caches traces by function
    without = count(jax.jit(lambda x, k: step(x, k)).lower(x, kernel))
  kernel_gradient = 2 * 32 * 32 * 9 * 16 * 16  # one multiply-add per tap, pixel and channel pair
  assert counted is not None and counted == without
  assert with_native is None or counted - with_native >= 0.8 * kernel_gradient
  assert counted >= 0.9 * kernel_gradient  # (the forward conv is unused: a sum's gradient)
