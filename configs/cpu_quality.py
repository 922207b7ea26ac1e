"""CPU quality run: all four stages on every installed photograph.

  apt-get install -y --no-install-recommends mate-backgrounds \\
      plasma-workspace-wallpapers
  python -m ihc_jax.main --config=configs/cpu_quality.py --workdir=quality

The demo (`configs/demo.py`) is a smoke test on 8 training photos; this run
is the evidence that the recipe carries to photos the model never saw. It
trains on the `photos` source (`ihc_jax.data.photos`: the demo photos and
the photographs of two Debian packages, 26 to train, 9 held out, chosen
unlike the training ones) at 64 x 64, longer than the demo, and evaluates
every stage on the held-out photos during training (each workdir's
`eval_history.jsonl`, the data of `python -m ihc_jax.tools.learning_curves`).

Sized for 60 minutes on a 2-core AVX2 CPU (figures in docs/training.md).
An argument sets the seed of every stage, e.g.
`--config=configs/cpu_quality.py:1`; `--config.stages.color.<key>=...`
overrides one stage (e.g. `data.num_train_images=8` for the curve over the
number of photos).
"""

import importlib.util
import os

import ml_collections


def _demo_module():
  """configs/demo.py, beside this file (config files load by path)."""
  spec = importlib.util.spec_from_file_location(
      "ihc_jax_demo_config", os.path.join(os.path.dirname(__file__),
                                          "demo.py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


demo = _demo_module()

STEPS = {"ihn": 1500, "hist": 300, "color": 1500, "fusion": 300}
BATCH = {"ihn": 4, "hist": 8, "color": 2, "fusion": 2}
EVAL_EVERY = {"ihn": 500, "hist": 300, "color": 250, "fusion": 150}


def stage_config(stage: str, seed: int) -> ml_collections.ConfigDict:
  """One stage: the demo's widths and schedule, more steps, all photos."""
  config = demo.stage_config(stage)
  config.seed = seed
  config.num_train_steps = STEPS[stage]
  config.data.batch_size = BATCH[stage]
  config.data.source = "photos"
  config.data.eval_batch_size = 3
  config.eval.num_batches = 3  # all 9 held-out photos
  config.eval.every_steps = EVAL_EVERY[stage]
  config.checkpoint.every_steps = STEPS[stage]
  config.log.sample_every_steps = STEPS[stage] // 2
  if stage == "color":
    # G gives the chroma over the IHN's gray, plus a colour offset from the
    # code; both won over three seeds (docs/training.md, "Levers").
    config.model.generator.luma = "input"
    config.model.generator.code_shift = True
  return config


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """The chained quality run; `arg` is the seed (default 0)."""
  try:
    seed = int(arg) if arg else 0
  except ValueError:
    raise ValueError(
        f"configs/cpu_quality.py takes a seed (an integer), got {arg!r}"
    ) from None
  config = ml_collections.ConfigDict()
  config.trainer = "chain"
  config.stage_order = ("ihn", "hist", "color", "fusion")
  config.stages = ml_collections.ConfigDict(
      {stage: stage_config(stage, seed) for stage in config.stage_order})
  return config
