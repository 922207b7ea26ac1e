"""`ihc_jax.kernels.cpu.conv_grads` and `conv`: XLA's convolution with the
CPU gradient forms.

The forward pass must be XLA's convolution bit for bit (the parity with the
official code rests on it), and both gradients must be the convolution's
gradients, for every stride, padding and kernel the networks use and some
they do not; each form's rule picks the layers it is meant for. Random
inputs made here.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ihc_jax import kernels
from ihc_jax.kernels import reference
from ihc_jax.kernels.cpu import conv as cpu_conv
from ihc_jax.kernels.cpu import conv_grads

# (batch, height, width, C_in, C_out, kernel, stride, padding)
CASES = (
    (1, 9, 7, 3, 5, 3, 1, ((1, 1), (1, 1))),
    (2, 10, 10, 4, 6, 4, 2, ((1, 1), (1, 1))),
    (2, 11, 9, 3, 2, 4, 2, ((1, 2), (0, 1))),
    (1, 12, 12, 2, 3, 7, 1, ((0, 0), (0, 0))),
    (3, 8, 8, 5, 4, 3, 2, ((1, 1), (1, 1))),
    (1, 9, 9, 3, 3, 1, 1, ((0, 0), (0, 0))),
    (2, 13, 13, 4, 4, 4, 1, ((1, 2), (1, 2))),
    (1, 10, 10, 2, 2, 3, 3, ((1, 1), (1, 1))),
    (1, 9, 9, 2, 2, 3, 2, ((0, 0), (0, 0))),  # the last input row is never read
    (1, 15, 14, 3, 4, 5, 2, ((2, 2), (2, 1))),
    (2, 16, 16, 3, 2, 7, 3, ((1, 1), (3, 0))),
    (1, 12, 12, 2, 3, 4, 2, ((2, 2), (2, 2))),  # D's padding: rows past the last window
)


def _numpy_kernel_gradient(x, kernel, dy, stride, padding):
  """dK[i, j] = sum over outputs of the input pixel under tap (i, j) times dy."""
  kh, kw = kernel.shape[:2]
  (top, bottom), (left, right) = padding
  xp = np.pad(x.astype(np.float64), ((0, 0), (top, bottom), (left, right), (0, 0)))
  _, out_h, out_w, _ = dy.shape
  grad = np.zeros(kernel.shape, np.float64)
  for i in range(kh):
    for j in range(kw):
      window = xp[:, i:i + stride * (out_h - 1) + 1:stride, j:j + stride * (out_w - 1) + 1:stride]
      grad[i, j] = np.einsum("bhwc,bhwo->co", window, dy)
  return grad


def _numpy_input_gradient(x, kernel, dy, stride, padding):
  """dX: every output's dy times the kernel, added back under its window."""
  kh, kw = kernel.shape[:2]
  (top, bottom), (left, right) = padding
  b, height, width, _ = x.shape
  grad = np.zeros((b, height + top + bottom, width + left + right, x.shape[-1]))
  _, out_h, out_w, _ = dy.shape
  for i in range(kh):
    for j in range(kw):
      grad[:, i:i + stride * (out_h - 1) + 1:stride, j:j + stride * (out_w - 1) + 1:stride] += (
          np.einsum("bhwo,co->bhwc", dy.astype(np.float64), kernel[i, j]))
  return grad[:, top:top + height, left:left + width]


def _check_forms(forms, args, want, shape):
  """Each gradient form (x, kernel, dy, stride, padding) -> a float32 array
  of `shape` equal to the numpy `want` within float rounding."""
  for name, form in forms.items():
    got = np.asarray(jax.jit(form, static_argnums=(3, 4))(*args))
    assert got.shape == shape and got.dtype == np.float32, name
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-4, err_msg=name)


def _set_taps(monkeypatch, taps):
  """Every kernel gradient of at least 2 channels by taps, or none (and
  none by shifted or rows, which come first)."""
  monkeypatch.setattr(conv_grads, "SHIFTED_MAX_COLUMN_RATIO", 0.0)
  monkeypatch.setattr(conv_grads, "ROWS_MIN_OUT_CHANNELS", 10**9)
  monkeypatch.setattr(conv_grads, "TAPS_MIN_CHANNELS", 2 if taps else 10**9)
  monkeypatch.setattr(conv_grads, "TAPS_MIN_CHANNEL_PRODUCT", 1)
  monkeypatch.setattr(conv_grads, "TAPS_MIN_POSITIONS", 1)


