"""Tests of the shared training machinery with a toy stage (cheap to compile).

The toy stage is a 3x3 conv + BatchNorm predicting the gray of the demo crops
through the real loop (`loop_lib.run_stage`): resume, checkpoints, SIGTERM,
non-finite guard, determinism, and sharded steps on fake CPU devices.
"""

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from ihc_jax import colorspace
from ihc_jax.trainers import checkpoints as checkpoints_lib
from ihc_jax.trainers import grids as grids_lib
from ihc_jax.trainers import loop as loop_lib
from ihc_jax.trainers import train_state as train_state_lib
from ihc_jax.trainers import defaults
from ihc_jax.trainers import hist
from ihc_jax.trainers import train_state

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class ToyNet(nn.Module):
  """RGB -> gray, with BatchNorm so batch statistics are part of the state."""

  @nn.compact
  def __call__(self, x, *, train):
    x = nn.Conv(2, (3, 3))(x)
    x = nn.BatchNorm(use_running_average=not train, momentum=0.9)(x)
    return nn.Conv(1, (1, 1))(nn.relu(x))


def toy_config(num_train_steps=4, **overrides):
  """The hist stage's sections (data, log, ...) at 32 px, with the toy stage."""
  config = hist.default_config()
  defaults.shrink(config, image_size=32, batch_size=2,
                  num_train_steps=num_train_steps)
  config.data.num_parallel_calls = 1
  config.data.shuffle_buffer = 8
  config.checkpoint.every_steps = 1
  config.log.every_steps = 1
  for key, value in overrides.items():
    config[key] = value
  return config


