"""Learning tests: every stage fits a fixed batch of real photos past the
trivial answer, and every step reports exactly its stage's loss terms.

"Finite and trains" cannot tell a recipe that learns from one that does not
(the colour stage once scored below the gray it was given). Here each stage
is trained on one fixed batch of four real demo photographs (32x32 crops,
tiny networks, RANDOM VGG features on purpose: no ImageNet weights offline)
and must beat, on that batch, the answer a non-learned method gives:

* IHN: PSNR to the true gray at least `IHN_MARGIN_DB` over Gaussian-blur
  descreening (at 32 px a 3 px screen leaves about ten cells across a
  photo; measured +0.64 to +0.69 dB after 600 steps over seeds 0-2, the
  demo's 64 px IHN reaches +2.5 dB on held-out photos);
* H: total-variation distance to the true histograms at most
  `HIST_TV_RATIO` of its value at initialisation;
* colour stage, recovery scheme: PSNR at least `COLOR_MARGIN_DB` over the
  IHN gray repeated in three channels;
* F: PSNR at least `FUSION_MARGIN_DB` over the better of its two inputs.

Each fit is also scored on 4 crops of the demo's held-out photos (chelsea
twice, coffee, flower), never trained on, and `pytest -s` prints those
figures. Measured with IHC_LEARNING_SEED=0 (7 December 2026), held out
against the same trivial answers: IHN -0.18 dB under the blur descreen
(+0.64 dB over it on the training batch), colour recovery +1.23 dB over
gray3 (+1.54 dB on the training batch), reference chroma distance 0.80 of
the gray's, F -0.16 dB under its better input (+0.48 dB on the training
batch). Four 32 px crops fitted for a few hundred steps are memorised, not
learned from. So the IHN is also trained as a real run is, on the train
stream of the 8 training photos (random crops, 2000 steps), and graded on
the held-out crops: `test_ihn_learns_to_descreen_photos_it_never_saw`
(+0.41 to +0.87 dB over seeds 0-2). The colour and fusion assertions still
grade the training batch: at this size their held-out figures are not yet
measured over seeds (issue #40).

The stages are chained as in training: the fitted IHN is frozen for the
colour and fusion stages, the fitted H for the colour stage, the fitted E, G
for the fusion stage. Every weight of every stage is > 0, so each step's
metrics must name exactly the stage's `TERMS`.
"""

import os
from typing import NamedTuple

import jax
import numpy as np
import pytest
from PIL import Image

from ihc_jax import input_pipeline
from ihc_jax.data import demo
from ihc_jax.trainers import color
from ihc_jax.trainers import checkpoints as checkpoints_lib
from ihc_jax.trainers import loop as loop_lib
from ihc_jax.trainers import mesh as mesh_lib
from ihc_jax.trainers import train_state as train_state_lib
from ihc_jax.trainers import fusion
from ihc_jax.trainers import hist
from ihc_jax.trainers import ihn
from conftest import load_test_config

pytestmark = pytest.mark.xdist_group("learning")

SIZE = 32
PHOTOS = ("astronaut", "china", "motorcycle_left", "rocket")
# Held out: the demo's eval photos, never trained on (two crops of chelsea).
HELD_OUT = (("chelsea", 0.5), ("chelsea", 0.1), ("coffee", 0.5),
            ("flower", 0.5))
# The seed of every fit (weights, halftones, dropout): the margins below were
# measured with IHC_LEARNING_SEED=0, 1 and 2 (`pytest tests/test_learning.py
# -s` prints each stage's figures).
SEED = int(os.environ.get("IHC_LEARNING_SEED", "0"))
IHN_MARGIN_DB = 0.5
# The IHN trained on random crops of the 8 demo training photos, scored on
# the held-out crops (`test_ihn_learns_to_descreen_photos_it_never_saw`).
IHN_HELD_OUT_MARGIN_DB = 0.2
IHN_STREAM_STEPS = 2000
HIST_TV_RATIO = 0.6
COLOR_MARGIN_DB = 1.0
FUSION_MARGIN_DB = 0.3
STEPS = {"ihn": 600, "hist": 100, "color": 150, "fusion": 300}
# What every step reports besides its weighted terms.
BOOKKEEPING = {"loss", "nonfinite"}


