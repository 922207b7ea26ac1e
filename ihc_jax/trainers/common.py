"""The trainers' toolbox, one namespace over files with one concern each.

Stages import `common` and find here what they share; each name lives in
the file that says what it is:

* `mesh.py`: the `('data',)` device mesh, replication;
* `train_state.py`: `TrainState`, optimizers and schedules, the guarded
  (non-finite-safe) update;
* `checkpoints.py`: Orbax stage checkpoints, one network at a time, and the
  stage config on disk (`config.json`), frozen networks;
* `config_schema.py`: validation of a run's config against the stage's
  default config; hparams;
* `grids.py`: sample image grids;
* `preemption.py`: SIGTERM agreed across processes;
* `loop.py`: `Stage`, `run_stage` (the loop, with the restore order written
  down once), evaluation and metric summaries.
"""

from ihc_jax.trainers.checkpoints import (CHECKPOINT_DIR, CONFIG_FILE,
                                          StageCheckpointer,
                                          checkpoint_networks,
                                          load_frozen_networks,
                                          load_stage_config,
                                          restore_network_variables,
                                          save_stage_config)
from ihc_jax.trainers.checkpoints import _OPTIMIZER_ITEM  # tests corrupt it
from ihc_jax.trainers.config_schema import (REQUIRED_PREFIX, hparams,
                                            validate_config)
from ihc_jax.trainers.grids import image_grid, save_png
from ihc_jax.trainers.loop import (EVAL_CONTRACT, Stage, TrainStep, console,
                                   compile_eval_step, evaluate,
                                   run_stage, shard, write_summary)
from ihc_jax.trainers.mesh import make_mesh, replicate, replicated
from ihc_jax.trainers.preemption import StopOnSigterm
from ihc_jax.trainers.train_state import (Metrics, NonFiniteError, TrainState,
                                          Variables, all_finite,
                                          guarded_update, init_state,
                                          make_learning_rate, make_optimizer)
