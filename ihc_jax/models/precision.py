"""Compute dtypes of the networks (`config.model.<net>.dtype`).

Every network takes a `dtype` attribute: the dtype its convolutions and
activations run in. Parameters, batch statistics and optimizer states stay
float32 (kernels are cast to the compute dtype where they are used),
normalisation statistics are computed in float32, and every network returns
float32, so losses, Gram matrices, histograms and metrics are float32 in
every mode. "float32" (the default) computes exactly what it did before the
option existed.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16,
          "float16": jnp.float16}
"""Config string -> compute dtype."""

DTYPE_NAMES = tuple(DTYPES)
DEFAULT_DTYPE = "float32"


def compute_dtype(network: str, value: Any = None) -> Any:
  """The jnp dtype named by `config.model.<network>.dtype`.

  Args:
    network: network name, for the error message.
    value: "float32", "bfloat16" or "float16"; None (a config saved before
      the option existed) means float32.

  Returns:
    jnp.float32, jnp.bfloat16 or jnp.float16.

  Raises:
    ValueError: naming the network, the value and the choices.
  """
  if value is None:
    value = DEFAULT_DTYPE
  if not isinstance(value, str) or value not in DTYPES:
    raise ValueError(
        f"model.{network}.dtype={value!r} is not a supported compute dtype; "
        f"choose one of {list(DTYPE_NAMES)}")
  return DTYPES[value]


def to_float32(tree: Any) -> Any:
  """Casts every array of a network's output (array, tuple, list) to float32."""
  return jax.tree.map(lambda x: x.astype(jnp.float32), tree)