def _case(rng, batch, height, width, c_in, c_out, k, stride, padding):
  x = rng.standard_normal((batch, height, width, c_in)).astype(np.float32)
  kernel = rng.standard_normal((k, k, c_in, c_out)).astype(np.float32)
  out = reference.conv2d(jnp.asarray(x), jnp.asarray(kernel), stride, padding)
  dy = rng.standard_normal(out.shape).astype(np.float32)
  return x, kernel, dy


def _assert_gradients_match_xla(x, kernel, dy, stride, padding):
  """`conv`'s input and kernel gradients equal XLA's within float rounding."""
  ours = lambda x, k: cpu_conv.conv_xla(x, k, stride, padding)
  xla = lambda x, k: reference.conv2d(x, k, stride, padding)
  loss = lambda f: lambda x, k: jnp.sum(f(x, k) * dy)
  got = jax.jit(jax.grad(loss(ours), argnums=(0, 1)))(x, kernel)
  want = jax.jit(jax.grad(loss(xla), argnums=(0, 1)))(x, kernel)
  for g, w, name in zip(got, want, ("input", "kernel")):
    np.testing.assert_allclose(np.asarray(g), np.asarray(w), rtol=1e-5, atol=1e-4,
                               err_msg=name)


@pytest.mark.parametrize("case", CASES)
def test_taps_kernel_gradient_is_the_kernel_gradient(case):
  rng = np.random.default_rng(0)
  x, kernel, dy = _case(rng, *case)
  stride, padding = case[-2:]
  want = _numpy_kernel_gradient(x, kernel, dy, stride, padding)
  _check_forms({"taps": conv_grads.kernel_gradient_taps,
                "rows": conv_grads.kernel_gradient_rows,
                "shifted": conv_grads.kernel_gradient_shifted,
                "padded": conv_grads.kernel_gradient_padded,
                "xla": conv_grads.kernel_gradient_xla},
               (x, kernel, dy, stride, padding), want, kernel.shape)


@pytest.mark.parametrize("case", [c for c in CASES if c[-2] > 1])
def test_phases_input_gradient_is_the_input_gradient(case):
  rng = np.random.default_rng(0)
  x, kernel, dy = _case(rng, *case)
  stride, padding = case[-2:]
  want = _numpy_input_gradient(x, kernel, dy, stride, padding)
  _check_forms({"phases": conv_grads.input_gradient_phases,
                "xla": conv_grads.input_gradient_xla},
               (x, kernel, dy, stride, padding), want, x.shape)


@pytest.mark.parametrize("custom", [True, False])
def test_conv_forward_is_xla_and_gradients_match(monkeypatch, custom):
  """`conv`'s output is XLA's exactly; its gradients (taps kernel gradient
  and phases input gradient, or the padded kernel gradient and XLA's input
  gradient, by the thresholds) equal XLA's own within float rounding."""
  _set_taps(monkeypatch, custom)
  monkeypatch.setattr(conv_grads, "PHASES_MIN_POSITIONS", 1 if custom else 10**9)
  rng = np.random.default_rng(1)
  x, kernel, dy = _case(rng, 2, 12, 12, 4, 6, 4, 2, ((1, 1), (1, 1)))
  assert conv_grads.uses_taps(kernel.shape, dy.shape) == custom
  assert conv_grads.uses_phases(kernel.shape, dy.shape, 2) == custom
  ours = lambda x, k: cpu_conv.conv_xla(x, k, 2, ((1, 1), (1, 1)))
  xla = lambda x, k: reference.conv2d(x, k, 2, ((1, 1), (1, 1)))
  np.testing.assert_array_equal(np.asarray(jax.jit(ours)(x, kernel)),
                                np.asarray(jax.jit(xla)(x, kernel)))
  _assert_gradients_match_xla(x, kernel, dy, 2, ((1, 1), (1, 1)))


@pytest.mark.parametrize("batch", [1, 3])
def test_conv_gradients_through_rows(batch):
  """A stride-1 conv wide enough for `uses_rows` takes the rows kernel
  gradient inside `conv`'s VJP; both gradients equal XLA's."""
  rng = np.random.default_rng(5)
  side = int(np.ceil(np.sqrt(conv_grads.ROWS_MIN_POSITIONS)))
  x, kernel, dy = _case(rng, batch, side + 1, side, conv_grads.ROWS_MIN_IN_CHANNELS,
                        conv_grads.ROWS_MIN_OUT_CHANNELS, 3, 1, ((1, 1), (0, 2)))
  assert conv_grads.kernel_gradient_form(kernel.shape, dy.shape, 1) == "rows"
  _assert_gradients_match_xla(x, kernel, dy, 1, ((1, 1), (0, 2)))


