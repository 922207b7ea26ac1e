"""Imports the official PyTorch modules from a user's checkout, offline.

The official code (ccc870206/InverseHalftoneColorization) is never part of
ihc_jax; `import_official(path)` imports its modules from a clone the user
gives, for the parity tool (`ihc_jax.tools.parity`) and the side-by-side
benchmark (`ihc_jax.bench.official`). Needs torch, not torchvision, and
imports no JAX (the benchmark measures torch's memory in a process of its
own). Two import shims make the modules run on a CPU-only torch without
downloading anything:

1. Its pretrained-VGG classes (`VGG19` in model_IHN.py and model_G_F.py) do
   `from torchvision import models` and call
   `models.vgg19(pretrained=True).features`, which downloads ImageNet
   weights. The `models` name of both imported modules is replaced by an
   offline stand-in whose `vgg19()` builds the VGG19 feature stack
   (torchvision's layer order, so indices 0-27 end at pool4) with random
   weights.
2. Its Canny helper (`functions.edge_detection_canny`) converts tensors with
   `torchvision.transforms.ToPILImage` / `ToTensor` / `Compose`. Where
   torchvision is missing, a stub package provides those three with
   torchvision's conversions (float tensor * 255 -> uint8 `byte()` -> PIL
   "L"; uint8 PIL -> float tensor / 255, channels first).
"""

from __future__ import annotations

import importlib
import os
import sys
import types
from typing import Any

import numpy as np

# torchvision's VGG19 feature stack ("E" configuration): conv widths, "M" = 2x2 max pool.
_VGG19_LAYOUT = (64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M",
                 512, 512, 512, 512, "M", 512, 512, 512, 512, "M")


def _offline_vgg19(pretrained: bool = False, **unused: Any) -> Any:
  """Stand-in for `torchvision.models.vgg19`: random weights, never downloads."""
  del pretrained, unused
  import torch  # pylint: disable=g-import-not-at-top
  stack, channels = [], 3
  for width in _VGG19_LAYOUT:
    if width == "M":
      stack.append(torch.nn.MaxPool2d(2, 2))
    else:
      stack += [torch.nn.Conv2d(channels, width, 3, padding=1), torch.nn.ReLU(inplace=True)]
      channels = width
  return types.SimpleNamespace(features=torch.nn.Sequential(*stack))


def _transforms_stub() -> types.ModuleType:
  """The three torchvision.transforms classes the official Canny helper uses."""
  import torch  # pylint: disable=g-import-not-at-top
  from PIL import Image  # pylint: disable=g-import-not-at-top

  class Compose:

    def __init__(self, steps):
      self.steps = list(steps)

    def __call__(self, x):
      for step in self.steps:
        x = step(x)
      return x

  class ToPILImage:

    def __call__(self, tensor):
      if tensor.ndim == 3:
        tensor = tensor[0]
      if tensor.is_floating_point():
        tensor = tensor.mul(255).byte()
      return Image.fromarray(tensor.numpy(), mode="L")

  class ToTensor:

    def __call__(self, image):
      array = np.array(image)
      if array.ndim == 2:
        array = array[:, :, None]
      return torch.from_numpy(np.ascontiguousarray(array.transpose(2, 0, 1))).float() / 255.0

  module = types.ModuleType("torchvision.transforms")
  module.Compose, module.ToPILImage, module.ToTensor = Compose, ToPILImage, ToTensor
  return module


def import_official(repo: str) -> dict[str, Any]:
  """Imports the official model classes and helpers from a checkout at `repo`.

  Applies the two import shims of the module docstring.

  Args:
    repo: folder holding `models/model_G_F.py`, `models/model_IHN.py` and
      `functions.py`.

  Returns:
    {"IHNet", "Encoder", "G_Unet_add_input", "MultipleBasicBlock_4", "D",
    "GANLoss", "VGG19_pool4", "functions"}; `functions` is the official
    functions.py module (Canny, noise filter, latent sampling).
  """
  repo = os.path.abspath(repo)
  if not os.path.isfile(os.path.join(repo, "models", "model_IHN.py")):
    raise FileNotFoundError(
        f"{repo} is not a checkout of the official InverseHalftoneColorization "
        "code (models/model_IHN.py not found)")
  try:
    import torchvision  # pylint: disable=g-import-not-at-top,unused-import
  except ImportError:
    stub = types.ModuleType("torchvision")
    stub.models = types.ModuleType("torchvision.models")
    stub.models.vgg19 = _offline_vgg19
    stub.transforms = _transforms_stub()
    sys.modules.update({"torchvision": stub, "torchvision.models": stub.models,
                        "torchvision.transforms": stub.transforms})
  sys.path.insert(0, repo)
  try:
    ihn_module = importlib.import_module("models.model_IHN")
    gf_module = importlib.import_module("models.model_G_F")
    functions = importlib.import_module("functions")
  finally:
    sys.path.remove(repo)
  offline_models = types.SimpleNamespace(vgg19=_offline_vgg19)
  ihn_module.models = offline_models
  gf_module.models = offline_models
  return {"IHNet": ihn_module.IHNet, "Encoder": gf_module.Encoder,
          "G_Unet_add_input": gf_module.G_Unet_add_input,
          "MultipleBasicBlock_4": gf_module.MultipleBasicBlock_4, "D": gf_module.D,
          "GANLoss": gf_module.GANLoss, "VGG19_pool4": ihn_module.VGG19,
          "functions": functions}
