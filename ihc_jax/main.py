"""Trains a stage of ihc_jax: the only module with command-line flags.

    python -m ihc_jax.main --config=configs/ihn.py --workdir=/runs/ihn
    python -m ihc_jax.main --config=configs/demo.py --workdir=/tmp/ihc_demo

`config.trainer` picks the trainer ('ihn', 'hist', 'color', 'fusion' or
'chain'); every trainer resumes from `--workdir` by itself. Any config value
can be overridden, e.g. `--config.num_train_steps=100`. Progress and
held-out results are printed; library logs show at WARNING and above unless
`--verbosity=0` (INFO) or higher is given.
"""

from __future__ import annotations

import importlib

from absl import app
from absl import flags
from absl import logging
import jax
from ml_collections import config_flags

from ihc_jax import distributed

TRAINERS = {
    "ihn": "ihc_jax.trainers.ihn",
    "hist": "ihc_jax.trainers.hist",
    "color": "ihc_jax.trainers.color",
    "fusion": "ihc_jax.trainers.fusion",
    "chain": "ihc_jax.trainers.chain",
}

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Training config file (configs/<stage>.py[:arg]).",
    lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None,
                               "Directory for checkpoints, logs and samples.")
_COORDINATOR = flags.DEFINE_string(
    "coordinator_address", None, "host:port of process 0 (multi-process runs).")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None,
                                      "Number of processes (multi-process).")
_PROCESS_ID = flags.DEFINE_integer("process_id", None,
                                   "Index of this process (multi-process).")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"Too many command-line arguments: {argv[1:]}")
  if not flags.FLAGS["verbosity"].present:
    # Library INFO lines (Orbax's alone are ~1000 in the demo) drown the
    # progress and results the trainers print; --verbosity=0 shows them.
    logging.set_verbosity(logging.WARNING)
  distributed.initialize(_COORDINATOR.value, _NUM_PROCESSES.value,
                         _PROCESS_ID.value)
  # tf.data only: keep TensorFlow off the accelerators JAX uses.
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  tf.config.set_visible_devices([], "GPU")
  config = _CONFIG.value
  if config.trainer not in TRAINERS:
    raise app.UsageError(f"config.trainer={config.trainer!r} is not one of "
                         f"{sorted(TRAINERS)}")
  print(f"JAX process {jax.process_index()} of {jax.process_count()}, local "
        f"devices {jax.local_devices()}", flush=True)
  trainer = importlib.import_module(TRAINERS[config.trainer])
  trainer.train_and_evaluate(config, _WORKDIR.value)


if __name__ == "__main__":
  app.run(main)
