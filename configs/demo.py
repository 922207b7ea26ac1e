"""Demo: all four stages chained at a small size on the bundled demo photos.

  python -m ihc_jax.main --config=configs/demo.py --workdir=/tmp/ihc_demo

Runs ihn -> hist -> color -> fusion in /tmp/ihc_demo/{ihn,hist,color,fusion}
on a 2-core CPU in about twelve minutes: 64x64 crops, tiny widths, a few hundred
steps in all. It leaves checkpoints of every stage, TensorBoard logs
(`tensorboard --logdir /tmp/ihc_demo`), PNG sample grids in each stage's
`samples/`, and metrics summaries (PSNR/SSIM of the IHN and of the recovery
scheme on the held-out demo photos, beside a Gaussian-blur descreening
baseline). VGG-based losses use RANDOM features (no ImageNet weights offline;
a warning says so): set `perceptual.random_features=False` and
`perceptual.vgg19_weights` in each stage for real runs. The numbers show that
the pipeline works end to end, not the paper's quality.
"""

import ml_collections

from ihc_jax.trainers import color
from ihc_jax.trainers import defaults
from ihc_jax.trainers import fusion
from ihc_jax.trainers import hist
from ihc_jax.trainers import ihn

IMAGE_SIZE = 64
# Steps per stage: the IHN and the colour stage learn most of what shows.
STEPS = {"ihn": 600, "hist": 300, "color": 300, "fusion": 100}
BATCH = {"ihn": 4, "hist": 8, "color": 2, "fusion": 2}
MODULES = {"ihn": ihn, "hist": hist, "color": color, "fusion": fusion}


def stage_config(stage: str) -> ml_collections.ConfigDict:
  """One stage of the demo."""
  config = MODULES[stage].default_config()
  defaults.shrink(config, image_size=IMAGE_SIZE, batch_size=BATCH[stage],
                  num_train_steps=STEPS[stage])
  config.data.source = "demo"
  config.log.sample_every_steps = STEPS[stage] // 2
  config.eval.num_batches = 2
  config.perceptual.random_features = True
  if stage == "ihn":
    # A wider detail branch: +2.5 dB over blur descreening on the held-out
    # photos at 600 steps (27.3 dB vs 24.7; the test width gave 25.4).
    config.model.ihn.update(detail_features=16, detail_blocks=4,
                            detail_expand=32)
  if stage == "color":
    # Wider G: the tiny test width (ngf 4) cannot carry a 64 px image.
    config.model.generator.ngf = 16
    # KL 0.1, not BicycleGAN's 0.01: at this scale E's codes otherwise fill
    # only a corner of N(0, I), and 16 % of random codes washed a held-out
    # photo in saturated colour (eval/random_washed, three seeds); at 0.1
    # 3 %, with the same recovery PSNR (docs/training.md, "Random codes
    # that wash").
    config.loss.kl = 0.1
  if stage == "fusion":
    config.model.fusion.update(features=16, num_blocks=2)
  if stage in ("ihn", "color", "hist", "fusion"):
    # Faster schedule for a short run.
    for name in config.optim.keys():
      config.optim[name].learning_rate = 1e-3
      config.optim[name].end_learning_rate = 1e-4
  return config


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """The chained demo config (no arguments)."""
  if arg:
    raise ValueError(f"configs/demo.py takes no argument, got {arg!r}")
  config = ml_collections.ConfigDict()
  config.trainer = "chain"
  config.stage_order = ("ihn", "hist", "color", "fusion")
  config.stages = ml_collections.ConfigDict(
      {stage: stage_config(stage) for stage in config.stage_order})
  return config
