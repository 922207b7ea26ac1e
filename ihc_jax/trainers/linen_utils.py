"""Helpers to build, init and apply Linen modules inside train steps."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import jax
import ml_collections

from ihc_jax import models
from ihc_jax.models import precision


def build(name: str, model_config: ml_collections.ConfigDict) -> nn.Module:
  """`ihc_jax.models.build` for one section of `config.model`."""
  return models.build(name, model_config[name] if name in model_config
                      else model_config)


def compute_dtype(model_config: ml_collections.ConfigDict, name: str) -> Any:
  """The jnp compute dtype of `model_config[name]` (float32 without a key).

  For networks applied through a loss helper rather than `build` (VGG19).
  """
  return precision.compute_dtype(name, model_config[name].get("dtype"))


# XLA:CPU options for the one-off initialisation: without LLVM's
# optimisations it compiles 4-8x faster and, run once, costs far less than it
# saves (tiny test networks: 43.6 -> 5.8 s of compilation for IHN, G, E, D;
# official widths: 28.3 -> 7.3 s, running 4.2 s instead of 1.0 s). The
# parameters differ from the optimised program's by float rounding only
# (at most 1.5e-8). benchmarks/RESULTS.md, "Compile time on CPU".
INIT_COMPILER_OPTIONS = {"xla_backend_optimization_level": 0}


def init_variables(module: nn.Module, key: jax.Array, *args: Any,
                   **kwargs: Any) -> dict[str, Any]:
  """Initialises `module` on example inputs; returns host-side variables.

  Args:
    module: a Linen module.
    key: init key (also used as the dropout key).
    *args: example inputs.
    **kwargs: keyword inputs (e.g. train=False).

  Returns:
    {'params': ..., 'batch_stats': ...?} as a plain dict.
  """
  params_key, dropout_key = jax.random.split(key)
  init = jax.jit(lambda k, d: module.init({"params": k, "dropout": d},
                                          *args, **kwargs))
  traced = any(isinstance(leaf, jax.core.Tracer)
               for leaf in jax.tree.leaves((key, args, kwargs)))
  if traced or jax.default_backend() != "cpu":
    # Inside a transformation (e.g. an init that is itself jitted) the
    # outer program decides how everything is compiled.
    return dict(init(params_key, dropout_key))
  compiled = init.lower(params_key, dropout_key).compile(
      compiler_options=INIT_COMPILER_OPTIONS)
  return dict(compiled(params_key, dropout_key))


def apply_train(module: nn.Module, variables: Mapping[str, Any],
                params: Any, *args: Any, rng: jax.Array,
                **kwargs: Any) -> tuple[Any, Any]:
  """Applies `module` in training mode with `params` substituted.

  Args:
    module: the Linen module.
    variables: its variables (batch_stats are read from here).
    params: the params to use (the differentiated argument).
    *args: inputs.
    rng: dropout key.
    **kwargs: e.g. train=True.

  Returns:
    (output, updated batch_stats or {} when the network has none).
  """
  full = dict(variables, params=params)
  if "batch_stats" in variables:
    out, updates = module.apply(full, *args, rngs={"dropout": rng},
                                mutable=["batch_stats"], **kwargs)
    return out, updates["batch_stats"]
  return module.apply(full, *args, rngs={"dropout": rng}, **kwargs), {}


def apply_eval(module: nn.Module, variables: Mapping[str, Any], *args: Any,
               **kwargs: Any) -> Any:
  """Applies `module` with fixed variables (no state update)."""
  return module.apply(dict(variables), *args, **kwargs)
