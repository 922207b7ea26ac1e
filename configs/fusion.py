"""Stage 4, the fusion network F on the outputs of both cascade paths.

Needs the workdirs of the trained ihn and color stages. Launch (GPU/TPU;
256x256, official widths, global batch 32):

  python -m ihc_jax.main --config=configs/fusion.py --workdir=$RUNS/fusion \
    --config.data.source=folder:/data/helen \
    --config.frozen.ihn=$RUNS/ihn --config.frozen.encoder=$RUNS/color \
    --config.frozen.generator=$RUNS/color \
    --config.perceptual.vgg19_weights=/weights/vgg19.npz

CPU check: `--config=configs/fusion.py:runlocal`.
"""

import ml_collections

from ihc_jax.trainers import defaults
from ihc_jax.trainers import fusion


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """Fusion-stage config; `arg='runlocal'` shrinks it for a CPU run."""
  config = fusion.default_config()
  config.data.image_size = 256
  config.data.batch_size = 32
  config.data.eval_batch_size = 32
  config.num_train_steps = 50_000
  if arg == "runlocal":
    defaults.shrink(config, image_size=64, batch_size=4, num_train_steps=200)
  elif arg:
    raise ValueError(f"unknown config argument {arg!r}; use 'runlocal'")
  return config
