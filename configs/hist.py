"""Stage 2, the histogram estimator H, at paper scale.

H's Dense layer depends on the image size: train it at the colour stage's
`data.image_size`. Launch (GPU/TPU; 256x256, 64 bins, global batch 64):

  python -m ihc_jax.main --config=configs/hist.py --workdir=$RUNS/hist \
    --config.data.source=folder:/data/helen

CPU check (64x64, tiny widths): `--config=configs/hist.py:runlocal`.
"""

import ml_collections

from ihc_jax.trainers import defaults
from ihc_jax.trainers import hist


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """H config; `arg='runlocal'` shrinks it for a CPU run."""
  config = hist.default_config()
  config.data.image_size = 256
  config.data.batch_size = 64
  config.data.eval_batch_size = 64
  config.num_train_steps = 20_000
  if arg == "runlocal":
    defaults.shrink(config, image_size=64, batch_size=8, num_train_steps=200)
  elif arg:
    raise ValueError(f"unknown config argument {arg!r}; use 'runlocal'")
  return config
