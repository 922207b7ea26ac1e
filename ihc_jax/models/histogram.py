"""Histogram estimator H: one image channel -> a softmax distribution over bins.

Architecture (official `Hist_Model`, original-code.md §3.8): three
Conv3x3 / stride 2 / padding 1 + ReLU layers (1 -> 32 -> 64 -> 64 channels),
flatten, Dense(bins), softmax. The Dense input size follows the image size:
64 * (H/8) * (W/8) = 65536 at 256x256, so H has 55,744 + 65,537 * bins
parameters there (16,833,216 for 256 bins).

Flattening is NHWC (row, column, channel); PyTorch flattens NCHW, so
`torch_histogram_to_flax` permutes the rows of the Linear weight accordingly.

H is pretrained to regress the hard per-channel histogram of an image channel
(`ihc_jax.losses.histogram.hard_histogram`) and then frozen; the histogram
loss compares H(output) with H(reference) per RGB channel through
`channel_histograms`, which (unlike the official helper) is correct for B > 1.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from ihc_jax.models import layers

# Flax's default initialisation of `nn.Conv` (LeCun normal kernels, zero
# biases), which H has been trained from since it was written.
_KERNEL_INIT = nn.initializers.lecun_normal()


class HistogramNet(nn.Module):
  """Per-channel histogram estimator.

  Attributes:
    bins: number of histogram bins (softmax outputs).
    features: output channels of the three stride-2 convs.
    dtype: compute dtype of the convs and the Dense layer (parameters stay
      float32; the softmax is float32).
  """
  bins: int = 64
  features: Sequence[int] = (32, 64, 64)
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, channel: jax.Array) -> jax.Array:
    """Estimates the histogram of one channel.

    Args:
      channel: [B, H, W, 1] float in [0, 1].

    Returns:
      [B, bins] float32 probabilities (each row sums to 1).
    """
    if channel.ndim != 4 or channel.shape[-1] != 1:
      raise ValueError(
          f"HistogramNet expects one channel [B, H, W, 1], got shape {channel.shape}")
    x = jnp.asarray(channel, jnp.float32).astype(self.dtype)
    for i, width in enumerate(self.features):
      x = layers.Conv2d(width, 3, stride=2, padding=1, kernel_init=_KERNEL_INIT,
                        bias_init=nn.initializers.zeros, name=f"conv{i + 1}")(x)
      x = nn.relu(x)
    x = x.reshape(x.shape[0], -1)
    logits = nn.Dense(self.bins, dtype=self.dtype, name="fc")(x)
    return jax.nn.softmax(logits.astype(jnp.float32), axis=-1)


def channel_histograms(apply_fn: Callable[..., jax.Array],
                       params: Mapping[str, Any],
                       images: jax.Array) -> jax.Array:
  """Applies H to every channel of every image of a batch.

  Args:
    apply_fn: `HistogramNet(...).apply`.
    params: H's `params` collection (or a variables dict holding "params").
    images: [B, H, W, C] float in [0, 1] (C = 3 for RGB).

  Returns:
    [B, C, bins] float32: row [b, c] is H applied to channel c of image b.
  """
  if images.ndim != 4:
    raise ValueError(f"channel_histograms expects NHWC images, got shape {images.shape}")
  variables = params if "params" in params else {"params": params}
  batch, height, width, channels = images.shape
  stacked = jnp.transpose(images, (0, 3, 1, 2)).reshape(
      batch * channels, height, width, 1)
  hist = apply_fn(variables, stacked)
  return hist.reshape(batch, channels, -1)


def torch_histogram_to_flax(state_dict: Mapping[str, np.ndarray], *,
                            spatial: tuple[int, int] | None = None
                            ) -> dict[str, dict[str, np.ndarray]]:
  """Maps a PyTorch `Hist_Model` state dict (numpy arrays) to Flax params.

  The official attribute names are not known (no H weights were released), so
  the layers are taken in state-dict order: the three 4-D weights are the
  convs (OIHW -> HWIO), the 2-D weight is the Linear layer. The Linear
  weight's columns are reordered from PyTorch's (C, h, w) flatten order to
  the (h, w, C) order of `HistogramNet`.

  Args:
    state_dict: ordered key -> numpy array.
    spatial: (h, w) of the last conv's output; default assumes a square map.

  Returns:
    {"conv1", "conv2", "conv3", "fc"} -> {"kernel", "bias"} float32 arrays.

  Raises:
    ValueError: the state dict does not have the layout of `Hist_Model`.
  """
  weights = [(k, np.asarray(v, np.float32)) for k, v in state_dict.items()
             if k.endswith("weight")]
  convs = [(k, v) for k, v in weights if v.ndim == 4]
  linears = [(k, v) for k, v in weights if v.ndim == 2]
  if len(convs) != 3 or len(linears) != 1:
    raise ValueError(
        "expected 3 conv weights and 1 linear weight in the Hist_Model state "
        f"dict, got convs {[k for k, _ in convs]} and linears {[k for k, _ in linears]}")
  params = {}
  for i, (key, weight) in enumerate(convs):
    bias_key = key[:-len("weight")] + "bias"
    if bias_key not in state_dict:
      raise ValueError(f"Hist_Model state dict lacks {bias_key}")
    params[f"conv{i + 1}"] = {
        "kernel": weight.transpose(2, 3, 1, 0),
        "bias": np.asarray(state_dict[bias_key], np.float32)}
  key, weight = linears[0]
  channels = convs[-1][1].shape[0]
  bins, fan_in = weight.shape
  if fan_in % channels:
    raise ValueError(f"{key}: {fan_in} inputs is not a multiple of {channels} channels")
  if spatial is None:
    side = int(round((fan_in // channels) ** 0.5))
    spatial = (side, side)
  h, w = spatial
  if h * w * channels != fan_in:
    raise ValueError(f"{key}: {fan_in} inputs != {channels} x {h} x {w}")
  kernel = weight.reshape(bins, channels, h, w).transpose(2, 3, 1, 0)
  params["fc"] = {
      "kernel": kernel.reshape(h * w * channels, bins),
      "bias": np.asarray(state_dict[key[:-len("weight")] + "bias"], np.float32)}
  return params
