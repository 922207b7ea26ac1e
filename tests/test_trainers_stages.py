"""End-to-end and one-step tests of the four real stages (tiny, 32x32).

One chained run of configs/test.py:chain (2 steps per stage, random VGG
features on purpose; the `chain_run` fixture of conftest.py) is shared by
every test; its persistent compilation cache lets later tests reuse its
compiled steps.
"""

import importlib
import json
import os

import jax
import numpy as np
import pytest

from ihc_jax import input_pipeline
from ihc_jax.trainers import chain
from ihc_jax.trainers import checkpoints as checkpoints_lib
from ihc_jax.trainers import mesh as mesh_lib
from ihc_jax.trainers import train_state as train_state_lib
from ihc_jax.trainers import hist
from conftest import load_test_config

pytestmark = pytest.mark.xdist_group("chain")

STAGES = ("ihn", "hist", "color", "fusion")
TRAINED = {"ihn": ["ihn"], "hist": ["histogram"],
           "color": ["discriminator", "encoder", "generator"],
           "fusion": ["fusion"]}
FROZEN = {"ihn": [], "hist": [], "color": ["histogram", "ihn"],
          "fusion": ["encoder", "generator", "ihn"]}


def stage_config(stage, workdir):
  """The chain's config of `stage`, frozen paths filled in."""
  for name, config, _ in chain.stage_configs(load_test_config("chain"), workdir):
    if name == stage:
      return config
  raise KeyError(stage)


@pytest.mark.parametrize("stage", STAGES)
def test_stage_ran_end_to_end(chain_run, stage):
  workdir, results = chain_run
  stage_dir = os.path.join(workdir, stage)
  step, saved_stage, networks = checkpoints_lib.checkpoint_networks(stage_dir)
  assert (step, saved_stage, networks) == (2, stage, TRAINED[stage])
  assert any(f.startswith("events.out.tfevents") for f in os.listdir(stage_dir))
  with open(os.path.join(stage_dir, "metrics_summary.json")) as f:
    summary = json.load(f)["metrics"]
  assert summary and all(np.isfinite(v) for v in summary.values())
  if stage != "hist":
    grid = os.path.join(stage_dir, "samples", "step_0000002.png")
    assert os.path.getsize(grid) > 0
  saved = checkpoints_lib.load_stage_config(stage_dir)
  assert saved.trainer == stage and saved.data.image_size == 32
  # The held-out curve: one line for the final evaluation, the summary's.
  with open(os.path.join(stage_dir, "eval_history.jsonl")) as f:
    history = [json.loads(line) for line in f]
  assert [h["step"] for h in history] == [2]
  assert history[-1]["metrics"] == pytest.approx(summary)


def test_chain_summary_and_metrics(chain_run):
  workdir, results = chain_run
  with open(os.path.join(workdir, "metrics_summary.json")) as f:
    summary = json.load(f)
  assert sorted(summary) == sorted(STAGES)
  assert {"eval/ihn_psnr", "eval/blur_baseline_psnr"} <= set(results["ihn"])
  assert {"eval/recovery_psnr", "eval/recovery_ssim", "eval/random_washed",
          "eval/self_transfer_psnr"} <= set(results["color"])
  assert 0.0 <= results["color"]["eval/random_washed"] <= 1.0
  assert {"eval/fusion_psnr", "eval/c_to_ihn_psnr"} <= set(results["fusion"])
  # The blur baseline at 32 px with a 3 px screen is well above noise level.
  assert results["ihn"]["eval/blur_baseline_psnr"] > 12.0