@pytest.mark.parametrize("max_channels", [0, 64])
def test_rows_kernel_gradient_with_either_transpose(monkeypatch, max_channels):
  """The rows form moves its input to channels first by a transposing
  copy (more than `ROWS_MATMUL_TRANSPOSE_MAX_CHANNELS` channels) or by a
  matmul with the identity (up to it): the same kernel gradient either way,
  strided and padded asymmetrically included."""
  monkeypatch.setattr(conv_grads, "ROWS_MATMUL_TRANSPOSE_MAX_CHANNELS", max_channels)
  rng = np.random.default_rng(8)
  for case in ((2, 11, 9, 5, 4, 3, 1, ((1, 2), (0, 1))), (1, 12, 12, 3, 4, 4, 2, ((1, 1), (1, 1)))):
    x, kernel, dy = _case(rng, *case)
    want = _numpy_kernel_gradient(x, kernel, dy, *case[-2:])
    _check_forms({"rows": conv_grads.kernel_gradient_rows}, (x, kernel, dy, *case[-2:]),
                 want, kernel.shape)


def test_channels_first_is_an_exact_transpose():
  """The identity matmul moves every value unchanged (bit for bit, large
  and tiny magnitudes alike), [B, H, W, C] -> [C, B, H, W]."""
  rng = np.random.default_rng(9)
  x = (rng.standard_normal((2, 5, 7, 6)) * 10.0 ** rng.integers(-30, 30, (2, 5, 7, 6)))
  x = x.astype(np.float32)
  got = np.asarray(jax.jit(conv_grads.channels_first)(jnp.asarray(x)))
  np.testing.assert_array_equal(got, x.transpose(3, 0, 1, 2))


@pytest.mark.parametrize("stride", [1, 2])
def test_conv_gradients_through_shifted(stride):
  """A conv with few output channels (kh * kw * C_out <= C_in, like G's
  last 128 -> 3) takes the shifted kernel gradient inside `conv`'s VJP;
  both gradients equal XLA's."""
  rng = np.random.default_rng(10)
  x, kernel, dy = _case(rng, 2, 10, 9, 18, 2, 3, stride, ((1, 1), (0, 1)))
  assert conv_grads.kernel_gradient_form(kernel.shape, dy.shape, stride) == "shifted"
  _assert_gradients_match_xla(x, kernel, dy, stride, ((1, 1), (0, 1)))


def test_shifted_rule_counts_the_shifted_copies_against_the_input_channels():
  # G's last conv, the IHN's and the U-Nets' one-channel output convs.
  assert conv_grads.kernel_gradient_form((3, 3, 128, 3), (1, 256, 256, 3), 1) == "shifted"
  assert conv_grads.kernel_gradient_form((3, 3, 64, 1), (1, 256, 256, 1), 1) == "shifted"
  assert conv_grads.kernel_gradient_form((3, 3, 128, 1), (4, 256, 256, 1), 1) == "shifted"
  # Exactly at the ratio, and one output channel more (rows take 64 -> 8).
  c_in = int(9 * 8 / conv_grads.SHIFTED_MAX_COLUMN_RATIO)
  assert conv_grads.uses_shifted((3, 3, c_in, 8))
  assert not conv_grads.uses_shifted((3, 3, c_in, 9))
  assert conv_grads.kernel_gradient_form((3, 3, 64, 8), (1, 256, 256, 8), 1) != "shifted"
  assert not conv_grads.uses_shifted((3, 3, 64, 64))


def test_second_order_gradient_through_taps(monkeypatch):
  """The custom JVP's reverse mode is itself differentiable (a gradient
  penalty differentiates a gradient): d/dk of |dL/dx|^2 matches XLA's."""
  _set_taps(monkeypatch, True)
  rng = np.random.default_rng(3)
  x, kernel, _ = _case(rng, 1, 7, 7, 3, 4, 3, 1, ((1, 1), (1, 1)))

  def penalty(conv_fn):
    def fn(k):
      gx = jax.grad(lambda v: jnp.sum(jnp.tanh(conv_fn(v, k))))(x)
      return jnp.sum(gx**2)
    return fn

  ours = lambda v, k: cpu_conv.conv_xla(v, k, 1, ((1, 1), (1, 1)))
  xla = lambda v, k: reference.conv2d(v, k, 1, ((1, 1), (1, 1)))
  np.testing.assert_allclose(np.asarray(jax.jit(jax.grad(penalty(ours)))(kernel)),
                             np.asarray(jax.jit(jax.grad(penalty(xla)))(kernel)),
                             rtol=1e-4, atol=1e-4)


