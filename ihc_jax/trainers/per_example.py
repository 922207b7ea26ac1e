"""Evaluation and sampling keyed by example, not by batch position.

A held-out figure must not depend on how the held-out set was batched or
spread over processes. `per_example(step)` runs a stage's eval or sample
step on every example alone (`jax.vmap` over batches of one), each with its
own key `fold_in(rng, id)`, where `id` is the example's place in the whole
held-out split (`batch["id"]`, which `input_pipeline.create_datasets` gives
every eval element). Its halftone screen, noise map and random codes are
then the same at any eval batch size and on any number of processes.

Every network runs in inference mode here (running batch statistics, no
dropout), so an example alone gives what it gives inside a batch; the vmap
folds the examples back into one batch for XLA.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import jax
import numpy as np

ID = "id"


def with_ids(batch: Mapping[str, Any], start: int, process_index: int = 0,
             process_count: int = 1) -> dict[str, Any]:
  """`batch` with `id` added if it has none.

  The ids follow `input_pipeline`'s strided host shards
  (`data.datasets.example_id`, the numbering its eval elements carry).

  Args:
    batch: a host batch (dict of arrays, first axis the batch).
    start: the host-local index of the batch's first element.
    process_index: this process.
    process_count: number of processes.

  Returns:
    A new dict; `batch` itself is not changed.
  """
  from ihc_jax.data import datasets  # pylint: disable=g-import-not-at-top
  batch = dict(batch)
  if ID not in batch:
    size = len(next(iter(batch.values())))
    local = np.arange(start, start + size)
    batch[ID] = datasets.example_id(local, process_index,
                                    process_count).astype(np.int32)
  return batch


def example_keys(rng: jax.Array, ids: jax.Array) -> jax.Array:
  """[B] keys: `fold_in(rng, id)` for each id."""
  return jax.vmap(jax.random.fold_in, in_axes=(None, 0))(rng, ids)


def per_example(step: Callable[..., Any]) -> Callable[..., Any]:
  """`step(state, batch, frozen, rng)` run on each example of `batch` alone.

  Args:
    step: an eval step (returns {name: [B]}) or a sample step (returns a
      list of [B, ...] images) whose randomness comes from `rng`.

  Returns:
    A step with the same signature and output shapes; example i gets the key
    `fold_in(rng, batch["id"][i])` and sees only its own row of every array
    of `batch`.
  """
  def wrapped(state: Any, batch: Mapping[str, jax.Array], frozen: Any,
              rng: jax.Array) -> Any:
    if ID not in batch:
      raise KeyError("per_example needs batch['id'], each example's index in "
                     "the held-out split (see per_example.with_ids)")

    def one(example: Mapping[str, jax.Array], key: jax.Array) -> Any:
      single = jax.tree.map(lambda v: v[None], dict(example))
      out = step(state, single, frozen, key)
      for path, value in jax.tree_util.tree_leaves_with_path(out):
        if jax.numpy.ndim(value) == 0 or jax.numpy.shape(value)[0] != 1:
          raise ValueError(
              f"{jax.tree_util.keystr(path)} has shape "
              f"{jax.numpy.shape(value)} for a batch of one: a step run "
              "per-example must return arrays whose first axis is the batch "
              "(e.g. metrics.psnr(..., reduction='none'))")
      return jax.tree.map(lambda v: v[0], out)

    return jax.vmap(one)(dict(batch), example_keys(rng, batch[ID]))

  return wrapped