def toy_stage(learning_rate=1e-2, nan_from_step=None, optimizer=optax.adam):
  """A Stage whose loss becomes NaN from `nan_from_step` on (if given)."""
  net = ToyNet()
  optimizers = {"toy": optimizer(learning_rate)}

  def init_variables(key):
    return dict(net.init(key, jnp.zeros((1, 32, 32, 3)), train=False))

  def train_step(state, batch, frozen, rng):
    del frozen, rng
    target = colorspace.rgb_to_gray(batch["image"])
    variables = state.variables["toy"]

    def loss_fn(params):
      out, updates = net.apply(dict(variables, params=params), batch["image"],
                               train=True, mutable=["batch_stats"])
      loss = jnp.mean(jnp.square(out - target))
      if nan_from_step is not None:
        loss = loss * jnp.where(state.step >= nan_from_step, jnp.nan, 1.0)
      return loss, updates["batch_stats"]

    (loss, stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(
        variables["params"])
    state, guard = train_state_lib.guarded_update(state, optimizers, {"toy": grads},
                                         {"toy": stats}, [loss])
    return state, dict(loss=loss, **guard)

  def eval_step(state, batch, frozen, rng):
    del frozen, rng
    out = net.apply(state.variables["toy"], batch["image"], train=False)
    # Per-example [B] values: the contract of trainers.loop.evaluate.
    gray = colorspace.rgb_to_gray(batch["image"])
    return {"mse": jnp.mean(jnp.square(out - gray), axis=(1, 2, 3))}

  def sample_step(state, batch, frozen, rng):
    del frozen, rng
    return [batch["image"], net.apply(state.variables["toy"], batch["image"],
                                      train=False)]

  return loop_lib.Stage(
      name="toy", init_variables=lambda key: {"toy": init_variables(key)},
      optimizers=optimizers, train_step=train_step, frozen={},
      eval_step=eval_step, sample_step=sample_step,
      sample_titles=("image", "gray"))


def params_of(workdir, network="toy"):
  return jax.device_get(checkpoints_lib.restore_network_variables(workdir, network))


def assert_trees_equal(a, b):
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


@pytest.fixture(scope="module")
def toy_run(tmp_path_factory):
  """A 4-step toy run (shared by the artifact and determinism tests)."""
  workdir = str(tmp_path_factory.mktemp("toy4"))
  metrics = loop_lib.run_stage(toy_config(4), workdir, toy_stage())
  return workdir, metrics


def test_guarded_update_applies_finite_and_skips_nonfinite():
  tx = {"net": optax.sgd(0.5)}
  state = train_state_lib.init_state({"net": {"params": {"w": jnp.ones(2)}}}, tx)
  good, guard = train_state_lib.guarded_update(state, tx, {"net": {"w": jnp.ones(2)}},
                                      {}, [jnp.float32(1.0)])
  # SGD: 1 - 0.5 * 1 = 0.5.
  np.testing.assert_allclose(good.variables["net"]["params"]["w"], [0.5, 0.5])
  assert float(guard["nonfinite"]) == 0.0 and int(good.nonfinite_streak) == 0
  bad, guard = train_state_lib.guarded_update(
      good, tx, {"net": {"w": jnp.array([1.0, jnp.inf])}}, {},
      [jnp.float32(1.0)])
  np.testing.assert_array_equal(bad.variables["net"]["params"]["w"], [0.5, 0.5])
  assert float(guard["nonfinite"]) == 1.0
  assert int(bad.nonfinite_streak) == 1 and int(bad.step) == 2
  worse, _ = train_state_lib.guarded_update(bad, tx, {"net": {"w": jnp.ones(2)}}, {},
                                   [jnp.float32(jnp.nan)])
  assert int(worse.nonfinite_streak) == 2
  np.testing.assert_array_equal(worse.variables["net"]["params"]["w"], [0.5, 0.5])


def test_guarded_update_keeps_every_leaf_in_both_forms():
  """The CPU conditional and the per-leaf select keep the same values."""
  from ihc_jax.trainers import train_state  # pylint: disable=g-import-not-at-top
  new = {"w": jnp.arange(3.0), "bn": {"mean": jnp.ones((2, 2))},
         "count": jnp.int32(5)}
  old = jax.tree.map(jnp.zeros_like, new)
  for ok in (True, False):
    by_cond = jax.jit(train_state._keep_by_cond)(jnp.bool_(ok), new, old)
    by_select = jax.jit(train_state._keep_by_select)(jnp.bool_(ok), new, old)
    expected = new if ok else old
    jax.tree.map(np.testing.assert_array_equal, by_cond, expected)
    jax.tree.map(np.testing.assert_array_equal, by_select, expected)
  # Jitted as in the trainers, with Adam: a skipped step keeps the moments
  # and the batch statistics too.
  tx = {"net": optax.adam(0.1)}
  state = train_state_lib.init_state(
      {"net": {"params": {"w": jnp.ones(2)}, "batch_stats": {"m": jnp.ones(2)}}},
      tx)
  update = jax.jit(lambda s, g, bs, loss: train_state_lib.guarded_update(
      s, tx, {"net": g}, {"net": bs}, [loss]))
  good, _ = update(state, {"w": jnp.ones(2)}, {"m": jnp.full(2, 3.0)},
                   jnp.float32(1.0))
  bad, guard = update(good, {"w": jnp.ones(2)}, {"m": jnp.full(2, jnp.nan)},
                      jnp.float32(1.0))
  assert float(guard["nonfinite"]) == 1.0
  jax.tree.map(np.testing.assert_array_equal,
               (bad.variables, bad.opt_states), (good.variables, good.opt_states))
  np.testing.assert_array_equal(good.variables["net"]["batch_stats"]["m"], 3.0)


def test_init_variables_matches_the_optimised_init():
  """`linen_utils.init_variables` compiles without LLVM's optimisations on
  CPU; its parameters are those of the optimised program up to rounding."""
  from ihc_jax.trainers import linen_utils  # pylint: disable=g-import-not-at-top
  x = jnp.ones((1, 8, 8, 3))
  key = jax.random.PRNGKey(3)
  got = linen_utils.init_variables(ToyNet(), key, x, train=False)
  params_key, dropout_key = jax.random.split(key)
  want = jax.jit(lambda k, d: ToyNet().init({"params": k, "dropout": d}, x,
                                            train=False))(params_key,
                                                          dropout_key)
  assert jax.tree.structure(got) == jax.tree.structure(dict(want))
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-7),
               got, dict(want))
  assert got["params"]["Conv_0"]["kernel"].std() > 0  # random, not zeros