def test_bfloat16_kernel_gradient_keeps_the_dtype(monkeypatch):
  _set_taps(monkeypatch, True)
  rng = np.random.default_rng(4)
  x, kernel, dy = _case(rng, 2, 8, 8, 4, 4, 3, 1, ((1, 1), (1, 1)))
  bf16 = lambda a: jnp.asarray(a, jnp.bfloat16)
  grad = jax.jit(jax.grad(lambda k: jnp.sum(
      cpu_conv.conv_xla(bf16(x), k, 1, ((1, 1), (1, 1))).astype(jnp.float32) * dy)))(bf16(kernel))
  assert grad.dtype == jnp.bfloat16
  want = _numpy_kernel_gradient(x, kernel, dy, 1, ((1, 1), (1, 1)))
  # bfloat16 inputs carry 8 bits of mantissa: about 1% of the largest entry.
  error = np.max(np.abs(np.asarray(grad, np.float32) - want)) / np.max(np.abs(want))
  assert error < 0.02


def test_thresholds_pick_by_the_channel_counts_and_the_positions():
  big = max(conv_grads.TAPS_MIN_CHANNELS,
            int(np.ceil(np.sqrt(conv_grads.TAPS_MIN_CHANNEL_PRODUCT))))
  side = int(np.ceil(np.sqrt(conv_grads.TAPS_MIN_POSITIONS)))
  assert conv_grads.uses_taps((3, 3, big, big), (1, side, side, big))
  # Too few channel pairs for the taps: the IHN's 64 -> 64 detail convs
  # (rows take them, see test_rows_rule...).
  assert not conv_grads.uses_taps((3, 3, 64, 64), (1, 256, 256, 64))
  assert conv_grads.uses_taps((3, 3, 256, 64), (1, 128, 128, 64))
  thin, wide = conv_grads.TAPS_MIN_CHANNELS - 1, 1024
  assert not conv_grads.uses_taps((3, 3, thin, wide), (1, side, side, wide))
  assert not conv_grads.uses_taps((3, 3, wide, thin), (1, side, side, thin))
  narrow = conv_grads.TAPS_MIN_CHANNEL_PRODUCT // conv_grads.TAPS_MIN_CHANNELS - 1
  assert not conv_grads.uses_taps((3, 3, conv_grads.TAPS_MIN_CHANNELS, narrow),
                                 (1, side, side, narrow))
  # The batch counts: four 1/4-size maps are as many positions as one.
  assert conv_grads.uses_taps((3, 3, big, big), (4, side, side // 4 + 1, big))
  assert not conv_grads.uses_taps((3, 3, big, big), (1, side // 2, side // 2, big))


def test_rows_rule_stride_one_enough_channels_and_pixels():
  _check_rows_rule()


def _check_rows_rule():
  side = int(np.ceil(np.sqrt(conv_grads.ROWS_MIN_POSITIONS)))
  wide = conv_grads.ROWS_MIN_OUT_CHANNELS
  deep = conv_grads.ROWS_MIN_IN_CHANNELS
  # The IHN's 64 -> 64 detail convs and E's residual convs.
  assert conv_grads.kernel_gradient_form((3, 3, 64, 64), (1, 256, 256, 64), 1) == "rows"
  assert conv_grads.kernel_gradient_form((3, 3, 256, 256), (4, 64, 64, 256), 1) == "rows"
  assert conv_grads.uses_rows((3, 3, deep, wide), (1, side, side, wide), 1)
  # Few input channels: E's and F's 7x7 input convs, the IHN's first
  # detail conv (halftone + noise) take the padded form.
  assert not conv_grads.uses_rows((3, 3, deep - 1, wide), (1, side, side, wide), 1)
  assert conv_grads.kernel_gradient_form((7, 7, 3, 64), (1, 256, 256, 64), 1) == "padded"
  assert conv_grads.kernel_gradient_form((7, 7, 6, 64), (4, 256, 256, 64), 1) == "padded"
  assert conv_grads.kernel_gradient_form((3, 3, 9, 64), (1, 256, 256, 64), 1) == "padded"
  # Strided convs, few output channels (too many for the shifted form's
  # copies) and small maps go on to the other rules.
  assert not conv_grads.uses_rows((4, 4, 64, 128), (1, 128, 128, 128), 2)
  assert not conv_grads.uses_rows((3, 3, 128, wide - 1), (1, side, side, wide - 1), 1)
  assert conv_grads.kernel_gradient_form((3, 3, 32, 7), (1, 256, 256, 7), 1) == "padded"
  assert not conv_grads.uses_rows((3, 3, 8, wide), (8, side - 1, side, wide), 1)
  assert conv_grads.kernel_gradient_form((3, 3, 1024, 512), (1, 8, 8, 512), 1) == "padded"
  assert conv_grads.kernel_gradient_form((3, 3, 8, 8), (2, 8, 8, 8), 1) == "xla"


def test_padded_rule_one_image_or_a_bounded_batch_of_large_maps():
  side = int(np.ceil(np.sqrt(conv_grads.PADDED_MIN_POSITIONS)))
  assert conv_grads.uses_padded((1, 2, 2, 8))  # one image: always
  assert conv_grads.uses_padded((2, side, side, 8))
  assert not conv_grads.uses_padded((2, side - 1, side - 1, 8))
  assert conv_grads.uses_padded((conv_grads.PADDED_MAX_BATCH, side, side, 8))
  assert not conv_grads.uses_padded((conv_grads.PADDED_MAX_BATCH + 1, side, side, 8))


def test_padded_kernel_gradient_is_one_convolution_per_image(monkeypatch):
  """For a batch the padded form compiles to one VALID kernel-gradient
  convolution per image, and `conv` picks it by `uses_padded`."""
  _set_taps(monkeypatch, False)
  monkeypatch.setattr(conv_grads, "PADDED_MIN_POSITIONS", 1)
  rng = np.random.default_rng(7)
  x, kernel, dy = _case(rng, 3, 8, 8, 2, 3, 3, 1, ((1, 1), (1, 1)))
  pads = ((1, 1), (1, 1))
  grad = jax.jit(jax.grad(lambda k: jnp.sum(cpu_conv.conv_xla(x, k, 1, pads) * dy)))
  hlo = grad.lower(kernel).as_text()
  # The forward's convolution is dead code here: only the kernel gradient's.
  assert hlo.count("stablehlo.convolution") == 3, hlo
  want = _numpy_kernel_gradient(x, kernel, dy, 1, pads)
  np.testing.assert_allclose(np.asarray(grad(kernel)), want, rtol=1e-5, atol=1e-4)


def test_phases_rule_needs_a_stride_and_a_large_enough_map():
  """Kernels whose sides the stride divides take the phases from
  `PHASES_MIN_POSITIONS` outputs per image; others (zero taps added) only
  from `PHASES_PADDED_MIN_POSITIONS`; stride 1 never."""
  side = int(np.ceil(np.sqrt(conv_grads.PHASES_MIN_POSITIONS)))
  padded_side = int(np.ceil(np.sqrt(conv_grads.PHASES_PADDED_MIN_POSITIONS)))
  assert conv_grads.PHASES_PADDED_MIN_POSITIONS > conv_grads.PHASES_MIN_POSITIONS
  assert conv_grads.uses_phases((4, 4, 64, 128), (1, side, side, 128), 2)
  assert not conv_grads.uses_phases((4, 4, 64, 128), (1, side - 1, side - 1, 128), 2)
  assert not conv_grads.uses_phases((3, 3, 64, 128), (1, side, side, 128), 2)
  assert conv_grads.uses_phases((3, 3, 64, 128), (1, padded_side, padded_side, 128), 2)
  assert not conv_grads.uses_phases((4, 4, 64, 64), (1, 256, 256, 64), 1)
  # E's first 3x3 stride-2 conv at 256 px input: 128 x 128 outputs.
  assert conv_grads.uses_phases((3, 3, 64, 128), (1, 128, 128, 128), 2)


def test_generator_gradients_are_unchanged_by_the_cpu_forms(monkeypatch):
  """Through a whole tiny G (reflect-padded up convs, stride-2 down convs,
  the matmul form on its 1-2 px maps): parameter gradients with every
  kernel gradient as taps and every strided input gradient as phases equal
  the reference's (`kernels.cpu_fast_paths(False)`) within float rounding."""
  from ihc_jax import models  # pylint: disable=g-import-not-at-top
  cfg = models.tiny_model_config()
  cfg.generator.num_downs = 5  # 32 px inputs, a 1x1 innermost map
  net = models.build("generator", cfg)
  rng = np.random.default_rng(5)
  gray = jnp.asarray(rng.random((1, 32, 32, 1), np.float32))
  edge = jnp.asarray(rng.random((1, 32, 32, 1), np.float32))
  z = jnp.asarray(rng.standard_normal((1, cfg.generator.nz)), jnp.float32)
  variables = jax.jit(lambda: net.init(jax.random.PRNGKey(0), gray, edge, z, train=False))()

  _set_taps(monkeypatch, True)
  monkeypatch.setattr(conv_grads, "PHASES_MIN_POSITIONS", 1)
  monkeypatch.setattr(conv_grads, "PHASES_PADDED_MIN_POSITIONS", 1)
  loss = lambda p: jnp.mean(net.apply({**variables, "params": p}, gray, edge, z,
                                      train=False) ** 2)
  taps = jax.jit(jax.grad(loss))(variables["params"])
  with kernels.cpu_fast_paths(False):
    xla = jax.jit(jax.grad(loss))(variables["params"])
  flat_taps, flat_xla = jax.tree.leaves(taps), jax.tree.leaves(xla)
  assert len(flat_taps) == len(flat_xla) > 10
  for got, want in zip(flat_taps, flat_xla):
    scale = float(jnp.max(jnp.abs(want))) + 1e-12
    assert float(jnp.max(jnp.abs(got - want))) <= 1e-4 * scale


def _small_conv_forms(stride, padding, reflect):
  """form -> (jitted forward(x, kernel), jitted gradients of sum(y^2)):
  XLA's convolution and the one-matmul form the CPU path uses on small maps."""
  def padded(x):
    if reflect:
      return reference.reflect_pad(x, padding)
    return jnp.pad(x, ((0, 0), (padding, padding), (padding, padding), (0, 0)))

  forms = {}
  valid = ((0, 0), (0, 0))
  for name, conv in (("xla", lambda x, k: cpu_conv.conv_xla(x, k, stride, valid)),
                     ("matmul", lambda x, k: cpu_conv.conv_matmul(x, k, stride, valid))):
    forward = lambda x, k, conv=conv: conv(padded(x), k)
    grads = jax.grad(lambda x, k, f=forward: jnp.sum(f(x, k) ** 2),
                     argnums=(0, 1))
    forms[name] = (jax.jit(forward), jax.jit(grads))
  return forms


def test_small_conv_forms_agree_with_numpy():
  """Both forms the CPU path chooses between, zero and reflect padded, stride 1
  and 2, forward and gradients, against numpy (random inputs made here)."""
  rng = np.random.default_rng(2)
  x = rng.random((2, 4, 4, 3), np.float32)
  for k, stride, padding, reflect in ((3, 1, 1, False), (3, 1, 1, True), (4, 2, 1, False)):
    kernel = rng.standard_normal((k, k, 3, 5)).astype(np.float32)
    mode = "reflect" if reflect else "constant"
    xp = np.pad(x.astype(np.float64), ((0, 0), (padding,) * 2, (padding,) * 2, (0, 0)), mode)
    out = (xp.shape[1] - k) // stride + 1
    want = np.zeros((2, out, out, 5))
    for i in range(k):
      for j in range(k):
        want += xp[:, i:i + stride * (out - 1) + 1:stride,
                   j:j + stride * (out - 1) + 1:stride] @ kernel[i, j]
    forms = _small_conv_forms(stride, padding, reflect)
    for name, (forward, grads) in forms.items():
      np.testing.assert_allclose(np.asarray(forward(x, kernel)), want, rtol=1e-5,
                                 atol=1e-5, err_msg=f"{name} k{k} s{stride}")
      gx, gk = grads(x, kernel)
      # d/dk sum(y^2) = sum over windows of 2 y * window.
      gk_want = np.zeros(kernel.shape)
      for i in range(k):
        for j in range(k):
          window = xp[:, i:i + stride * (out - 1) + 1:stride, j:j + stride * (out - 1) + 1:stride]
          gk_want[i, j] = np.einsum("nhwc,nhwo->co", window, 2 * want)
      np.testing.assert_allclose(np.asarray(gk), gk_want, rtol=1e-4, atol=1e-3,
                                 err_msg=f"{name} kernel gradient")
      assert np.asarray(gx).shape == x.shape
    # The two forms' input gradients agree with each other.
    np.testing.assert_allclose(np.asarray(forms["xla"][1](x, kernel)[0]),
                               np.asarray(forms["matmul"][1](x, kernel)[0]),
                               rtol=1e-4, atol=1e-4)
