"""`python -m ihc_jax.bench conv`: the three passes it times are the
convolution and its two gradients (checked against numpy loops), and it
prints one line per pass. Random inputs made here."""

import numpy as np

from ihc_jax.bench import conv


def _numpy_passes(x, kernel, dy):
  """Forward, input and kernel gradient of a stride-1 'same' correlation."""
  k = kernel.shape[0]
  p = k // 2
  _, h, w, _ = x.shape
  xp = np.pad(x, ((0, 0), (p, p), (p, p), (0, 0)))
  y = np.zeros(dy.shape, np.float64)
  gx = np.zeros(xp.shape, np.float64)
  gk = np.zeros(kernel.shape, np.float64)
  for i in range(k):
    for j in range(k):
      window = xp[:, i:i + h, j:j + w, :]
      y += window @ kernel[i, j]
      gk[i, j] = np.einsum("nhwc,nhwo->co", window, dy)
      gx[:, i:i + h, j:j + w, :] += dy @ kernel[i, j].T
  return y, gx[:, p:p + h, p:p + w, :], gk


def test_passes_are_the_convolution_and_its_gradients():
  rng = np.random.default_rng(0)
  x = rng.random((2, 7, 6, 3), np.float32)
  kernel = rng.standard_normal((3, 3, 3, 4)).astype(np.float32)
  dy = rng.random((2, 7, 6, 4), np.float32)
  expected = _numpy_passes(x, kernel, dy)
  passes = conv.jax_passes()
  for name, want in zip(("forward", "input gradient", "kernel gradient"),
                        expected):
    got = np.asarray(passes[name](x, kernel, dy))
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-4, err_msg=name)


def test_kernel_gradient_rewrites_are_the_kernel_gradient():
  rng = np.random.default_rng(1)
  x = rng.random((2, 7, 6, 3), np.float32)
  kernel = rng.standard_normal((3, 3, 3, 4)).astype(np.float32)
  dy = rng.random((2, 7, 6, 4), np.float32)
  want = _numpy_passes(x, kernel, dy)[2]
  for name, fn in conv.kernel_gradient_rewrites().items():
    np.testing.assert_allclose(np.asarray(fn(x, kernel, dy)), want,
                               rtol=1e-5, atol=1e-4, err_msg=name)


def test_main_prints_each_pass(capsys):
  argv = ["--size", "8", "--channels", "2", "--repeats", "2", "--rewrites"]
  try:
    import torch  # pylint: disable=g-import-not-at-top,unused-import
    argv.append("--torch")
  except ImportError:
    pass
  conv.main(argv)
  out = capsys.readouterr().out
  for name in ("forward", "input gradient", "kernel gradient",
               "kernel gradient, shifted taps", "kernel gradient, im2col",
               "kernel gradient, taps loop"):
    assert f"  {name} " in out
  assert "shifted taps: max difference to XLA's" in out
  assert ("torch forward + both gradients" in out) == ("--torch" in argv)
  # The ratio line parses (at 8 px it may round to 0.0).
  ratio = float(out.rsplit("kernel gradient / forward: ", 1)[1].split("x")[0])
  assert ratio >= 0


def test_small_conv_forms_agree_with_numpy():
  """Both forms `layers` chooses between, zero and reflect padded, stride 1
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
    forms = conv.small_conv_forms(stride, padding, reflect)
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


def test_main_small_prints_each_layer(capsys, monkeypatch):
  monkeypatch.setattr(conv, "SMALL_LAYERS", (("dense 3x3", 2, 4, 3, 3, 1, 1, False),
                                             ("up 3x3 reflect", 4, 4, 3, 3, 1, 1, True)))
  conv.main(["--small", "--repeats", "1"])
  out = capsys.readouterr().out
  assert out.count(" -> ") == 4
  assert "dense 3x3" in out and "up 3x3 reflect" in out


def test_kernel_grads_mode_prints_each_layer_and_the_models_choice(capsys, monkeypatch):
  """`--kernel-grads` on four tiny layers: one line each with the times of
  every form, their largest difference (float rounding) and the forms the
  models use (the input gradient's only for the strided layer)."""
  from ihc_jax.models import conv_grad  # pylint: disable=g-import-not-at-top
  monkeypatch.setattr(conv_grad, "TAPS_MIN_CHANNELS", 4)
  monkeypatch.setattr(conv_grad, "TAPS_MIN_POSITIONS", 1)
  monkeypatch.setattr(conv_grad, "TAPS_MIN_CHANNEL_PRODUCT", 1)
  monkeypatch.setattr(conv_grad, "PHASES_MIN_POSITIONS", 1)
  side = int(np.ceil(np.sqrt(conv_grad.ROWS_MIN_POSITIONS)))
  conv.kernel_grads_main(2, 1, (("small s1", 6, 4, 5, 3, 1), ("thin s2", 4, 3, 8, 4, 2),
                                ("wide s1", side, conv_grad.ROWS_MIN_IN_CHANNELS,
                                 conv_grad.ROWS_MIN_OUT_CHANNELS, 3, 1),
                                ("few out s1", 6, 18, 2, 3, 1)))
  lines = capsys.readouterr().out.splitlines()[1:]
  assert len(lines) == 4
  assert "small s1" in lines[0] and "models: taps" in lines[0] and " dX " not in lines[0]
  # Two images of 4 x 4 outputs: neither taps nor the padded rule.
  assert "thin s2" in lines[1] and "models: xla" in lines[1]
  assert " dX " in lines[1] and "models: phases" in lines[1]
  # The compiled kernel takes the wide layer where it is built (else the
  # rows form); its column is '-' where it does not apply (5 outputs).
  from ihc_jax.models import native  # pylint: disable=g-import-not-at-top
  wide_form = "native" if native.available() else "rows"
  assert "wide s1" in lines[2] and f"models: {wide_form}" in lines[2]
  dk_columns = lambda line: line.split(" dK ")[1].split()[:6]
  assert dk_columns(lines[0])[5] == "-"
  if native.available():
    assert float(dk_columns(lines[2])[5]) > 0
  assert "few out s1" in lines[3] and "models: shifted" in lines[3]
  for line in lines:
    assert float(line.rsplit("rel diff ", 1)[1]) < 1e-5