def test_learning_rate_schedules():
  optim = defaults.optim_config(learning_rate=2e-4, end_learning_rate=2e-6,
                                schedule="polynomial", power=0.9)
  lr = train_state_lib.make_learning_rate(optim, 100)
  # (2e-4 - 2e-6) * (1 - 50/100)^0.9 + 2e-6
  np.testing.assert_allclose(float(lr(50)), 1.98e-4 * 0.5**0.9 + 2e-6,
                             rtol=1e-5)
  np.testing.assert_allclose(float(lr(100)), 2e-6, rtol=1e-5)
  optim.schedule = "linear_decay"
  optim.decay_start = 0.5
  lr = train_state_lib.make_learning_rate(optim, 100)
  np.testing.assert_allclose([float(lr(40)), float(lr(75)), float(lr(100))],
                             [2e-4, 1.01e-4, 2e-6], rtol=1e-5)


def test_image_grid_layout_and_range():
  gray = np.full((3, 2, 2, 1), 2.0, np.float32)  # clipped to 1
  rgb = np.zeros((3, 2, 2, 3), np.float32)
  rgb[..., 0] = 0.5
  grid = grids_lib.image_grid([("a", gray), ("b", rgb)], max_rows=2)
  assert grid.shape == (4, 4, 3) and grid.dtype == np.uint8
  assert (grid[:, :2] == 255).all()
  assert (grid[:, 2:, 0] == 128).all() and (grid[:, 2:, 1:] == 0).all()


def test_run_writes_checkpoints_samples_summary(toy_run):
  workdir, metrics = toy_run
  assert sorted(os.listdir(os.path.join(workdir, "checkpoints"))) == [
      "1", "2", "3", "4"][-3:]  # max_to_keep = 3
  assert os.path.exists(os.path.join(workdir, "samples", "step_0000004.png"))
  assert any(f.startswith("events.out.tfevents") for f in os.listdir(workdir))
  with open(os.path.join(workdir, "metrics_summary.json")) as f:
    summary = json.load(f)
  assert summary["step"] == 4
  assert summary["metrics"]["eval/mse"] == pytest.approx(metrics["eval/mse"])
  assert np.isfinite(metrics["eval/mse"])
  assert checkpoints_lib.load_stage_config(workdir).data.image_size == 32


def test_restore_network_variables_errors(toy_run, tmp_path):
  workdir, _ = toy_run
  variables = params_of(workdir)
  assert set(variables) == {"params", "batch_stats"}
  with pytest.raises(KeyError, match=r"stage 'toy'.*has no network 'ihn'.*\['toy'\]"):
    checkpoints_lib.restore_network_variables(workdir, "ihn")
  with pytest.raises(FileNotFoundError, match="not a trained stage workdir"):
    checkpoints_lib.restore_network_variables(str(tmp_path), "toy")
  with pytest.raises(FileNotFoundError, match="config.json"):
    checkpoints_lib.load_stage_config(str(tmp_path))


def test_same_seed_same_result_and_exact_resume(toy_run, tmp_path):
  workdir, _ = toy_run
  straight = params_of(workdir)
  again = str(tmp_path / "again")
  loop_lib.run_stage(toy_config(4), again, toy_stage())
  assert_trees_equal(params_of(again), straight)
  resumed = str(tmp_path / "resumed")
  loop_lib.run_stage(toy_config(2), resumed, toy_stage())
  assert not np.array_equal(params_of(resumed)["params"]["Conv_0"]["kernel"],
                            straight["params"]["Conv_0"]["kernel"])
  loop_lib.run_stage(toy_config(4), resumed, toy_stage())  # resumes at step 2
  assert_trees_equal(params_of(resumed), straight)


