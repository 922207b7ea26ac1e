"""LPIPS v0.1 perceptual distance (Zhang et al., CVPR 2018) in Flax Linen.

The metric as published in the `lpips` package, version 0.1:

1. images in [-1, 1] pass the LPIPS scaling layer
   ``(x - shift) / scale`` with shift (-.030, -.088, -.188) and
   scale (.458, .448, .450);
2. a frozen ImageNet backbone gives five feature maps: VGG16 relu1_2, relu2_2,
   relu3_3, relu4_3, relu5_3 or AlexNet's five ReLU outputs after conv1..conv5
   (torchvision layouts);
3. each feature is unit-normalised over channels (eps 1e-10), the two images'
   features are subtracted and squared;
4. a 1x1 linear head per layer (non-negative weights, no bias) maps the squared
   difference to one channel, which is averaged over space;
5. the five layer scores are summed.

`lpips_distance` takes images in **[0, 1]** (the project convention) and maps
them to [-1, 1] itself. Weights come from an `.npz` made by
`python -m ihc_jax.tools.convert_eval_weights lpips ...`; see
docs/evaluation.md.
"""

from __future__ import annotations

import functools
import os
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from ihc_jax import weights
from ihc_jax.eval import weights_io

SHIFT = (-0.030, -0.088, -0.188)
SCALE = (0.458, 0.448, 0.450)
NORM_EPS = 1e-10

# Output channels of the five compared layers per backbone.
LAYER_CHANNELS = {
    "vgg": (64, 128, 256, 512, 512),
    "alex": (64, 192, 384, 256, 256),
}
# Smallest image side for which the deepest compared layer is non-empty.
MIN_SIZE = {"vgg": 16, "alex": 31}

# Flax conv name -> index in torchvision's `features` Sequential.
VGG16_TORCH_INDEX = {
    "conv1_1": 0, "conv1_2": 2,
    "conv2_1": 5, "conv2_2": 7,
    "conv3_1": 10, "conv3_2": 12, "conv3_3": 14,
    "conv4_1": 17, "conv4_2": 19, "conv4_3": 21,
    "conv5_1": 24, "conv5_2": 26, "conv5_3": 28,
}
ALEXNET_TORCH_INDEX = {"conv1": 0, "conv2": 3, "conv3": 6, "conv4": 8,
                       "conv5": 10}

CONVERT_HINT = (
    "Convert the public PyTorch weights once with: python -m "
    "ihc_jax.tools.convert_eval_weights lpips --net={net} "
    "--backbone=<{backbone_file}> "
    "--heads=<lpips package weights/v0.1/{net}.pth> --out={path}, then set "
    "eval.lpips_weights (evaluate: --lpips_weights)")
_BACKBONE_FILES = {"vgg": "vgg16-397923af.pth",
                   "alex": "alexnet-owt-7be5be79.pth"}


class VGG16Features(nn.Module):
  """torchvision VGG16 `features` up to relu5_3 (no batch norm).

  Returns the activations after relu1_2, relu2_2, relu3_3, relu4_3, relu5_3.
  """

  @nn.compact
  def __call__(self, x: jax.Array) -> list[jax.Array]:
    outputs = []
    blocks = ((64, 2), (128, 2), (256, 3), (512, 3), (512, 3))
    for block, (channels, depth) in enumerate(blocks, start=1):
      if block > 1:
        x = nn.max_pool(x, (2, 2), strides=(2, 2))
      for i in range(1, depth + 1):
        x = nn.Conv(channels, (3, 3), padding=((1, 1), (1, 1)),
                    name=f"conv{block}_{i}")(x)
        x = nn.relu(x)
      outputs.append(x)
    return outputs


class AlexNetFeatures(nn.Module):
  """torchvision AlexNet `features` up to the ReLU after conv5.

  Returns the five ReLU outputs after conv1..conv5.
  """

  @nn.compact
  def __call__(self, x: jax.Array) -> list[jax.Array]:
    outputs = []
    x = nn.relu(nn.Conv(64, (11, 11), strides=(4, 4),
                        padding=((2, 2), (2, 2)), name="conv1")(x))
    outputs.append(x)
    x = nn.max_pool(x, (3, 3), strides=(2, 2))
    x = nn.relu(nn.Conv(192, (5, 5), padding=((2, 2), (2, 2)),
                        name="conv2")(x))
    outputs.append(x)
    x = nn.max_pool(x, (3, 3), strides=(2, 2))
    for i, channels in ((3, 384), (4, 256), (5, 256)):
      x = nn.relu(nn.Conv(channels, (3, 3), padding=((1, 1), (1, 1)),
                          name=f"conv{i}")(x))
      outputs.append(x)
    return outputs


def _unit_normalize(x: jax.Array) -> jax.Array:
  norm = jnp.sqrt(jnp.sum(x * x, axis=-1, keepdims=True))
  return x / (norm + NORM_EPS)


