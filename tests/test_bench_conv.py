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
               "kernel gradient, shifted taps", "kernel gradient, im2col"):
    assert f"  {name} " in out
  assert "shifted taps: max difference to XLA's" in out
  assert ("torch forward + both gradients" in out) == ("--torch" in argv)
  # The ratio line parses (at 8 px it may round to 0.0).
  ratio = float(out.rsplit("kernel gradient / forward: ", 1)[1].split("x")[0])
  assert ratio >= 0