def test_init_from_takes_network_of_other_stage(toy_run, tmp_path):
  workdir, _ = toy_run
  # Zero steps: the state is exactly the init_from network.
  fresh = str(tmp_path / "fresh")
  loop_lib.run_stage(toy_config(0), fresh, toy_stage(),
                   init_from={"toy": workdir})
  assert_trees_equal(params_of(fresh), params_of(workdir))


def test_nonfinite_loss_stops_run_and_keeps_last_good_checkpoint(tmp_path):
  workdir = str(tmp_path / "nan")
  config = toy_config(50, max_consecutive_nonfinite=3)
  with pytest.raises(train_state_lib.NonFiniteError, match="3 consecutive steps"):
    loop_lib.run_stage(config, workdir, toy_stage(nan_from_step=2))
  # Steps 3 and 4 were skipped (state of step 2 kept, saved at 3 and 4); the
  # 5th step hit the limit before its checkpoint.
  assert checkpoints_lib.checkpoint_networks(workdir)[0] == 4
  good = str(tmp_path / "good")
  loop_lib.run_stage(toy_config(2), good, toy_stage())
  assert_trees_equal(params_of(workdir), params_of(good))


def test_nonfinite_streak_is_caught_between_sync_points(tmp_path):
  """With logs and checkpoints every 10 steps, the host reads each step's
  flag one step late (no wait between steps) and still stops at the step
  where the streak reached the limit, before the step-10 checkpoint."""
  workdir = str(tmp_path / "nan")
  config = toy_config(50, max_consecutive_nonfinite=3)
  config.checkpoint.every_steps = 10
  config.log.every_steps = 10
  config.log.sample_every_steps = 10
  config.eval.every_steps = 10
  with pytest.raises(train_state_lib.NonFiniteError,
                     match=r"3 consecutive steps .* \(step 5\)"):
    loop_lib.run_stage(config, workdir, toy_stage(nan_from_step=2))
  assert checkpoints_lib.StageCheckpointer(workdir, "toy").latest_step() is None


def test_host_reads_flags_every_sync_interval(tmp_path, monkeypatch):
  """`sync_every_steps` = 4, logs every 10 steps: the host reads the flags in
  one transfer at steps 4 and 8 (leaving the step just dispatched for the
  next read) and all of them before the step-10 log, never in between; a
  streak that starts at step 3 is still reported at step 5, where it reached
  the limit, before the step-10 checkpoint."""
  from ihc_jax.trainers import loop  # pylint: disable=g-import-not-at-top
  reads = []
  fold = loop._fold_nonfinite  # pylint: disable=protected-access

  def recording_fold(run, streak, unread):
    reads.append([step for step, _ in unread])
    return fold(run, streak, unread)

  monkeypatch.setattr(loop, "_fold_nonfinite", recording_fold)
  config = toy_config(12, sync_every_steps=4)
  for section in (config.checkpoint, config.log, config.eval):
    section.every_steps = 10
  config.log.sample_every_steps = 10
  loop_lib.run_stage(config, str(tmp_path / "finite"), toy_stage())
  assert reads == [[1, 2, 3], [4, 5, 6, 7], [8, 9, 10], [11, 12]]

  reads.clear()
  workdir = str(tmp_path / "nan")
  config.max_consecutive_nonfinite = 3
  with pytest.raises(train_state_lib.NonFiniteError,
                     match=r"3 consecutive steps .* \(step 5\)"):
    loop_lib.run_stage(config, workdir, toy_stage(nan_from_step=2))
  assert reads == [[1, 2, 3], [4, 5, 6, 7]]  # raised at the second read
  assert checkpoints_lib.StageCheckpointer(workdir, "toy").latest_step() is None