class LPIPS(nn.Module):
  """LPIPS v0.1 network: backbone "net" and linear heads "lin0".."lin4".

  Attributes:
    net: "vgg" (VGG16) or "alex" (AlexNet).
  """
  net: str = "vgg"

  @nn.compact
  def __call__(self, a: jax.Array, b: jax.Array) -> jax.Array:
    """Distance between two batches of images in [-1, 1].

    Args:
      a: [B, H, W, 3] images in [-1, 1].
      b: [B, H, W, 3] images in [-1, 1].

    Returns:
      [B] float32 LPIPS distances.
    """
    if self.net == "vgg":
      backbone = VGG16Features(name="net")
    elif self.net == "alex":
      backbone = AlexNetFeatures(name="net")
    else:
      raise ValueError(f"LPIPS net must be 'vgg' or 'alex', got {self.net!r}")
    shift = jnp.asarray(SHIFT, jnp.float32)
    scale = jnp.asarray(SCALE, jnp.float32)
    # One backbone pass over both batches.
    both = (jnp.concatenate([a, b], axis=0) - shift) / scale
    features = backbone(both)
    batch = a.shape[0]
    total = jnp.zeros((batch,), jnp.float32)
    for k, feature in enumerate(features):
      fa, fb = feature[:batch], feature[batch:]
      diff = jnp.square(_unit_normalize(fa) - _unit_normalize(fb))
      # Published heads are non-negative; random init is too, so that random-
      # weight tests still give a distance that grows with the difference.
      head = nn.Conv(1, (1, 1), use_bias=False, name=f"lin{k}",
                     kernel_init=nn.initializers.uniform(scale=0.1))
      total = total + jnp.mean(head(diff), axis=(1, 2, 3))
    return total


def _check_images(a: jax.Array, b: jax.Array, net: str) -> None:
  if net not in LAYER_CHANNELS:
    raise ValueError(f"LPIPS net must be 'vgg' or 'alex', got {net!r}")
  if a.ndim != 4 or a.shape[-1] not in (1, 3):
    raise ValueError(
        f"LPIPS expects NHWC images with 1 or 3 channels, got shape {a.shape}")
  if a.shape != b.shape:
    raise ValueError(
        f"LPIPS images must have equal shapes, got {a.shape} and {b.shape}")
  if min(a.shape[1:3]) < MIN_SIZE[net]:
    raise ValueError(
        f"LPIPS-{net} needs images of at least {MIN_SIZE[net]}x{MIN_SIZE[net]}"
        f" pixels, got {a.shape[1]}x{a.shape[2]}")


@functools.partial(jax.jit, static_argnames=("net",))
def _apply(variables: Any, a: jax.Array, b: jax.Array, net: str) -> jax.Array:
  return LPIPS(net=net).apply(variables, a, b)


def lpips_distance(params: Any, a: jax.Array, b: jax.Array, *,
                   net: str = "vgg") -> jax.Array:
  """LPIPS v0.1 distance between two image batches.

  Args:
    params: the LPIPS variables ({"params": ...}) as returned by `load_lpips`
      or `LPIPS(net).init`; a bare params tree (without the "params" level) is
      accepted too.
    a: [B, H, W, 3] (or 1-channel gray, repeated to RGB) images in **[0, 1]**;
      mapped to [-1, 1] here, as the published metric expects.
    b: same shape as `a`.
    net: "vgg" or "alex"; must match the weights.

  Returns:
    [B] float32 distances (0 for identical images).
  """
  a = jnp.asarray(a, jnp.float32)
  b = jnp.asarray(b, jnp.float32)
  _check_images(a, b, net)
  if a.shape[-1] == 1:
    a = jnp.repeat(a, 3, axis=-1)
    b = jnp.repeat(b, 3, axis=-1)
  variables = params if "params" in params else {"params": params}
  return _apply(variables, a * 2.0 - 1.0, b * 2.0 - 1.0, net)


@functools.lru_cache(maxsize=None)
def expected_shapes(net: str = "vgg") -> Any:
  """Shapes of the LPIPS variables, from `jax.eval_shape` (no compute)."""
  x = jax.ShapeDtypeStruct((1, 32, 32, 3), jnp.float32)
  return jax.eval_shape(LPIPS(net=net).init, jax.random.key(0), x, x)


def _config_section(config: Any) -> Any:
  return config.eval if hasattr(config, "eval") else config


def load_lpips(config: Any) -> tuple[str, Any]:
  """Loads LPIPS weights named in config, validated against the network.

  Reads `config.eval.lpips_weights` (path of the converted `.npz`) and
  `config.eval.lpips_net` ("vgg" or "alex", default "vgg"); `config` may also
  be the `eval` section itself.

  Args:
    config: an ml_collections ConfigDict (or any attribute container).

  Returns:
    (net, variables) to pass to `lpips_distance(variables, a, b, net=net)`.

  Raises:
    MissingWeightsError: the file is not set or does not exist (names the file
      and the converter command).
    ValueError: the file does not match the network.
  """
  section = _config_section(config)
  net = getattr(section, "lpips_net", "vgg") or "vgg"
  if net not in LAYER_CHANNELS:
    raise ValueError(f"eval.lpips_net must be 'vgg' or 'alex', got {net!r}")
  path = getattr(section, "lpips_weights", "") or ""
  if not path or not os.path.isfile(path):
    raise weights_io.MissingWeightsError(
        f"lpips-{net}", path, CONVERT_HINT.format(
            net=net, backbone_file=_BACKBONE_FILES[net],
            path=path or f"lpips_{net}.npz"))
  variables = weights.load_variables(path)
  weights.validate_variables(variables, expected_shapes(net), source=path)
  return net, jax.tree_util.tree_map(jnp.asarray, variables)
