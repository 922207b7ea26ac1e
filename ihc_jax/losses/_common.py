"""Shared helpers of the loss modules: reductions, distances, shape checks."""

from __future__ import annotations

import jax
import jax.numpy as jnp

REDUCTIONS = ("mean", "none")


def per_example_mean(x: jax.Array) -> jax.Array:
  """Mean over every axis but the first, in float32: [B, ...] -> [B]."""
  x = jnp.asarray(x, jnp.float32)
  return jnp.mean(x.reshape(x.shape[0], -1), axis=1)


def reduce(per_example: jax.Array, reduction: str) -> jax.Array:
  """Applies `reduction` to a per-example loss [B].

  Args:
    per_example: [B] float32.
    reduction: "mean" (scalar batch mean) or "none" (the [B] vector).

  Returns:
    A float32 scalar or [B] array.
  """
  if reduction == "mean":
    return jnp.mean(per_example)
  if reduction == "none":
    return per_example
  raise ValueError(f"unknown reduction {reduction!r}; expected one of {REDUCTIONS}")


def check_same_shape(name: str, a: jax.Array, b: jax.Array) -> None:
  """Raises a ValueError naming the loss when two inputs differ in shape."""
  if a.shape != b.shape:
    raise ValueError(f"{name}: input shapes differ, {a.shape} vs {b.shape}")
  if a.ndim < 1:
    raise ValueError(f"{name}: inputs need a batch axis, got a scalar")


def distance(a: jax.Array, b: jax.Array, kind: str) -> jax.Array:
  """Per-example mean distance: "mse" (squared) or "l1" (absolute), [B]."""
  diff = jnp.asarray(a, jnp.float32) - jnp.asarray(b, jnp.float32)
  if kind in ("mse", "l2"):
    return per_example_mean(jnp.square(diff))
  if kind == "l1":
    return per_example_mean(jnp.abs(diff))
  raise ValueError(f"unknown distance {kind!r}; expected 'mse' (alias 'l2') or 'l1'")
