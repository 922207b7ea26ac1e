"""Weight files of the evaluation networks: npz <-> Flax variables, validated.

The evaluation networks (LPIPS, the FID InceptionV3) read their weights from
the project's neutral weight files (`ihc_jax.weights`: `.npz` whose keys are
the '/'-joined paths of the Flax variable tree, e.g.
``params/net/conv1_1/kernel`` or ``batch_stats/Mixed_5b/branch1x1/bn/mean``).
Files are written once by `ihc_jax.tools.convert_eval_weights` and never
pickled. Every load is checked against the shapes of
`jax.eval_shape(model.init, ...)` so a wrong or stale file fails loudly instead
of producing a silently wrong metric.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from ihc_jax import weights

Variables = dict[str, Any]


class MissingWeightsError(FileNotFoundError):
  """A metric cannot run because its weights file does not exist.

  Attributes:
    metric: name of the metric, e.g. "lpips" or "fid".
    path: the file the metric needs (may be empty if the config has no path).
    hint: how to make the file (the converter command).
  """

  def __init__(self, metric: str, path: str, hint: str):
    self.metric = metric
    self.path = path
    self.hint = hint
    where = repr(path) if path else "(no path set)"
    super().__init__(
        f"{metric}: weights file {where} is missing. {hint}")


flatten_variables = weights.flatten_variables
unflatten_variables = weights.unflatten_variables


def save_npz(path: str, variables: Mapping[str, Any]) -> None:
  """Writes a variable tree to `.npz` (atomically, no pickle).

  Args:
    path: output file; parent directories are created.
    variables: nested variable tree, e.g. {"params": ..., "batch_stats": ...}.
  """
  weights.save_variables(path, variables)


def load_npz(path: str) -> Variables:
  """Reads a file written by `save_npz` into a nested dict of numpy arrays."""
  return weights.load_variables(path)


def check_variables(variables: Mapping[str, Any], expected: Mapping[str, Any],
                    *, what: str) -> None:
  """Checks that `variables` has exactly the keys and shapes of `expected`.

  Args:
    variables: the loaded tree (arrays).
    expected: a tree of arrays or `jax.ShapeDtypeStruct`s, typically from
      `jax.eval_shape(model.init, ...)`.
    what: a name for error messages (file or network).

  Raises:
    ihc_jax.weights.WeightsMismatchError (a ValueError): naming missing,
      unexpected and mis-shaped keys.
  """
  weights.validate_variables(variables, expected, source=what)


def random_variables(expected: Mapping[str, Any], *,
                     seed: int = 0) -> Variables:
  """Random variables with the shapes of `expected` (for tests and benches).

  Cheaper than `model.init` for big networks (no compilation). Kernels are
  He-normal over their fan-in (all axes but the last), BatchNorm scales 1,
  biases and running means 0, running variances 1.

  Args:
    expected: tree of arrays or `jax.ShapeDtypeStruct`s.
    seed: numpy seed.

  Returns:
    Nested dict of float32 numpy arrays; the caller says that these are random.
  """
  rng = np.random.default_rng(seed)
  flat = {}
  for key, leaf in flatten_variables(expected).items():
    shape = tuple(leaf.shape)
    name = key.rsplit("/", 1)[-1]
    if name == "kernel":
      fan_in = int(np.prod(shape[:-1])) or 1
      value = rng.normal(0.0, np.sqrt(2.0 / fan_in), shape)
    elif name in ("scale", "var"):
      value = np.ones(shape)
    else:
      value = np.zeros(shape)
    flat[key] = value.astype(np.float32)
  return unflatten_variables(flat)
