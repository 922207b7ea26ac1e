"""Weight files of the evaluation networks: npz <-> Flax variables, validated.

The evaluation networks (LPIPS, the FID InceptionV3) read their weights from
plain `.npz` files whose keys are the '/'-joined paths of the Flax variable
tree, e.g. ``params/net/conv1_1/kernel`` or
``batch_stats/Mixed_5b/branch1x1/bn/mean``. Files are written once by
`ihc_jax.tools.convert_eval_weights` and never pickled. Every load is checked
against the shapes of `jax.eval_shape(model.init, ...)` so a wrong or stale
file fails loudly instead of producing a silently wrong metric.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import numpy as np

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
    where = repr(path) if path else "(no path set in config)"
    super().__init__(
        f"{metric}: weights file {where} is missing. {hint}")


def flatten_variables(variables: Mapping[str, Any]) -> dict[str, np.ndarray]:
  """Flattens a nested variable tree into '/'-joined keys -> numpy arrays.

  Args:
    variables: nested mapping of str -> (mapping | array).

  Returns:
    A flat dict; keys join the nested names with '/'.
  """
  flat = {}

  def visit(prefix: str, node: Any) -> None:
    if isinstance(node, Mapping):
      for key, value in node.items():
        if "/" in str(key):
          raise ValueError(f"variable name {key!r} under {prefix!r} contains '/'")
        visit(f"{prefix}/{key}" if prefix else str(key), value)
    else:
      flat[prefix] = np.asarray(node)

  visit("", variables)
  return flat


def unflatten_variables(flat: Mapping[str, np.ndarray]) -> Variables:
  """Inverse of `flatten_variables`.

  Args:
    flat: '/'-joined keys -> arrays.

  Returns:
    The nested dict of arrays.
  """
  tree: Variables = {}
  for key, value in flat.items():
    parts = key.split("/")
    node = tree
    for part in parts[:-1]:
      node = node.setdefault(part, {})
      if not isinstance(node, dict):
        raise ValueError(f"key {key!r} nests under an array")
    node[parts[-1]] = value
  return tree


def save_npz(path: str, variables: Mapping[str, Any]) -> None:
  """Writes a variable tree to an uncompressed `.npz` file (no pickle).

  Args:
    path: output file; parent directories are created.
    variables: nested variable tree, e.g. {"params": ..., "batch_stats": ...}.
  """
  flat = flatten_variables(variables)
  for key, value in flat.items():
    if value.dtype == object:
      raise ValueError(f"{key}: object arrays cannot be saved without pickle")
  parent = os.path.dirname(os.path.abspath(path))
  os.makedirs(parent, exist_ok=True)
  with open(path, "wb") as f:
    np.savez(f, **flat)


def load_npz(path: str) -> Variables:
  """Reads a `.npz` written by `save_npz` (pickle disabled).

  Args:
    path: the `.npz` file.

  Returns:
    The nested variable tree of numpy arrays.
  """
  with np.load(path, allow_pickle=False) as data:
    flat = {key: data[key] for key in data.files}
  return unflatten_variables(flat)


def check_variables(variables: Mapping[str, Any], expected: Mapping[str, Any],
                    *, what: str) -> None:
  """Checks that `variables` has exactly the keys and shapes of `expected`.

  Args:
    variables: the loaded tree (arrays).
    expected: a tree of arrays or `jax.ShapeDtypeStruct`s, typically from
      `jax.eval_shape(model.init, ...)`.
    what: a name for error messages (file or network).

  Raises:
    ValueError: listing missing keys, unexpected keys and shape mismatches.
  """
  got = {k: tuple(np.shape(v)) for k, v in _flatten_shapes(variables).items()}
  want = {k: tuple(v.shape) for k, v in _flatten_shapes(expected).items()}
  missing = sorted(set(want) - set(got))
  unexpected = sorted(set(got) - set(want))
  wrong = sorted(k for k in set(want) & set(got) if want[k] != got[k])
  if missing or unexpected or wrong:
    lines = [f"{what}: variables do not match the network"]
    if missing:
      lines.append(f"  missing ({len(missing)}): {missing[:8]}")
    if unexpected:
      lines.append(f"  unexpected ({len(unexpected)}): {unexpected[:8]}")
    for k in wrong[:8]:
      lines.append(f"  shape of {k}: file {got[k]}, network {want[k]}")
    raise ValueError("\n".join(lines))


def _flatten_shapes(tree: Mapping[str, Any]) -> dict[str, Any]:
  flat = {}

  def visit(prefix: str, node: Any) -> None:
    if isinstance(node, Mapping):
      for key, value in node.items():
        visit(f"{prefix}/{key}" if prefix else str(key), value)
    else:
      flat[prefix] = node

  visit("", tree)
  return flat


def random_variables(expected: Mapping[str, Any], *, seed: int = 0) -> Variables:
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
  for key, leaf in _flatten_shapes(expected).items():
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
