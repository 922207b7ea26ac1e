"""Stage 1, the inverse halftone network (IHN), at paper scale.

Launch (GPU/TPU; 256x256, official widths, global batch 64):

  python -m ihc_jax.main --config=configs/ihn.py --workdir=$RUNS/ihn \
    --config.data.source=folder:/data/helen \
    --config.perceptual.vgg19_weights=/weights/vgg19.npz

CPU check (64x64, tiny widths, 300 steps): `--config=configs/ihn.py:runlocal`.
"""

import ml_collections

from ihc_jax.trainers import defaults
from ihc_jax.trainers import ihn


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """IHN config; `arg='runlocal'` shrinks it for a CPU run."""
  config = ihn.default_config()
  config.data.image_size = 256
  config.data.batch_size = 64
  config.data.eval_batch_size = 64
  config.num_train_steps = 200_000
  if arg == "runlocal":
    defaults.shrink(config, image_size=64, batch_size=4, num_train_steps=300)
  elif arg:
    raise ValueError(f"unknown config argument {arg!r}; use 'runlocal'")
  return config
