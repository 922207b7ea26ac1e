"""`python -m ihc_jax.bench compile` on the hist stage at demo size (tiny
networks, random weights made here): both initialisations and both forms of
the guarded update compile, agree, and the printed line reads back."""

import jax
import jax.numpy as jnp
import optax
import pytest

from ihc_jax.bench import compile as compile_bench
from ihc_jax.trainers import common
from ihc_jax.trainers import linen_utils
from ihc_jax.trainers import train_state


def test_cpu_update_is_one_conditional_unless_told_otherwise():
  tx = {"net": optax.adam(0.1)}
  state = common.init_state({"net": {"params": {"w": jnp.ones(2),
                                                "v": jnp.ones(3)}}}, tx)
  grads = {"net": {"w": jnp.ones(2), "v": jnp.ones(3)}}

  def compiled_text():
    # A fresh function each time: jit caches traces by function object.
    def update(s, g):
      return common.guarded_update(s, tx, g, {}, [jnp.float32(1.0)])
    return jax.jit(update).lower(state, grads).compile().as_text()

  default = compiled_text()
  with train_state.per_leaf_select():
    select = compiled_text()
  assert " conditional(" in default
  assert " conditional(" not in select


def test_main_prints_both_forms_of_each_choice(capsys):
  options = dict(linen_utils.INIT_COMPILER_OPTIONS)
  compile_bench.main(["--stage", "hist", "--repeats", "1"])
  assert linen_utils.INIT_COMPILER_OPTIONS == options  # restored
  line = capsys.readouterr().out.strip().splitlines()[-1]
  assert line.startswith("hist    demo")
  for field in ("init", "XLA defaults", "compile conditional", "select",
                "step conditional", "metrics differ by"):
    assert field in line, line
  assert float(line.split("parameters differ by ")[1].split(")")[0]) < 1e-6
  # Both forms really compiled (a cached trace would report ~0 s).
  assert float(line.split(" select ")[1].split(" s;")[0]) > 0.05
  assert float(line.split("metrics differ by ")[1]) < 1e-5


def test_main_rejects_an_unknown_stage():
  with pytest.raises(SystemExit):
    compile_bench.main(["--stage", "nope"])