def _photo(name, split="train", where=0.5):
  """A SIZE crop of a demo photo scaled to SIZE on its short side; `where`
  places it along the long side (0.5: centre)."""
  image = dict(demo.demo_images(split))[name]
  pil = Image.fromarray(np.asarray(image))
  scale = SIZE / min(pil.size)
  pil = pil.resize((max(SIZE, round(pil.size[0] * scale)),
                    max(SIZE, round(pil.size[1] * scale))), Image.BILINEAR)
  array = np.asarray(pil, np.float32) / 255.0
  top = round((array.shape[0] - SIZE) * where)
  left = round((array.shape[1] - SIZE) * where)
  return array[top:top + SIZE, left:left + SIZE]


@pytest.fixture(scope="module")
def photos():
  """The fixed batch: 4 real photos, each referenced by the next one."""
  images = np.stack([_photo(name) for name in PHOTOS])
  return {"image": images, "reference": np.roll(images, 1, axis=0)}


@pytest.fixture(scope="module")
def held_out():
  """4 crops of the demo's held-out photos, each referenced by the next."""
  images = np.stack([_photo(name, "eval", where) for name, where in HELD_OUT])
  return {"image": images, "reference": np.roll(images, 1, axis=0)}


def _config(stage, workdirs=None, **optim):
  config = load_test_config(stage)
  config.seed = SEED
  config.num_train_steps = STEPS[stage]
  for name in config.optim.keys():
    config.optim[name].learning_rate = optim.get("learning_rate", 1e-3)
  for name, path in (workdirs or {}).items():
    config.frozen[name] = path
  return config


class Fit(NamedTuple):
  """One stage's fit: the stage, its last step's metrics, eval metrics on
  the training batch and on the held-out batch, before and after."""
  stage: loop_lib.Stage
  metrics: dict
  before: dict
  after: dict
  held_out_before: dict
  held_out_after: dict


def _fit(module, config, batch, workdir, held_out, stream=None):
  """Trains `config.num_train_steps` steps on `batch` (or, with `stream`,
  on the host batches it yields); saves like a stage; returns a `Fit`."""
  module.validate(config)
  stage = module.make_stage(config)
  mesh = mesh_lib.make_mesh()
  state = mesh_lib.replicate(train_state_lib.init_state(
      stage.init_variables(jax.random.PRNGKey(config.seed)),
      stage.optimizers), mesh)
  frozen = mesh_lib.replicate(stage.frozen, mesh)
  sharded = input_pipeline.shard_batch(dict(batch), mesh)
  unseen = input_pipeline.shard_batch(dict(held_out), mesh)
  eval_step = jax.jit(stage.eval_step)
  seed_key = jax.random.PRNGKey(config.seed)

  def evaluate(state, data):
    values = jax.device_get(eval_step(state, data, frozen,
                                      jax.random.fold_in(seed_key, 1234)))
    return {k: float(np.mean(v)) for k, v in values.items()}

  before, unseen_before = evaluate(state, sharded), evaluate(state, unseen)
  step = jax.jit(stage.train_step, donate_argnums=(0,))
  for i in range(config.num_train_steps):
    data = (sharded if stream is None
            else input_pipeline.shard_batch(next(stream), mesh))
    state, metrics = step(state, data, frozen,
                          jax.random.fold_in(seed_key, i))
  metrics = jax.device_get(metrics)
  fit = Fit(stage, metrics, before, evaluate(state, sharded), unseen_before,
            evaluate(state, unseen))
  checkpoints_lib.save_stage_config(config, workdir)
  checkpointer = checkpoints_lib.StageCheckpointer(workdir, stage.name)
  checkpointer.save(state)
  checkpointer.close()
  return fit


