"""The side-by-side benchmark with the official PyTorch code (`ihc_jax.bench official`).

The run needs the user's clone of ccc870206/InverseHalftoneColorization in
IHC_OFFICIAL_REPO and skips otherwise; it runs on small shapes (128 px, one
repeat, no fresh-process memory runs) and checks the printed figures, never
a speed. The import shims are checked without the clone.
"""

import os
import re
import subprocess
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from ihc_jax.tools import official_code  # pylint: disable=g-import-not-at-top


def test_transforms_stub_converts_like_torchvision():
  transforms = official_code._transforms_stub()  # pylint: disable=protected-access
  x = torch.tensor([[0.0, 0.5], [1.0, 0.999]])
  image = transforms.ToPILImage()(x)
  assert image.mode == "L"
  # float * 255 truncated to uint8, as torchvision's byte() does.
  np.testing.assert_array_equal(np.asarray(image), [[0, 127], [255, 254]])
  back = transforms.Compose([transforms.ToTensor()])(image)
  assert back.shape == (1, 2, 2) and back.dtype == torch.float32
  np.testing.assert_allclose(back.numpy()[0], np.array([[0, 127], [255, 254]]) / 255.0)


def test_offline_vgg19_has_torchvision_layer_order():
  features = official_code._offline_vgg19(pretrained=True).features  # pylint: disable=protected-access
  assert len(features) == 37
  convs = [i for i, m in enumerate(features) if isinstance(m, torch.nn.Conv2d)]
  assert convs[0] == 0 and convs[-1] == 34 and len(convs) == 16
  assert isinstance(features[27], torch.nn.MaxPool2d)  # pool4, where the official IHN VGG ends
  assert features[25].out_channels == 512  # conv4_4


def test_side_by_side_on_small_shapes():
  """The command in a fresh process, as a user runs it: torch's optimizer
  imports torch._dynamo and with it triton lazily, and loading triton in a
  pytest-xdist worker that had run other JAX tests crashed the worker once
  (a segfault in triton's native module, 6 December 2026)."""
  repo = os.environ.get("IHC_OFFICIAL_REPO")
  if not repo:
    pytest.skip("set IHC_OFFICIAL_REPO to a clone of ccc870206/InverseHalftoneColorization "
                "to run the side-by-side benchmark (minutes on a CPU)")
  run = subprocess.run([sys.executable, "-m", "ihc_jax.bench", "official", "--repo", repo,
                        "--size", "128", "--repeats", "1", "--no-memory"],
                       capture_output=True, text=True, timeout=1200, check=False)
  assert run.returncode == 0, run.stderr[-3000:]
  lines = run.stdout.strip().splitlines()
  from ihc_jax.bench import official  # pylint: disable=g-import-not-at-top
  timings = {}
  for item in ("forward ihn", "forward generator", "forward encoder", "forward fusion",
               "reference path", "test.py (ref + 2 random)", "IHN train step",
               "colour train step"):
    row = next(line for line in lines if line.startswith(item))
    torch_s, jax_s, ratio = (float(v) for v in row[28:].replace("x", "").split())
    assert torch_s > 0 and jax_s > 0
    assert ratio == pytest.approx(torch_s / jax_s, rel=0.05, abs=0.01)
    timings[item] = torch_s, jax_s
  assert any(line.startswith("load average") for line in lines)
  last = re.fullmatch(r"torch/ihc_jax: inference ([\d.]+)x, ihn_step ([\d.]+)x, "
                      r"color_step ([\d.]+)x", lines[-1])
  assert last, lines[-1]
  # The summary repeats the rows' ratios.
  for value, item in zip(last.groups(), ("test.py (ref + 2 random)",
                                         "IHN train step", "colour train step")):
    torch_s, jax_s = timings[item]
    assert float(value) == pytest.approx(torch_s / jax_s, rel=0.05, abs=0.01)
