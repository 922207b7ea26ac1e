"""Input checks shared by the halftoning methods (NHWC float32 in [0, 1])."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

Array = jax.Array
ArrayLike = Any


def check_nhwc(images: ArrayLike, name: str, channels: int | None) -> Array:
  """`images` as float32 NHWC, checked (`channels`: required count or None)."""
  images = jnp.asarray(images)
  if images.ndim != 4:
    raise ValueError(f"{name} must be NHWC [B,H,W,C]; got shape {images.shape}")
  if channels is not None and images.shape[-1] != channels:
    raise ValueError(
        f"{name} must have {channels} channel(s); got shape {images.shape}")
  if not jnp.issubdtype(images.dtype, jnp.floating):
    raise ValueError(
        f"{name} must be floating point in [0, 1]; got dtype {images.dtype}")
  return images.astype(jnp.float32)


def per_sample(value: ArrayLike, batch: int, channels: int, name: str) -> Array:
  """Broadcasts a scalar, [B], [C] or [B, C] value to [B, 1, 1, C]."""
  value = jnp.asarray(value, jnp.float32)
  if value.ndim == 0:
    return jnp.broadcast_to(value, (batch, 1, 1, channels))
  if value.ndim == 1 and value.shape[0] == batch:
    return jnp.broadcast_to(value[:, None, None, None], (batch, 1, 1, channels))
  if value.ndim == 1 and value.shape[0] == channels:
    return jnp.broadcast_to(value[None, None, None, :], (batch, 1, 1, channels))
  if value.shape == (batch, channels):
    return value[:, None, None, :]
  raise ValueError(
      f"{name} must be a scalar, [batch={batch}], [channels={channels}] or "
      f"[batch, channels]; got shape {value.shape}")
