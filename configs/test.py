"""Tiniest settings for the tests: 32x32 demo crops, batch 2, tiny nets.

`get_config("<stage>")` for stage in ihn, hist, color, fusion; "chain" gives
all four chained. Frozen paths of color/fusion are placeholders the tests (or
the chain trainer) fill in. VGG features are random (no ImageNet weights in
tests, on purpose). Example:

  python -m ihc_jax.main --config=configs/test.py:hist --workdir=/tmp/t_hist
"""

import importlib

import ml_collections

from ihc_jax.trainers import defaults

STAGES = ("ihn", "hist", "color", "fusion")
IMAGE_SIZE = 32


def stage_config(stage: str, *, num_train_steps: int = 2
                 ) -> ml_collections.ConfigDict:
  """The test config of one stage."""
  if stage not in STAGES:
    raise ValueError(f"unknown stage {stage!r}; use one of {STAGES} or 'chain'")
  config = importlib.import_module(f"ihc_jax.trainers.{stage}").default_config()
  defaults.shrink(config, image_size=IMAGE_SIZE, batch_size=2,
                  num_train_steps=num_train_steps)
  config.data.num_parallel_calls = 1
  config.data.shuffle_buffer = 8
  config.perceptual.random_features = True
  config.halftone.supersample = 1
  if stage in ("ihn", "fusion"):
    # Compile time: the VGG path is tested in the color stage only.
    config.loss.perceptual = 0.0
  return config


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """Test config of stage `arg` (default 'ihn'), or of the chain."""
  arg = arg or "ihn"
  if arg != "chain":
    return stage_config(arg)
  config = ml_collections.ConfigDict()
  config.trainer = "chain"
  config.stage_order = STAGES
  config.stages = ml_collections.ConfigDict(
      {stage: stage_config(stage) for stage in STAGES})
  # Two steps are too few for G's gray start to let the codes show: z
  # reaches G's output only as the first updates move the output conv off
  # zero (1e-4 mean difference between two random codes after two steps).
  # The chain's checkpoints serve tests of loading, inference and the CLI,
  # which need codes that change the colours; the gray start has tests of
  # its own (tests/test_generator_init.py, tests/test_learning.py).
  config.stages.color.generator_init = "random"
  # F's default start passes G's IHN->C result through, and two steps of a
  # randomly started G carry little of the photo's structure (luma SSIM to
  # the IHN gray 0.015); the average start also passes the C->IHN result,
  # so the chain's outputs keep the structure the end-to-end test checks.
  config.stages.fusion.fusion_init = "average"
  return config
