"""InceptionV3 as used for FID (the pytorch-fid / TF-FID variant) in Flax Linen.

The network is InceptionV3 (Szegedy et al. 2016) with the changes that make it
match the TensorFlow graph of the original FID code, as in pytorch-fid:

* the A, C and first E blocks average-pool their pool branch without counting
  the zero padding (`count_include_pad=False`);
* the last E block (Mixed_7c) max-pools its pool branch instead;
* no auxiliary classifier; the output is the 2048-d global average pool before
  the classifier (which is not built at all).

Each conv is bias-free and followed by BatchNorm (eps 1e-3, running
statistics) and ReLU. Module names mirror the PyTorch state-dict keys
(`Mixed_5b/branch1x1/conv`, `.../bn`) so that conversion is a renaming.

Inputs are NHWC images in **[0, 1]**; they are resized to 299x299 (bilinear,
half-pixel centres, no antialiasing, like `F.interpolate(...,
align_corners=False)`) and mapped to [-1, 1] inside `__call__`.
"""

from __future__ import annotations

import functools
import os
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from ihc_jax import weights
from ihc_jax.eval import weights_io

INPUT_SIZE = 299
FEATURE_DIM = 2048
MIN_SIZE = 75  # Smallest input side for which every stage stays non-empty.
BN_EPS = 1e-3

CONVERT_HINT = (
    "Convert pytorch-fid's weights once with: python -m "
    "ihc_jax.tools.convert_eval_weights inception "
    "--src=<pt_inception-2015-12-05-6726825d.pth> --out={path}, then set "
    "eval.inception_weights (evaluate: --inception_weights)")

Padding = tuple[tuple[int, int], tuple[int, int]]


