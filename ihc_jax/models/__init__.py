"""Linen modules of Inverse Halftone Colorization and their configuration.

`default_model_config()` holds the official sizes (the published PyTorch
weights load into these), `tiny_model_config()` the same classes with small
numbers for tests, and `build(name, cfg)` makes a network from one section.
`HistogramNet`, `VGG19` and `canny_edges` live in modules of their own and are
imported lazily.

Every section has a `dtype`: the compute dtype of that network ("float32",
the default, or "bfloat16"/"float16" for mixed precision; see
`ihc_jax.models.precision`). Parameters and outputs stay float32.
"""

from __future__ import annotations

import importlib
from typing import Any

import flax.linen as nn
import ml_collections

from ihc_jax.models.discriminator import Discriminator
from ihc_jax.models.encoder import ColorEncoder, sample_latent
from ihc_jax.models.fusion import FusionNet
from ihc_jax.models.generator import ColorizationNet
from ihc_jax.models.ihn import InverseHalftoneNet
from ihc_jax.models import precision
from ihc_jax.models.noise import filter_noise, make_noise_map
from ihc_jax.models.precision import DTYPE_NAMES
from ihc_jax.models.unet import UNet

NETWORKS = ("ihn", "generator", "encoder", "discriminator", "histogram", "fusion", "vgg19")

__all__ = [
    "ColorEncoder", "ColorizationNet", "DTYPE_NAMES", "Discriminator",
    "FusionNet", "InverseHalftoneNet", "UNet", "NETWORKS", "build",
    "canny_edges",
    "default_model_config", "filter_noise", "make_noise_map", "sample_latent",
    "tiny_model_config",
]

_LAZY = {
    "canny_edges": ("ihc_jax.models.canny", "canny_edges"),
    "HistogramNet": ("ihc_jax.models.histogram", "HistogramNet"),
    "VGG19": ("ihc_jax.models.vgg", "VGG19"),
}


def __getattr__(name: str) -> Any:
  if name in _LAZY:
    module, attr = _LAZY[name]
    return getattr(importlib.import_module(module), attr)
  raise AttributeError(f"module 'ihc_jax.models' has no attribute {name!r}")


def default_model_config() -> ml_collections.ConfigDict:
  """Official network sizes (original-code.md §3); published weights load into these.

  Returns:
    ConfigDict with sections ihn, generator, encoder, discriminator,
    histogram, fusion, vgg19.
  """
  cfg = ml_collections.ConfigDict()
  cfg.ihn = dict(nz=8, num_downs=7, ngf=64, max_mult=8, dense_innermost=True,
                 dropout_rate=0.5, detail_features=64, detail_blocks=8,
                 detail_expand=256, dtype="float32")
  cfg.generator = dict(output_channels=3, nz=8, num_downs=7, ngf=64, max_mult=8,
                       dropout_rate=0.5, luma="learned", code_shift=False,
                       code_shift_limit=0.0,
                       dtype="float32")
  cfg.encoder = dict(nz=8, ngf=64, num_downsamples=2, num_residual_blocks=4, pool=8,
                     dtype="float32")
  cfg.discriminator = dict(nz=8, ndf=64, n_layers=3, num_scales=2, dtype="float32")
  # Bins are not fixed by the official code (H was never released).
  cfg.histogram = dict(bins=64, features=(32, 64, 64), dtype="float32")
  cfg.fusion = dict(features=64, num_blocks=3, output_channels=3, dtype="float32")
  cfg.vgg19 = dict(normalization="imagenet", dtype="float32")
  return cfg


def tiny_model_config() -> ml_collections.ConfigDict:
  """The same networks with small numbers, for tests on the CPU.

  The U-Nets have num_downs=6 (inputs must be multiples of 64) so that one
  dropout level exists; E needs multiples of 32.

  Returns:
    ConfigDict with the sections of `default_model_config`.
  """
  cfg = default_model_config()
  cfg.ihn.update(ngf=4, num_downs=6, max_mult=8, detail_features=8,
                 detail_blocks=2, detail_expand=16)
  cfg.generator.update(ngf=4, num_downs=6)
  cfg.encoder.update(ngf=8, num_residual_blocks=1)
  cfg.discriminator.update(ndf=8, n_layers=2)
  cfg.histogram.update(bins=8, features=(4, 8, 8))
  cfg.fusion.update(features=8, num_blocks=1)
  return cfg


def build(name: str, cfg: ml_collections.ConfigDict) -> nn.Module:
  """Makes one network from its config section.

  Args:
    name: one of `NETWORKS`.
    cfg: the section (e.g. `config.model.ihn`), or a whole model config that
      has a section called `name`. Its `dtype` string ("float32" when absent,
      as in configs saved before the option existed) becomes the module's
      compute dtype.

  Returns:
    The (uninitialised) Linen module.

  Raises:
    ValueError: unknown network, bad section, or a `dtype` outside
      `DTYPE_NAMES`.
  """
  if name not in NETWORKS:
    raise ValueError(f"unknown network {name!r}; expected one of {NETWORKS}")
  if isinstance(cfg, ml_collections.ConfigDict) and name in cfg:
    cfg = cfg[name]
  kwargs = dict(cfg.to_dict() if isinstance(cfg, ml_collections.ConfigDict) else cfg)
  kwargs["dtype"] = precision.compute_dtype(name, kwargs.get("dtype"))
  if name == "histogram":
    if "features" in kwargs:
      kwargs["features"] = tuple(kwargs["features"])
    return importlib.import_module("ihc_jax.models.histogram").HistogramNet(**kwargs)
  if name == "vgg19":
    return importlib.import_module("ihc_jax.models.vgg").VGG19(**kwargs)
  classes = {"ihn": InverseHalftoneNet, "generator": ColorizationNet,
             "encoder": ColorEncoder, "discriminator": Discriminator,
             "fusion": FusionNet}
  try:
    return classes[name](**kwargs)
  except TypeError as e:
    raise ValueError(f"bad config for network {name!r}: {e}") from e
