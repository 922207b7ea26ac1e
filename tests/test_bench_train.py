"""`python -m ihc_jax.bench train --profile`: where a real train step's time
goes, by scope and by op. Random frozen networks made by the bench."""

import re

import jax
import numpy as np

from ihc_jax.bench import train as bench_train
from ihc_jax.trainers import mesh as mesh_lib
from ihc_jax.trainers import train_state as train_state_lib


def test_bench_train_profile_prints_scopes_and_ops(capsys):
  # The hist stage's real step (random frozen networks made by the bench),
  # one traced step: the scope table holds the optimizer's update and the
  # trained network, shares of the traced sum; at most --top op rows.
  bench_train.main(["--stage", "hist", "--steps", "1", "--batch", "2",
                    "--profile", "1", "--top", "4"])
  out = capsys.readouterr().out
  header = re.search(r"ops traced ([\d.]+) ms per step \(wall ([\d.]+) ms\), (\d+) ops", out)
  assert header and int(header.group(3)) > 0, out
  scopes = re.findall(r"^\s+[\d.]+\s+([\d.]+)%\s+(\S+) \((forward|backward)\)$", out, re.M)
  names = {name for _, name, _ in scopes}
  assert "update" in names, out
  assert any(name not in ("update", "(unscoped)") for name in names), out
  ops = [line for line in out.splitlines()
         if re.match(r"\s+[\d.]+\s+[\d.]+%\s+\S+\s+\S+\[", line)]
  assert 1 <= len(ops) <= 4, out


def test_color_step_names_its_loss_scopes():
  # The colour step's ops carry the named scopes its profile groups them by
  # (lowered only: the names are in the StableHLO's locations).
  config, stage = bench_train.random_frozen_stage("color")
  mesh = mesh_lib.make_mesh()
  state = mesh_lib.replicate(train_state_lib.init_state(
      stage.init_variables(jax.random.PRNGKey(0)), stage.optimizers), mesh)
  b, s = config.data.batch_size, config.data.image_size
  batch = {k: np.full((b, s, s, 3), 0.5, np.float32) for k in ("image", "reference")}
  text = jax.jit(stage.train_step).lower(
      state, batch, stage.frozen, jax.random.PRNGKey(0)).as_text(debug_info=True)
  for scope in ("prepare", "vgg_terms", "latent", "adversarial", "self_similarity",
                "histogram", "discriminator_loss", "update"):
    assert re.search(rf'"[^"]*\b{scope}[)/][^"]*"', text), scope