def test_chaining_restores_the_right_networks(chain_run):
  workdir, _ = chain_run
  color_config = checkpoints_lib.load_stage_config(os.path.join(workdir, "color"))
  assert color_config.frozen.ihn == os.path.join(workdir, "ihn")
  assert color_config.frozen.histogram == os.path.join(workdir, "hist")
  fusion_config = checkpoints_lib.load_stage_config(os.path.join(workdir, "fusion"))
  assert fusion_config.frozen.generator == os.path.join(workdir, "color")
  loaded = checkpoints_lib.load_frozen_networks(fusion_config.frozen,
                                       ["ihn", "generator"])
  # Architecture of a frozen net comes from the config it was trained with.
  ihn_config = checkpoints_lib.load_stage_config(os.path.join(workdir, "ihn"))
  assert loaded["ihn"][0].to_dict() == ihn_config.model.ihn.to_dict()
  assert_trees_equal(loaded["ihn"][1], checkpoints_lib.restore_network_variables(
      os.path.join(workdir, "ihn"), "ihn"))
  with pytest.raises(KeyError, match=r"stage 'hist'.*has no network 'ihn'"):
    checkpoints_lib.restore_network_variables(os.path.join(workdir, "hist"), "ihn")


@pytest.mark.parametrize("stage", STAGES)
def test_one_step_is_finite_trains_and_keeps_frozen(chain_run, stage):
  workdir, _ = chain_run
  config = stage_config(stage, workdir)
  module = importlib.import_module(f"ihc_jax.trainers.{stage}")
  trainer = module.make_stage(config)
  # Frozen networks are exactly the earlier stages' checkpoints, outside the
  # optimizer's state.
  assert sorted(k for k in trainer.frozen if k != "vgg19") == FROZEN[stage]
  for name in FROZEN[stage]:
    source = os.path.join(workdir, chain.TRAINED_BY[name])
    expected = checkpoints_lib.restore_network_variables(source, name)
    assert_trees_equal(trainer.frozen[name], expected)
  mesh = mesh_lib.make_mesh()
  state = mesh_lib.replicate(train_state_lib.init_state(
      trainer.init_variables(jax.random.PRNGKey(0)), trainer.optimizers), mesh)
  assert sorted(state.variables) == TRAINED[stage]
  before = jax.device_get(state.variables)
  frozen_before = jax.device_get(trainer.frozen)
  train_ds, _ = input_pipeline.create_datasets(config.data, seed=0)
  batch = input_pipeline.shard_batch(next(train_ds.as_numpy_iterator()), mesh)
  frozen = mesh_lib.replicate(trainer.frozen, mesh)
  step = jax.jit(trainer.train_step, donate_argnums=(0,))
  state, metrics = step(state, batch, frozen, jax.random.PRNGKey(1))
  metrics = jax.device_get(metrics)
  assert all(np.isfinite(v) for v in metrics.values()), metrics
  assert metrics["nonfinite"] == 0.0 and int(state.step) == 1
  after = jax.device_get(state.variables)
  for name in TRAINED[stage]:
    assert any(not np.array_equal(a, b) for a, b in zip(
        jax.tree.leaves(after[name]["params"]),
        jax.tree.leaves(before[name]["params"]))), name
  # Frozen networks are never in the optimizer's tree or the trained state.
  assert sorted(state.opt_states) == TRAINED[stage]
  assert not set(FROZEN[stage]) & set(state.variables)
  del frozen_before


@pytest.mark.parametrize("stage", ["color", "fusion"])
def test_frozen_ihn_settings_must_match(chain_run, stage):
  workdir, _ = chain_run
  module = importlib.import_module(f"ihc_jax.trainers.{stage}")
  config = stage_config(stage, workdir)
  config.halftone.period_range = (4.0, 4.0)
  config.noise_variant = "clean"
  with pytest.raises(ValueError) as err:
    module.make_stage(config)
  message = str(err.value)
  assert "halftone.period_range: this stage (4.0, 4.0), frozen (3.0, 3.0)" in (
      message)
  assert "noise_variant: this stage 'clean', frozen 'official'" in message


