"""The device mesh of the trainers: one `('data',)` axis over all devices.

The batch is split along it; state and frozen networks are replicated.
Steps are plain `jax.jit` with no `axis_name`, so the same code runs on one
CPU, one GPU or a TPU pod.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
from jax.sharding import Mesh, NamedSharding, PartitionSpec
import numpy as np


def make_mesh(devices: Sequence[jax.Device] | None = None) -> Mesh:
  """A one-axis `('data',)` mesh over all (or the given) devices."""
  devices = jax.devices() if devices is None else list(devices)
  return Mesh(np.asarray(devices), ("data",))


def replicated(mesh: Mesh) -> NamedSharding:
  """Sharding that keeps a full copy on every device of `mesh`."""
  return NamedSharding(mesh, PartitionSpec())


def replicate(tree: Any, mesh: Mesh) -> Any:
  """Places every array of `tree` fully replicated on `mesh`."""
  # Through the host: arrays committed to one local device (as restored from
  # a checkpoint) cannot be put on other processes' devices directly.
  return jax.device_put(jax.device_get(tree), replicated(mesh))
