"""Stage 3, colour encoder E, colorization network G and discriminator D.

Needs the workdirs of the trained ihn and hist stages. Launch (GPU/TPU;
256x256, official widths, global batch 32):

  python -m ihc_jax.main --config=configs/color.py --workdir=$RUNS/color \
    --config.data.source=folder:/data/helen \
    --config.data.reference_source=folder:/data/imagenet6000 \
    --config.data.example_dir=/data/dec_examples \
    --config.frozen.ihn=$RUNS/ihn --config.frozen.histogram=$RUNS/hist \
    --config.perceptual.vgg19_weights=/weights/vgg19.npz

Without `data.example_dir` the pseudo ground truth of the reference scheme is
the built-in exemplar transfer. CPU check: `--config=configs/color.py:runlocal`
(the frozen stages must then be runlocal runs too).
"""

import ml_collections

from ihc_jax.trainers import color
from ihc_jax.trainers import defaults


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """Colour-stage config; `arg='runlocal'` shrinks it for a CPU run."""
  config = color.default_config()
  config.data.image_size = 256
  config.data.batch_size = 32
  config.data.eval_batch_size = 32
  config.num_train_steps = 200_000
  if arg == "runlocal":
    defaults.shrink(config, image_size=64, batch_size=4, num_train_steps=300)
  elif arg:
    raise ValueError(f"unknown config argument {arg!r}; use 'runlocal'")
  return config