def test_sigterm_saves_checkpoint_and_returns(tmp_path):
  workdir = str(tmp_path / "term")
  config = toy_config(100_000)

  missed = []

  def send_sigterm():
    # config.json is written once the SIGTERM handler is installed; the
    # signal goes out then, or at the deadline (which fails the test).
    deadline = time.time() + 300
    while not os.path.exists(os.path.join(workdir, "config.json")):
      if time.time() > deadline:
        missed.append("run_stage wrote no config.json within 300 s")
        break
      time.sleep(0.05)
    os.kill(os.getpid(), signal.SIGTERM)

  previous = signal.getsignal(signal.SIGTERM)
  thread = threading.Thread(target=send_sigterm)
  thread.start()
  loop_lib.run_stage(config, workdir, toy_stage())
  thread.join()
  assert not missed, missed
  step, stage, networks = checkpoints_lib.checkpoint_networks(workdir)
  assert 0 <= step < 100_000 and stage == "toy" and networks == ["toy"]
  assert signal.getsignal(signal.SIGTERM) is previous  # handler restored
  assert not os.path.exists(os.path.join(workdir, "metrics_summary.json"))


_SHARDED_SCRIPT = textwrap.dedent("""
    import os, sys
    sys.path.insert(0, {repo!r})
    sys.path.insert(0, {tests!r})
    import jax, jax.numpy as jnp, numpy as np, optax
    from ihc_jax import input_pipeline
    from ihc_jax.trainers import hist
    from ihc_jax.trainers import mesh as mesh_lib
    from ihc_jax.trainers import train_state as train_state_lib
    import test_trainers_common as t
    assert jax.device_count() == 8, jax.devices()
    def check(stage):
      rng = np.random.RandomState(0)
      batch = {{"image": rng.rand(8, 32, 32, 3).astype(np.float32)}}
      results = []
      for n in (1, 2, 8):
        mesh = mesh_lib.make_mesh(jax.devices()[:n])
        state = train_state_lib.init_state(
            stage.init_variables(jax.random.PRNGKey(0)), stage.optimizers)
        state = mesh_lib.replicate(state, mesh)
        sharded = input_pipeline.shard_batch(batch, mesh)
        state, metrics = jax.jit(stage.train_step)(state, sharded, {{}},
                                                   jax.random.PRNGKey(1))
        results.append((jax.device_get(state.variables),
                        float(metrics["loss"])))
      for variables, loss in results[1:]:
        np.testing.assert_allclose(loss, results[0][1], rtol=1e-5)
        for a, b in zip(jax.tree.leaves(variables),
                        jax.tree.leaves(results[0][0])):
          np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
      # The step changed the networks.
      initial = stage.init_variables(jax.random.PRNGKey(0))
      assert any(not np.allclose(a, b) for a, b in zip(
          jax.tree.leaves(results[0][0]), jax.tree.leaves(initial)))

    # SGD for the toy: Adam's first step, lr * g / |g|, turns float noise in
    # tiny gradients into +-lr and would hide what is compared. The hist
    # stage (real, Adam) has no such near-zero gradients.
    config = t.toy_config()
    for stage in (t.toy_stage(optimizer=optax.sgd), hist.make_stage(config)):
      check(stage)
    print("SHARDED_OK")
""")


def test_step_on_2_and_8_fake_devices_equals_one_device():
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8",
             JAX_PLATFORMS="cpu")
  script = _SHARDED_SCRIPT.format(repo=REPO,
                                  tests=os.path.join(REPO, "tests"))
  result = subprocess.run([sys.executable, "-c", script], env=env,
                          capture_output=True, text=True, timeout=240)
  assert result.returncode == 0, result.stderr[-3000:]
  assert "SHARDED_OK" in result.stdout


def test_cpu_update_is_one_conditional_unless_told_otherwise():
  tx = {"net": optax.adam(0.1)}
  state = train_state_lib.init_state({"net": {"params": {"w": jnp.ones(2),
                                                "v": jnp.ones(3)}}}, tx)
  grads = {"net": {"w": jnp.ones(2), "v": jnp.ones(3)}}

  def compiled_text():
    # A fresh function each time: jit caches traces by function object.
    def update(s, g):
      return train_state_lib.guarded_update(s, tx, g, {}, [jnp.float32(1.0)])
    return jax.jit(update).lower(state, grads).compile().as_text()

  default = compiled_text()
  with train_state.per_leaf_select():
    select = compiled_text()
  assert " conditional(" in default
  assert " conditional(" not in select
