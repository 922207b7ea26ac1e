"""Neutral weight files (npz or safetensors) <-> Flax variables, validated.

A weight file holds one flat dict of float arrays whose keys are the Flax
variable paths joined with "/", collection first:
"params/content/down_0/kernel", "batch_stats/content/down_norm_1/mean", ...
No pickle is involved in either format. Files are written atomically (a
temporary file in the same folder, then a rename).

`load_and_validate(path, model, *example_args)` is what trainers and the
inference API call: it reads the file and checks every key and shape against
`jax.eval_shape(model.init, ...)`, naming the missing, unexpected and
mis-shaped entries.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping
from typing import Any

import jax
import numpy as np

SEPARATOR = "/"
CONVERTER_HINT = (
    "convert the official PyTorch checkpoint with `python -m "
    "ihc_jax.tools.convert_weights --network NAME --input X.pth --output {path}`")


class WeightsMismatchError(ValueError):
  """A weight file does not match the network it is loaded into."""


def flatten_variables(variables: Mapping[str, Any]) -> dict[str, np.ndarray]:
  """Nested dict of arrays -> {"a/b/c": numpy array}.

  Args:
    variables: nested mapping (e.g. {"params": ..., "batch_stats": ...}).

  Returns:
    Flat dict with "/"-joined keys, sorted.
  """
  flat = {}

  def visit(prefix: str, node: Any) -> None:
    if isinstance(node, Mapping):
      for key, value in node.items():
        key = str(key)
        if SEPARATOR in key or not key:
          raise ValueError(f"variable name {key!r} under {prefix!r} is empty or contains '/'")
        visit(f"{prefix}{SEPARATOR}{key}" if prefix else key, value)
    else:
      flat[prefix] = node

  visit("", variables)
  return dict(sorted(flat.items()))


def unflatten_variables(flat: Mapping[str, Any]) -> dict[str, Any]:
  """{"a/b/c": array} -> nested dict (inverse of `flatten_variables`)."""
  tree: dict[str, Any] = {}
  for key, value in flat.items():
    node = tree
    parts = key.split(SEPARATOR)
    for part in parts[:-1]:
      node = node.setdefault(part, {})
      if not isinstance(node, dict):
        raise ValueError(f"key {key!r} nests under a leaf")
    node[parts[-1]] = value
  return tree


def save_variables(path: str | os.PathLike, variables: Mapping[str, Any]) -> None:
  """Writes variables to `path` (.npz or .safetensors by extension), atomically.

  Args:
    path: destination; ".safetensors" selects safetensors, anything else npz.
    variables: nested dict of arrays.
  """
  path = os.fspath(path)
  flat = {k: np.ascontiguousarray(np.asarray(v)) for k, v in flatten_variables(variables).items()}
  folder = os.path.dirname(os.path.abspath(path))
  os.makedirs(folder, exist_ok=True)
  fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=os.path.basename(path))
  os.close(fd)
  try:
    if path.endswith(".safetensors"):
      from safetensors.numpy import save_file  # pylint: disable=g-import-not-at-top
      save_file(flat, tmp)
    else:
      with open(tmp, "wb") as f:
        np.savez(f, **flat)
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.remove(tmp)
    raise


def load_variables(path: str | os.PathLike) -> dict[str, Any]:
  """Reads a file written by `save_variables` into a nested dict of numpy arrays.

  Args:
    path: .npz or .safetensors file.

  Returns:
    Nested dict, e.g. {"params": {...}, "batch_stats": {...}}.

  Raises:
    FileNotFoundError: the file does not exist (the message names the converter).
  """
  path = os.fspath(path)
  if not os.path.isfile(path):
    raise FileNotFoundError(
        f"weight file not found: {path!r}; " + CONVERTER_HINT.format(path=path))
  if path.endswith(".safetensors"):
    from safetensors.numpy import load_file  # pylint: disable=g-import-not-at-top
    flat = load_file(path)
  else:
    with np.load(path, allow_pickle=False) as data:
      flat = {key: np.asarray(data[key]) for key in data.files}
  return unflatten_variables(flat)


def validate_variables(variables: Mapping[str, Any], reference: Mapping[str, Any], *,
                       source: str = "variables") -> None:
  """Checks that `variables` has exactly the keys and shapes of `reference`.

  Args:
    variables: nested dict of arrays (e.g. from `load_variables`).
    reference: nested dict of arrays or `jax.ShapeDtypeStruct`s, e.g.
      `jax.eval_shape(model.init, ...)`.
    source: what `variables` came from (a file name), for the message.

  Raises:
    WeightsMismatchError: naming every missing, unexpected and mis-shaped key.
  """
  got = {k: tuple(np.shape(v)) for k, v in flatten_variables(variables).items()}
  want = {k: tuple(v.shape) for k, v in flatten_variables(reference).items()}
  missing = sorted(set(want) - set(got))
  unexpected = sorted(set(got) - set(want))
  misshaped = sorted(f"{k}: {got[k]} != expected {want[k]}"
                     for k in set(got) & set(want) if got[k] != want[k])
  if missing or unexpected or misshaped:
    lines = [f"{source} does not match the network:"]
    for title, items in (("missing", missing), ("unexpected", unexpected),
                         ("wrong shape", misshaped)):
      if items:
        lines.append(f"  {title} ({len(items)}): " + ", ".join(items))
    raise WeightsMismatchError("\n".join(lines))


def load_and_validate(path: str | os.PathLike, model: Any, *example_args: Any,
                      **example_kwargs: Any) -> dict[str, Any]:
  """Loads a weight file and validates it against `model.init(*example_args)`.

  Args:
    path: .npz or .safetensors file.
    model: a Linen module.
    *example_args: example inputs for `model.init` (arrays or
      `jax.ShapeDtypeStruct`s; only shapes matter).
    **example_kwargs: keyword inputs (e.g. train=False).

  Returns:
    The variables as a nested dict of jax arrays.

  Raises:
    FileNotFoundError: missing file.
    WeightsMismatchError: keys or shapes differ.
  """
  variables = load_variables(path)
  reference = jax.eval_shape(
      lambda *args: model.init(jax.random.PRNGKey(0), *args, **example_kwargs),
      *example_args)
  validate_variables(variables, reference, source=f"weight file {os.fspath(path)!r}")
  return jax.tree_util.tree_map(jax.numpy.asarray, variables)


# Kernel initialisations of `random_variables_like`.
RANDOM_INITS = ("torch", "he_normal", "lecun_normal")


def _random_leaf(rng: np.random.Generator, name: str, shape: tuple[int, ...],
                 init: str) -> np.ndarray:
  """One random variable named `name` (float64; see `random_variables_like`)."""
  if name in ("scale", "var"):
    return np.ones(shape)
  if name == "mean":
    return np.zeros(shape)
  if name == "kernel":
    fan_in = max(int(np.prod(shape[:-1])), 1)
    if init == "torch":
      bound = 1.0 / np.sqrt(fan_in)
      return rng.uniform(-bound, bound, shape)
    if init == "he_normal":
      return rng.normal(0.0, np.sqrt(2.0 / fan_in), shape)
    return rng.standard_normal(shape) / np.sqrt(fan_in)
  if init != "torch":
    return np.zeros(shape)
  if name == "bias":
    return rng.uniform(-0.1, 0.1, shape)
  return rng.normal(0.0, 0.02, shape)


def random_variables_like(expected: Mapping[str, Any], *,
                          seed: int | np.random.Generator = 0,
                          init: str = "torch") -> dict[str, Any]:
  """Random variables with the keys and shapes of `expected`, drawn by numpy.

  The one source of random weights for tests and benchmarks: cheaper than
  `model.init` (nothing is compiled), and the callers say that the weights
  are random. Values are drawn in sorted key order. BatchNorm scales and
  running variances are 1, running means 0; kernels (fan_in: the product of
  all but the last axis) depend on `init`:

  * "torch": U(-1/sqrt(fan_in), 1/sqrt(fan_in)) (PyTorch's default), biases
    U(-0.1, 0.1), any other variable N(0, 0.02);
  * "he_normal": N(0, 2 / fan_in), every other variable 0;
  * "lecun_normal": N(0, 1 / fan_in), every other variable 0.

  Args:
    expected: nested dict of arrays or `jax.ShapeDtypeStruct`s, e.g. from
      `jax.eval_shape(model.init, ...)`.
    seed: numpy seed, or a Generator to draw from (several trees in turn).
    init: one of `RANDOM_INITS`.

  Returns:
    Nested dict of float32 numpy arrays.
  """
  if init not in RANDOM_INITS:
    raise ValueError(f"init must be one of {RANDOM_INITS}, got {init!r}")
  rng = np.random.default_rng(seed)
  flat = {}
  for key, leaf in flatten_variables(expected).items():
    name = key.rsplit(SEPARATOR, 1)[-1]
    flat[key] = _random_leaf(rng, name, tuple(leaf.shape), init).astype(
        np.float32)
  return unflatten_variables(flat)


def random_variables(model: Any, *example_args: Any, seed: int = 0,
                     init: str = "torch", **example_kwargs: Any
                     ) -> dict[str, Any]:
  """Random variables of `model` (see `random_variables_like`), as jax arrays.

  Args:
    model: a Linen module.
    *example_args: example inputs of `model.init` (only shapes matter).
    seed: numpy seed.
    init: the kernel initialisation, one of `RANDOM_INITS`.
    **example_kwargs: keyword inputs (e.g. train=False).

  Returns:
    Nested dict of float32 jax arrays with the structure of `model.init`.
  """
  reference = jax.eval_shape(
      lambda *args: model.init(jax.random.PRNGKey(0), *args, **example_kwargs),
      *example_args)
  variables = random_variables_like(reference, seed=seed, init=init)
  return jax.tree_util.tree_map(jax.numpy.asarray, variables)