def test_latent_term_updates_g_only(chain_run):
  """BicycleGAN: the latent regression trains G, never E."""
  from ihc_jax.trainers import color  # pylint: disable=g-import-not-at-top
  workdir, _ = chain_run
  config = stage_config("color", workdir)
  # G's random start: from the gray start, z has no effect on G's output
  # until the first update, so no term can reach E yet and the control
  # below (the recovery L1 does train E) would have nothing to show.
  config.generator_init = "random"
  trainer = color.make_stage(config)
  nets = trainer.train_step.keywords["nets"]
  variables = trainer.init_variables(jax.random.PRNGKey(0))
  train_ds, _ = input_pipeline.create_datasets(config.data, seed=0)
  batch = next(train_ds.as_numpy_iterator())
  data = color.prepare(batch, trainer.frozen, jax.random.PRNGKey(1),
                       nets=nets, config=config)
  params = {n: variables[n]["params"] for n in ("encoder", "generator")}
  only = {name: 0.0 for name in color.TERMS}

  # One compiled gradient for every term: the weights are traced arguments.
  weighted_grads = jax.jit(jax.grad(lambda p, weights: color.generator_losses(
      p, variables, data, trainer.frozen, jax.random.PRNGKey(2), weights,
      nets=nets, config=config)[0]))

  def grads(term):
    return weighted_grads(params, dict(only, **{term: 1.0}))

  def norm(tree):
    return float(sum(np.abs(np.asarray(x)).sum() for x in jax.tree.leaves(tree)))

  latent = grads("latent")
  assert norm(latent["encoder"]) == 0.0
  assert norm(latent["generator"]) > 0.0
  # The reconstruction terms do train E (through the codes).
  assert norm(grads("recovery_l1")["encoder"]) > 0.0


def test_hist_stage_overfits_a_fixed_batch(chain_run):
  workdir, _ = chain_run
  config = stage_config("hist", workdir)
  config.optim.histogram.learning_rate = 3e-3
  trainer = hist.make_stage(config)
  state = train_state_lib.init_state(trainer.init_variables(jax.random.PRNGKey(0)),
                            trainer.optimizers)
  train_ds, _ = input_pipeline.create_datasets(config.data, seed=0)
  batch = jax.device_put(next(train_ds.as_numpy_iterator()))
  from ihc_jax import losses  # pylint: disable=g-import-not-at-top
  target = losses.hard_histogram(batch["image"],
                                 bins=config.model.histogram.bins)
  # BCE is bounded below by the entropy of the target: compare the excess.
  floor = float(losses.binary_cross_entropy(target, target))
  step = jax.jit(trainer.train_step)
  excess = []
  for i in range(60):
    state, metrics = step(state, batch, {}, jax.random.PRNGKey(i))
    excess.append(float(metrics["loss"]) - floor)
  assert excess[-1] < excess[0] / 5.0, (excess[0], excess[-1])


def test_same_config_and_seed_give_identical_runs(chain_run, tmp_path):
  workdir, results = chain_run
  again = str(tmp_path / "hist")
  metrics = hist.train_and_evaluate(stage_config("hist", workdir), again)
  assert metrics == results["hist"]
  assert_trees_equal(
      checkpoints_lib.restore_network_variables(again, "histogram"),
      checkpoints_lib.restore_network_variables(os.path.join(workdir, "hist"),
                                       "histogram"))


def assert_trees_equal(a, b):
  a, b = jax.device_get(a), jax.device_get(b)
  assert jax.tree.structure(a) == jax.tree.structure(b)
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_heldout_grid_of_the_chain(chain_run, tmp_path):
  """The held-out pictures tool on the tiny chain (demo's eval photos)."""
  from PIL import Image  # pylint: disable=g-import-not-at-top
  from ihc_jax.tools import heldout_grid  # pylint: disable=g-import-not-at-top
  workdir, _ = chain_run
  output = str(tmp_path / "grid.png")
  heldout_grid.main([f"--workdir={workdir}", f"--output={output}",
                     "--size=32", "--source=demo"])
  with Image.open(output) as image:
    # One 32 px row per held-out demo photo, one column per title.
    assert image.size == (32 * len(heldout_grid.TITLES), 32 * 3)
    grid = np.asarray(image, np.float32) / 255.0
  # The last column is the ground truth itself, the first a halftone.
  truth = heldout_grid.heldout_photos("demo", 32)
  np.testing.assert_allclose(grid[:32, -32:], truth[0][1], atol=1 / 255)
  assert np.mean((grid[:, :32] > 0.2) & (grid[:, :32] < 0.8)) < 0.5
