"""Shared fixtures: one tiny trained chain for every test that needs a checkpoint.

Training the four stages of configs/test.py:chain (2 steps each, 32x32, tiny
networks, RANDOM VGG features on purpose) takes minutes of XLA compilation on
a 2-core CPU, so it runs once per test session and worker. Tests that use it
are in the xdist group "chain" (`pytest -n 2 --dist loadgroup` keeps them on
one worker, so the chain is trained once).
"""

import importlib.util
import os

import jax
import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def load_test_config(arg: str):
  """`configs/test.py:get_config(arg)`, loaded by path (configs/ is no package)."""
  path = os.path.join(REPO, "configs", "test.py")
  spec = importlib.util.spec_from_file_location("configs_test", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(arg)


@pytest.fixture(scope="session")
def chain_run(tmp_path_factory):
  """Trains the four test stages once; yields (workdir, results).

  A persistent compilation cache lets later tests that build the same steps
  reuse the compiled code.
  """
  from ihc_jax.trainers import chain  # pylint: disable=g-import-not-at-top
  cache = str(tmp_path_factory.mktemp("xla_cache"))
  previous = (jax.config.jax_compilation_cache_dir,
              jax.config.jax_persistent_cache_min_compile_time_secs)
  jax.config.update("jax_compilation_cache_dir", cache)
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
  workdir = str(tmp_path_factory.mktemp("chain"))
  try:
    results = chain.train_and_evaluate(load_test_config("chain"), workdir)
    yield workdir, results
  finally:
    jax.config.update("jax_compilation_cache_dir", previous[0])
    jax.config.update("jax_persistent_cache_min_compile_time_secs",
                      previous[1])