def _ihn_config(**optim):
  """The IHN of these fits: the test widths with a larger detail branch, a
  small perceptual term at relu2_1 (so the step carries all of its TERMS)."""
  config = _config("ihn", **optim)
  config.loss.perceptual = 0.01
  # At relu2_1 instead of the paper's pool4 (which the colour stage uses)
  # the random VGG costs a sixth: the fixed-batch fit took 45 s instead of
  # 148 s, margins +0.69 / +0.64 / +0.69 dB over seeds 0-2 (+0.64 dB at
  # pool4).
  config.perceptual.layer = "relu2_1"
  config.model.ihn.update(detail_features=16, detail_blocks=4,
                          detail_expand=32)
  return config


@pytest.fixture(scope="module")
def ihn_on_photo_stream(photos, held_out, tmp_path_factory):
  """The IHN trained like a real run, on the train stream of the demo's 8
  training photos (random 32 px crops and flips, batch 4) for
  IHN_STREAM_STEPS steps; a `Fit`."""
  config = _ihn_config(learning_rate=3e-3)
  config.num_train_steps = IHN_STREAM_STEPS
  config.data.batch_size = 4
  train_ds, _ = input_pipeline.create_datasets(config.data, seed=config.seed)
  fit = _fit(ihn, config, photos, str(tmp_path_factory.mktemp("stream")),
             held_out, stream=train_ds.as_numpy_iterator())
  print(f"ihn on the photo stream, held out: before {fit.held_out_before}"
        f"\nafter {fit.held_out_after}")
  return fit


@pytest.fixture(scope="module")
def fitted(photos, held_out, tmp_path_factory):
  """Fits ihn -> hist -> color -> fusion in turn; stage -> fit results."""
  root = tmp_path_factory.mktemp("learning")
  dirs = {name: str(root / name) for name in ("ihn", "hist", "color", "fusion")}
  out = {}
  ihn_config = _ihn_config(learning_rate=3e-3)
  out["ihn"] = _fit(ihn, ihn_config, photos, dirs["ihn"], held_out)
  out["hist"] = _fit(hist, _config("hist"), photos, dirs["hist"], held_out)
  out["color"] = _fit(
      color, _config("color", {"ihn": dirs["ihn"], "histogram": dirs["hist"]}),
      photos, dirs["color"], held_out)
  fusion_config = _config("fusion", {"ihn": dirs["ihn"],
                                     "encoder": dirs["color"],
                                     "generator": dirs["color"]})
  fusion_config.loss.perceptual = 0.05
  fusion_config.loss.adversarial = 0.01
  # relu2_1 rather than the stage's relu4_1, for time as in the IHN fit:
  # 94 s instead of 130 s, margin +0.89 dB instead of +0.73 dB.
  fusion_config.perceptual.layer = "relu2_1"
  # The official 3 blocks at half the official width: the tiny F (8
  # features, 1 block) only learns to pick its better input (19.21 dB
  # against 19.14 dB after 300 steps).
  fusion_config.model.fusion.update(features=32, num_blocks=3)
  out["fusion"] = _fit(fusion, fusion_config, photos, dirs["fusion"],
                       held_out)
  for stage, fit in out.items():
    print(f"{stage}: before {fit.before}\n{stage}: after {fit.after}\n"
          f"{stage}: held out {fit.held_out_after}")
  return out


def test_ihn_beats_blur_descreening(fitted):
  _, metrics, before, after, _, _ = fitted["ihn"]
  assert metrics["nonfinite"] == 0.0
  assert after["ihn_psnr"] > after["blur_baseline_psnr"] + IHN_MARGIN_DB, after
  assert after["ihn_psnr"] > before["ihn_psnr"] + 3.0, (before, after)


def test_ihn_learns_to_descreen_photos_it_never_saw(ihn_on_photo_stream):
  """Held out: IHN PSNR over the blur descreen on crops of chelsea, coffee
  and flower, after 2000 steps on random crops of the 8 training photos.
  Measured (7 December 2026, 2-core AVX-512): +0.87, +0.41, +0.54 dB for
  IHC_LEARNING_SEED 0, 1, 2 (at 1000 steps +0.55, +0.21: still rising); at
  the start 7.3 dB, 13.4 dB under the blur. With a zero learning rate it
  stays there and the test fails."""
  before, after = (ihn_on_photo_stream.held_out_before,
                   ihn_on_photo_stream.held_out_after)
  assert after["ihn_psnr"] > (after["blur_baseline_psnr"]
                              + IHN_HELD_OUT_MARGIN_DB), (before, after)
  assert after["ihn_psnr"] > before["ihn_psnr"] + 1.0, (before, after)