def _pad(kernel: tuple[int, int]) -> Padding:
  return ((kernel[0] // 2, kernel[0] // 2), (kernel[1] // 2, kernel[1] // 2))


class BasicConv(nn.Module):
  """Bias-free conv + BatchNorm(eps=1e-3, running stats) + ReLU."""
  features: int
  kernel: tuple[int, int] = (1, 1)
  strides: tuple[int, int] = (1, 1)
  padding: Any = "VALID"

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    x = nn.Conv(self.features, self.kernel, strides=self.strides,
                padding=self.padding, use_bias=False, name="conv")(x)
    x = nn.BatchNorm(use_running_average=True, epsilon=BN_EPS, name="bn")(x)
    return nn.relu(x)


def _avg_pool_3x3(x: jax.Array) -> jax.Array:
  # TF's average pool ignores padded zeros; pytorch-fid patches this in too.
  return nn.avg_pool(x, (3, 3), strides=(1, 1), padding=((1, 1), (1, 1)),
                     count_include_pad=False)


def _max_pool_3x3_s2(x: jax.Array) -> jax.Array:
  return nn.max_pool(x, (3, 3), strides=(2, 2))


class InceptionA(nn.Module):
  """35x35 block (Mixed_5b/c/d): 1x1, 5x5, double 3x3 and pool branches."""
  pool_features: int

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    b1 = BasicConv(64, name="branch1x1")(x)
    b5 = BasicConv(48, name="branch5x5_1")(x)
    b5 = BasicConv(64, (5, 5), padding=_pad((5, 5)), name="branch5x5_2")(b5)
    b3 = BasicConv(64, name="branch3x3dbl_1")(x)
    b3 = BasicConv(96, (3, 3), padding=_pad((3, 3)), name="branch3x3dbl_2")(b3)
    b3 = BasicConv(96, (3, 3), padding=_pad((3, 3)), name="branch3x3dbl_3")(b3)
    bp = BasicConv(self.pool_features, name="branch_pool")(_avg_pool_3x3(x))
    return jnp.concatenate([b1, b5, b3, bp], axis=-1)


class InceptionB(nn.Module):
  """Grid reduction 35 -> 17 (Mixed_6a)."""

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    b3 = BasicConv(384, (3, 3), strides=(2, 2), name="branch3x3")(x)
    bd = BasicConv(64, name="branch3x3dbl_1")(x)
    bd = BasicConv(96, (3, 3), padding=_pad((3, 3)), name="branch3x3dbl_2")(bd)
    bd = BasicConv(96, (3, 3), strides=(2, 2), name="branch3x3dbl_3")(bd)
    return jnp.concatenate([b3, bd, _max_pool_3x3_s2(x)], axis=-1)


class InceptionC(nn.Module):
  """17x17 block with factorised 7x7 convs (Mixed_6b..6e)."""
  channels_7x7: int

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    c7 = self.channels_7x7
    b1 = BasicConv(192, name="branch1x1")(x)
    b7 = BasicConv(c7, name="branch7x7_1")(x)
    b7 = BasicConv(c7, (1, 7), padding=_pad((1, 7)), name="branch7x7_2")(b7)
    b7 = BasicConv(192, (7, 1), padding=_pad((7, 1)), name="branch7x7_3")(b7)
    bd = BasicConv(c7, name="branch7x7dbl_1")(x)
    for i, (channels, kernel) in enumerate(
        ((c7, (7, 1)), (c7, (1, 7)), (c7, (7, 1)), (192, (1, 7))), start=2):
      bd = BasicConv(channels, kernel, padding=_pad(kernel),
                     name=f"branch7x7dbl_{i}")(bd)
    bp = BasicConv(192, name="branch_pool")(_avg_pool_3x3(x))
    return jnp.concatenate([b1, b7, bd, bp], axis=-1)


class InceptionD(nn.Module):
  """Grid reduction 17 -> 8 (Mixed_7a)."""

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    b3 = BasicConv(192, name="branch3x3_1")(x)
    b3 = BasicConv(320, (3, 3), strides=(2, 2), name="branch3x3_2")(b3)
    b7 = BasicConv(192, name="branch7x7x3_1")(x)
    b7 = BasicConv(192, (1, 7), padding=_pad((1, 7)), name="branch7x7x3_2")(b7)
    b7 = BasicConv(192, (7, 1), padding=_pad((7, 1)), name="branch7x7x3_3")(b7)
    b7 = BasicConv(192, (3, 3), strides=(2, 2), name="branch7x7x3_4")(b7)
    return jnp.concatenate([b3, b7, _max_pool_3x3_s2(x)], axis=-1)


class InceptionE(nn.Module):
  """8x8 block with expanded 1x3/3x1 branches (Mixed_7b, Mixed_7c).

  Attributes:
    pool: "avg" (Mixed_7b, padding not counted) or "max" (Mixed_7c), as in the
      FID graph.
  """
  pool: str = "avg"

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    b1 = BasicConv(320, name="branch1x1")(x)
    b3 = BasicConv(384, name="branch3x3_1")(x)
    b3 = jnp.concatenate([
        BasicConv(384, (1, 3), padding=_pad((1, 3)), name="branch3x3_2a")(b3),
        BasicConv(384, (3, 1), padding=_pad((3, 1)), name="branch3x3_2b")(b3),
    ], axis=-1)
    bd = BasicConv(448, name="branch3x3dbl_1")(x)
    bd = BasicConv(384, (3, 3), padding=_pad((3, 3)), name="branch3x3dbl_2")(bd)
    bd = jnp.concatenate([
        BasicConv(384, (1, 3), padding=_pad((1, 3)),
                  name="branch3x3dbl_3a")(bd),
        BasicConv(384, (3, 1), padding=_pad((3, 1)),
                  name="branch3x3dbl_3b")(bd),
    ], axis=-1)
    if self.pool == "avg":
      pooled = _avg_pool_3x3(x)
    elif self.pool == "max":
      pooled = nn.max_pool(x, (3, 3), strides=(1, 1), padding=((1, 1), (1, 1)))
    else:
      raise ValueError(
          f"InceptionE pool must be 'avg' or 'max', got {self.pool!r}")
    bp = BasicConv(192, name="branch_pool")(pooled)
    return jnp.concatenate([b1, b3, bd, bp], axis=-1)


def resize_to_input(images: jax.Array) -> jax.Array:
  """Bilinear resize to 299x299 as `F.interpolate(..., align_corners=False)`.

  Half-pixel centres and no antialiasing when shrinking (PyTorch's default),
  so features match pytorch-fid for inputs of any size.

  Args:
    images: [B, H, W, C] float images.

  Returns:
    [B, 299, 299, C] float32 images.
  """
  if images.shape[1:3] == (INPUT_SIZE, INPUT_SIZE):
    return images
  shape = (images.shape[0], INPUT_SIZE, INPUT_SIZE, images.shape[3])
  return jax.image.resize(images, shape, method="bilinear", antialias=False)


class FIDInceptionV3(nn.Module):
  """InceptionV3 pool features for FID (pytorch-fid layout and numerics).

  Attributes:
    resize_input: resize to 299x299 first (as pytorch-fid does). Turn off only
      for tests or for inputs that are already 299x299.
  """
  resize_input: bool = True

  @nn.compact
  def __call__(self, images: jax.Array) -> jax.Array:
    """Computes 2048-d features.

    Args:
      images: [B, H, W, 3] float images in [0, 1].

    Returns:
      [B, 2048] float32 pool features.
    """
    x = images.astype(jnp.float32)
    if self.resize_input:
      x = resize_to_input(x)
    x = 2.0 * x - 1.0
    x = BasicConv(32, (3, 3), strides=(2, 2), name="Conv2d_1a_3x3")(x)
    x = BasicConv(32, (3, 3), name="Conv2d_2a_3x3")(x)
    x = BasicConv(64, (3, 3), padding=_pad((3, 3)), name="Conv2d_2b_3x3")(x)
    x = _max_pool_3x3_s2(x)
    x = BasicConv(80, name="Conv2d_3b_1x1")(x)
    x = BasicConv(192, (3, 3), name="Conv2d_4a_3x3")(x)
    x = _max_pool_3x3_s2(x)
    x = InceptionA(32, name="Mixed_5b")(x)
    x = InceptionA(64, name="Mixed_5c")(x)
    x = InceptionA(64, name="Mixed_5d")(x)
    x = InceptionB(name="Mixed_6a")(x)
    x = InceptionC(128, name="Mixed_6b")(x)
    x = InceptionC(160, name="Mixed_6c")(x)
    x = InceptionC(160, name="Mixed_6d")(x)
    x = InceptionC(192, name="Mixed_6e")(x)
    x = InceptionD(name="Mixed_7a")(x)
    x = InceptionE("avg", name="Mixed_7b")(x)
    x = InceptionE("max", name="Mixed_7c")(x)
    return jnp.mean(x, axis=(1, 2))


@functools.lru_cache(maxsize=None)
def expected_shapes() -> Any:
  """Shapes of the FID Inception variables, from `jax.eval_shape`."""
  x = jax.ShapeDtypeStruct((1, MIN_SIZE, MIN_SIZE, 3), jnp.float32)
  return jax.eval_shape(FIDInceptionV3(resize_input=False).init,
                        jax.random.key(0), x)


@functools.partial(jax.jit, static_argnames=("resize_input",))
def _apply(variables: Any, images: jax.Array, resize_input: bool) -> jax.Array:
  return FIDInceptionV3(resize_input=resize_input).apply(variables, images)


def inception_features(variables: Any, images: Any, *, batch_size: int = 50,
                       resize_input: bool = True) -> np.ndarray:
  """Pool features of many images, computed in batches.

  Args:
    variables: {"params", "batch_stats"} of `FIDInceptionV3`.
    images: [N, H, W, 3] (or 1-channel gray, repeated to RGB) in [0, 1];
      numpy or JAX.
    batch_size: images per forward pass; the last batch is padded to this size
      so that only one program is compiled.
    resize_input: resize to 299x299 first (pytorch-fid behaviour).

  Returns:
    [N, 2048] float64 numpy features.
  """
  images = np.asarray(images, np.float32)
  if images.ndim != 4 or images.shape[-1] not in (1, 3):
    raise ValueError(
        f"inception_features expects NHWC images with 1 or 3 channels, got "
        f"shape {images.shape}")
  if min(images.shape[1:3]) < MIN_SIZE and not resize_input:
    raise ValueError(f"InceptionV3 needs at least {MIN_SIZE}x{MIN_SIZE} inputs,"
                     f" got {images.shape[1]}x{images.shape[2]}")
  if batch_size < 1:
    raise ValueError(f"batch_size must be >= 1, got {batch_size}")
  if images.shape[-1] == 1:
    images = np.repeat(images, 3, axis=-1)
  n = images.shape[0]
  out = []
  for start in range(0, n, batch_size):
    chunk = images[start:start + batch_size]
    real = chunk.shape[0]
    if real < batch_size and n > batch_size:
      pad = np.zeros((batch_size - real,) + chunk.shape[1:], np.float32)
      chunk = np.concatenate([chunk, pad], axis=0)
    feats = _apply(variables, jnp.asarray(chunk), resize_input)
    out.append(np.asarray(feats, np.float64)[:real])
  if not out:
    return np.zeros((0, FEATURE_DIM), np.float64)
  return np.concatenate(out, axis=0)


def load_inception(config: Any) -> Any:
  """Loads the FID Inception weights named in config, validated.

  Reads `config.eval.inception_weights` (path of the converted `.npz`);
  `config` may also be the `eval` section itself.

  Args:
    config: an ml_collections ConfigDict (or any attribute container).

  Returns:
    The variables {"params", "batch_stats"} for `inception_features`.

  Raises:
    MissingWeightsError: the file is not set or does not exist (names the file
      and the converter command).
    ValueError: the file does not match the network.
  """
  section = config.eval if hasattr(config, "eval") else config
  path = getattr(section, "inception_weights", "") or ""
  if not path or not os.path.isfile(path):
    raise weights_io.MissingWeightsError(
        "fid", path, CONVERT_HINT.format(path=path or "inception_fid.npz"))
  variables = weights.load_variables(path)
  weights.validate_variables(variables, expected_shapes(), source=path)
  return jax.tree_util.tree_map(jnp.asarray, variables)
