"""VGG19 feature extractor (NHWC) for perceptual, structure and style losses.

The layer order and names follow torchvision's `vgg19().features`:

  conv1_1 relu1_1 conv1_2 relu1_2 pool1
  conv2_1 relu2_1 conv2_2 relu2_2 pool2
  conv3_1 relu3_1 ... conv3_4 relu3_4 pool3
  conv4_1 relu4_1 ... conv4_4 relu4_4 pool4
  conv5_1 relu5_1 ... conv5_4 relu5_4 pool5

Every conv is 3x3, stride 1, zero padding 1, with bias; every pool is a 2x2
max pool with stride 2. Parameters are named `conv1_1/{kernel,bias}` and so on
(kernels HWIO). The module only computes up to the deepest requested layer.

Input range. Images enter in [0, 1] (NHWC, 1 or 3 channels; one channel is
replicated to three). How they are normalised before the first conv is the
`normalization` option:

* "imagenet" (default): `(x - mean) / std` with torchvision's
  mean (0.485, 0.456, 0.406) and std (0.229, 0.224, 0.225); this is what the
  torchvision ImageNet weights were trained with.
* "none": the raw [0, 1] image, as the official IHC code feeds its VGG
  (it applies no normalisation anywhere).
* "caffe": `x * 255` in BGR order minus (103.939, 116.779, 123.68), as the PRL
  TensorFlow code does for its caffe-converted VGG19.

Weights. No ImageNet weights can be downloaded at run time: the torchvision
checkpoint is converted once to npz (`python -m ihc_jax.tools.convert_weights
--network vgg19 ...`, which uses `torchvision_vgg19_to_flax`) and read by
`load_vgg19_params`. With `random_features=True` the loader returns randomly
initialised weights and logs a warning (tests and the CPU demo).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from ihc_jax import kernels
from ihc_jax import weights as weights_lib
from ihc_jax.models import layers as layers_lib

# (block, number of convs) of VGG19.
_BLOCKS = ((1, 2), (2, 2), (3, 4), (4, 4), (5, 4))


def _layer_names() -> tuple[str, ...]:
  names = []
  for block, n_convs in _BLOCKS:
    for i in range(1, n_convs + 1):
      names += [f"conv{block}_{i}", f"relu{block}_{i}"]
    names.append(f"pool{block}")
  return tuple(names)


LAYER_NAMES: tuple[str, ...] = _layer_names()
"""All layer names in torchvision `features` order (index = features index)."""

CONV_NAMES: tuple[str, ...] = tuple(n for n in LAYER_NAMES if n.startswith("conv"))
"""The 16 conv layer names, in order."""

CONV_CHANNELS: dict[str, int] = {
    name: 64 * 2**min(int(name[4]) - 1, 3) for name in CONV_NAMES}
"""Output channels per conv layer (64, 128, 256, 512, 512 per block)."""

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CAFFE_BGR_MEAN = (103.939, 116.779, 123.68)
NORMALIZATIONS = ("imagenet", "none", "caffe")
_KERNEL_INIT = nn.initializers.variance_scaling(2.0, "fan_out", "normal")
CONVERTER_COMMAND = (
    "python -m ihc_jax.tools.convert_weights --network vgg19 "
    "--input vgg19-dcbb9e9d.pth --output vgg19.npz")


def normalize_input(image: jax.Array, normalization: str) -> jax.Array:
  """Maps a [0, 1] NHWC image (1 or 3 channels) to VGG's input convention.

  Args:
    image: [B, H, W, 1 or 3] float in [0, 1].
    normalization: "imagenet", "none" or "caffe" (see the module docstring).

  Returns:
    [B, H, W, 3] float32.
  """
  if image.ndim != 4 or image.shape[-1] not in (1, 3):
    raise ValueError(
        f"VGG19 expects an NHWC image with 1 or 3 channels, got shape {image.shape}")
  x = jnp.asarray(image, jnp.float32)
  if x.shape[-1] == 1:
    x = jnp.repeat(x, 3, axis=-1)
  if normalization == "imagenet":
    return (x - jnp.array(IMAGENET_MEAN)) / jnp.array(IMAGENET_STD)
  if normalization == "none":
    return x
  if normalization == "caffe":
    return x[..., ::-1] * 255.0 - jnp.array(CAFFE_BGR_MEAN)
  raise ValueError(
      f"unknown VGG19 normalization {normalization!r}; expected one of {NORMALIZATIONS}")


class VGG19(nn.Module):
  """VGG19 convolutional trunk returning named intermediate activations.

  Attributes:
    normalization: input normalisation, "imagenet" (default), "none" or
      "caffe"; see the module docstring.
    dtype: compute dtype of the trunk; the input normalisation is float32,
      parameters stay float32 and the returned activations are float32.
  """
  normalization: str = "imagenet"
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, image: jax.Array, *,
               layers: Sequence[str]) -> dict[str, jax.Array]:
    """Runs the trunk up to the deepest of `layers`.

    Args:
      image: [B, H, W, 1 or 3] float in [0, 1].
      layers: names from `LAYER_NAMES`, e.g. ("relu4_1", "pool4").

    Returns:
      Dict layer name -> activation [B, h, w, C] (float32) for every
      requested layer.
    """
    if isinstance(layers, str):
      layers = (layers,)
    unknown = [name for name in layers if name not in LAYER_NAMES]
    if unknown or not layers:
      raise ValueError(
          f"unknown VGG19 layer(s) {unknown or list(layers)}; valid names are "
          f"{', '.join(LAYER_NAMES)}")
    wanted = set(layers)
    last = max(LAYER_NAMES.index(name) for name in layers)
    x = normalize_input(image, self.normalization).astype(self.dtype)
    out = {}
    for name in LAYER_NAMES[:last + 1]:
      if name.startswith("conv"):
        # torchvision's VGG init (kaiming normal, fan_out): random features
        # keep their scale, unlike Flax's default LeCun init.
        x = layers_lib.Conv2d(CONV_CHANNELS[name], 3, padding=1, kernel_init=_KERNEL_INIT,
                              bias_init=nn.initializers.zeros, name=name)(x)
      elif name.startswith("relu"):
        x = nn.relu(x)
      else:
        x = kernels.max_pool_blocks(x, 2)
      if name in wanted:
        out[name] = x.astype(jnp.float32)
    return out


def init_vgg19_params(seed: int = 0) -> dict[str, Any]:
  """Randomly initialised VGG19 params (all 16 convs), for tests and demos.

  Same distribution as `VGG19.init` (and torchvision's VGG init): kernels
  N(0, 2 / fan_out), zero biases, so activations keep their scale through the
  ReLU stack instead of vanishing. Drawn with NumPy from `seed`: generating
  20M numbers with NumPy takes well under a second on a CPU, many times less
  than `jax.random` plus a compiled `init`.

  Args:
    seed: integer seed.

  Returns:
    The `params` collection: {"conv1_1": {"kernel", "bias"}, ...} (jax arrays).
  """
  rng = np.random.default_rng(seed)
  params = {}
  for name, shapes in vgg19_param_shapes().items():
    h, w, _, out_channels = shapes["kernel"]
    std = np.sqrt(2.0 / (h * w * out_channels)).astype(np.float32)
    kernel = rng.standard_normal(shapes["kernel"], dtype=np.float32) * std
    params[name] = {"kernel": jnp.asarray(kernel),
                    "bias": jnp.zeros(shapes["bias"], jnp.float32)}
  return params


def vgg19_param_shapes() -> dict[str, dict[str, tuple[int, ...]]]:
  """Expected parameter shapes, {"conv1_1": {"kernel": (3,3,3,64), ...}, ...}."""
  shapes = {}
  in_channels = 3
  for name in CONV_NAMES:
    out_channels = CONV_CHANNELS[name]
    shapes[name] = {"kernel": (3, 3, in_channels, out_channels),
                    "bias": (out_channels,)}
    in_channels = out_channels
  return shapes


def _torch_index(name: str) -> int:
  return LAYER_NAMES.index(name)


def torchvision_vgg19_to_flax(
    state_dict: Mapping[str, np.ndarray]) -> dict[str, dict[str, np.ndarray]]:
  """Maps a torchvision `vgg19` state dict (numpy arrays) to Flax params.

  `features.{i}.weight` (OIHW) becomes `conv*_*/kernel` (HWIO) and
  `features.{i}.bias` becomes `conv*_*/bias`; `classifier.*` keys are ignored.

  Args:
    state_dict: key -> numpy array (e.g. `{k: v.numpy() for k, v in sd.items()}`).

  Returns:
    Nested dict {"conv1_1": {"kernel": ..., "bias": ...}, ...} of float32 arrays.

  Raises:
    KeyError: a conv key is missing.
    ValueError: an array has the wrong shape.
  """
  expected = vgg19_param_shapes()
  params = {}
  for name in CONV_NAMES:
    prefix = f"features.{_torch_index(name)}"
    for suffix in ("weight", "bias"):
      if f"{prefix}.{suffix}" not in state_dict:
        raise KeyError(f"VGG19 state dict lacks {prefix}.{suffix} ({name})")
    weight = np.asarray(state_dict[f"{prefix}.weight"], np.float32)
    bias = np.asarray(state_dict[f"{prefix}.bias"], np.float32)
    kernel = weight.transpose(2, 3, 1, 0)
    if kernel.shape != expected[name]["kernel"] or bias.shape != expected[name]["bias"]:
      raise ValueError(
          f"{prefix} ({name}): weight {weight.shape} / bias {bias.shape} do not "
          f"match VGG19 (kernel HWIO {expected[name]['kernel']})")
    params[name] = {"kernel": kernel, "bias": bias}
  return params


def flax_vgg19_to_torchvision(params: Mapping[str, Any]) -> dict[str, np.ndarray]:
  """Inverse of `torchvision_vgg19_to_flax` (for round-trip tests and export).

  Args:
    params: {"conv1_1": {"kernel": HWIO, "bias": ...}, ...}.

  Returns:
    {"features.0.weight": OIHW, "features.0.bias": ..., ...} float32 arrays.
  """
  state_dict = {}
  for name in CONV_NAMES:
    prefix = f"features.{_torch_index(name)}"
    kernel = np.asarray(params[name]["kernel"], np.float32)
    state_dict[f"{prefix}.weight"] = kernel.transpose(3, 2, 0, 1)
    state_dict[f"{prefix}.bias"] = np.asarray(params[name]["bias"], np.float32)
  return state_dict


def load_vgg19_params(perceptual_config: Any, *, seed: int = 0) -> dict[str, Any]:
  """Loads the frozen VGG19 params named by a `perceptual` config section.

  Args:
    perceptual_config: object (e.g. ConfigDict) with `vgg19_weights` (path to
      the converted .npz/.safetensors with keys "params/conv1_1/kernel", ...;
      may be empty/None) and `random_features` (bool).
    seed: PRNG seed for the random-feature fallback.

  Returns:
    The `params` collection for `VGG19`.

  Raises:
    FileNotFoundError: `vgg19_weights` is unset or missing and
      `random_features` is False.
    ihc_jax.weights.WeightsMismatchError: the file's keys/shapes are not VGG19's.
  """
  path = getattr(perceptual_config, "vgg19_weights", None) or None
  random_features = bool(getattr(perceptual_config, "random_features", False))
  if path is not None and os.path.exists(path):
    example = jax.ShapeDtypeStruct((1, 32, 32, 3), jnp.float32)
    variables = weights_lib.load_and_validate(path, VGG19(), example,
                                              layers=("relu5_4",))
    return variables["params"]
  if not random_features:
    raise FileNotFoundError(
        f"VGG19 weights not found: perceptual.vgg19_weights={path!r}. Convert "
        f"torchvision's ImageNet checkpoint once with `{CONVERTER_COMMAND}` and "
        "set perceptual.vgg19_weights to the .npz, or set "
        "perceptual.random_features=True to run VGG-based losses on random "
        "features (tests/demos only).")
  logging.warning(
      "VGG19 features are RANDOM (perceptual.random_features=True, "
      "perceptual.vgg19_weights=%r not found): perceptual/style/structure "
      "losses do not use ImageNet features.", path)
  return init_vgg19_params(seed)