def test_histogram_estimator_error_falls(fitted):
  _, _, before, after, _, _ = fitted["hist"]
  assert after["histogram_tv"] < HIST_TV_RATIO * before["histogram_tv"], (
      before, after)


# Measured on this batch: recovery 20.0 dB against the gray's 18.2 dB since
# G starts at the gray (generator_init="gray"; 16.6 dB from a random start).
def test_color_recovery_beats_gray_in_three_channels(fitted):
  _, metrics, _, after, _, _ = fitted["color"]
  assert metrics["nonfinite"] == 0.0
  assert after["recovery_psnr"] > after["gray3_psnr"] + COLOR_MARGIN_DB, after
  # Not asserted here: that the reference result is closer in chroma
  # statistics to its reference than the gray is. On this batch the two
  # differ by less than the run-to-run spread (reference minus gray, gray
  # 21.15: -0.23, -0.57, -0.86 and, after a change of float rounding only,
  # +0.34, -0.31, -0.22 over seeds 0-2 at 150 steps; -1.97 and +0.18 at 300
  # steps), so such a check passes or fails by chance. The metric is
  # reported (`reference_chroma_dist`) and separates on held-out photos in
  # the demo (17.2 against the gray's 23.6, benchmarks/RESULTS.md).
  assert np.isfinite(after["reference_chroma_dist"]), after


# Measured on this batch (300 steps): F 20.03 dB (seed 0; 19.88 dB with the
# perceptual term at relu4_1, and 20.11, 19.86 dB for seeds 0, 1 on earlier
# code) against its better input's 19.15 dB (IHN->C; C->IHN 14.6 dB), from its
# start at the IHN->C input (fusion_init="forward"; 19.91 and 19.70 dB from
# the average start). The margin is below the +0.72 dB of seed 1 and near
# what the best global linear map of both inputs, fitted to the truth
# itself, gains (+0.46 dB): most of the error left is the luminance both
# paths inherit from the 32 px IHN (20.0 dB to the true gray).
def test_fusion_beats_the_better_of_its_inputs(fitted):
  _, _, before, after, _, _ = fitted["fusion"]
  assert after["fusion_psnr"] > after["best_input_psnr"] + FUSION_MARGIN_DB, (
      after)
  # F starts at its IHN->C input (fusion_init="forward"): fitting must
  # improve on that start.
  assert after["fusion_psnr"] > before["fusion_psnr"], (before, after)


@pytest.mark.parametrize("stage,module,extra", [
    ("ihn", ihn, set()), ("hist", hist, set()),
    ("color", color, {"discriminator_loss"}),
    ("fusion", fusion, {"discriminator_loss"})])
def test_step_reports_exactly_the_stage_terms(fitted, stage, module, extra):
  _, metrics, _, _, _, _ = fitted[stage]
  assert set(metrics) == set(module.TERMS) | BOOKKEEPING | extra
  assert all(np.isfinite(v) for v in metrics.values()), metrics


@pytest.mark.parametrize("module,stage", [(ihn, "ihn"), (color, "color"),
                                          (fusion, "fusion"), (hist, "hist")])
def test_a_weight_without_a_term_fails_before_compute(module, stage):
  config = load_test_config(stage)
  foreign = "kl" if stage != "color" else "pixel"
  config.loss[foreign] = 1.0
  with pytest.raises(ValueError, match=f"unknown config key 'loss.{foreign}'"):
    module.validate(config)
  # A term without a weight fails too, naming the term.
  config = load_test_config(stage)
  for name in config.get("frozen", {}).keys():
    config.frozen[name] = "/a/stage/workdir"  # validate reads no file
  del config.loss[module.TERMS[0]]
  with pytest.raises(KeyError, match=f"terms \\['{module.TERMS[0]}'\\] have "
                     "no weight"):
    module.validate(config)
