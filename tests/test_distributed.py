"""`ihc_jax.distributed`: process counting and argument checks.

Nothing is initialised for real: `jax.distributed.initialize` and the config
update that selects gloo are replaced by recorders, and the environment is
set per test. The real multi-process start is in tests/test_multiprocess.py.
"""

import pytest

from ihc_jax import distributed

_ENV = ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID",
        "SLURM_NTASKS", "TPU_WORKER_HOSTNAMES")


@pytest.fixture
def calls(monkeypatch):
  """Clean environment; records initialize() and config.update() calls."""
  for name in _ENV:
    monkeypatch.delenv(name, raising=False)
  recorded = {"initialize": [], "config": []}
  monkeypatch.setattr(distributed.jax.distributed, "initialize",
                      lambda *args: recorded["initialize"].append(args))
  monkeypatch.setattr(distributed.jax.config, "update",
                      lambda *args: recorded["config"].append(args))
  return recorded


def test_process_count_sources_in_order(calls, monkeypatch):
  del calls
  assert distributed.configured_process_count() == 1
  monkeypatch.setenv("TPU_WORKER_HOSTNAMES", "w0, w1,,w2")
  assert distributed.configured_process_count() == 3
  monkeypatch.setenv("SLURM_NTASKS", "4")
  assert distributed.configured_process_count() == 4
  monkeypatch.setenv("JAX_NUM_PROCESSES", "2")
  assert distributed.configured_process_count() == 2
  assert distributed.configured_process_count(5) == 5  # the flag wins
  monkeypatch.setenv("JAX_NUM_PROCESSES", "")  # empty counts as unset
  assert distributed.configured_process_count() == 4


def test_non_integer_environment_names_the_variable(calls, monkeypatch):
  del calls
  monkeypatch.setenv("SLURM_NTASKS", "two")
  with pytest.raises(ValueError, match=r"SLURM_NTASKS='two' is not an integer"):
    distributed.configured_process_count()


def test_single_process_initialises_nothing(calls):
  assert distributed.initialize() is False
  assert distributed.initialize(None, 1, 0) is False
  assert calls == {"initialize": [], "config": []}


def test_explicit_arguments_start_with_gloo(calls):
  assert distributed.initialize("10.0.0.1:1234", 2, 1) is True
  assert calls["initialize"] == [("10.0.0.1:1234", 2, 1)]
  assert calls["config"] == [("jax_cpu_collectives_implementation", "gloo")]


def test_environment_fills_missing_arguments(calls, monkeypatch):
  monkeypatch.setenv("JAX_COORDINATOR_ADDRESS", "127.0.0.1:999")
  monkeypatch.setenv("JAX_NUM_PROCESSES", "3")
  monkeypatch.setenv("JAX_PROCESS_ID", "2")
  assert distributed.initialize() is True
  assert calls["initialize"] == [("127.0.0.1:999", 3, 2)]


@pytest.mark.parametrize("address, count, process_id, message", [
    (None, 2, 0, r"2 processes are configured but the coordinator address "
     r"\(--coordinator_address or JAX_COORDINATOR_ADDRESS\) is not set"),
    ("h:1", 2, None, r"process id \(--process_id or JAX_PROCESS_ID\) is not "
     "set"),
    (None, 2, None, r"coordinator address .* and the process id"),
    ("h:1", 2, 2, r"Process id 2 is outside \[0, 2\)"),
    ("h:1", 4, -1, r"Process id -1 is outside \[0, 4\)"),
])
def test_partial_configuration_is_rejected(calls, address, count, process_id,
                                           message):
  with pytest.raises(ValueError, match=message):
    distributed.initialize(address, count, process_id)
  assert calls["initialize"] == []


def test_partial_environment_is_rejected(calls, monkeypatch):
  monkeypatch.setenv("JAX_NUM_PROCESSES", "2")
  monkeypatch.setenv("JAX_PROCESS_ID", "0")
  with pytest.raises(ValueError, match="coordinator address"):
    distributed.initialize()
  assert calls["initialize"] == []


def test_clusters_are_detected_by_jax(calls, monkeypatch):
  monkeypatch.setenv("SLURM_NTASKS", "8")
  assert distributed.initialize() is True
  assert calls["initialize"] == [()]  # no arguments: JAX reads SLURM itself
  monkeypatch.delenv("SLURM_NTASKS")
  monkeypatch.setenv("TPU_WORKER_HOSTNAMES", "a,b")
  assert distributed.initialize() is True
  assert calls["initialize"] == [(), ()]
