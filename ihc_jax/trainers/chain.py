"""Runs several stages one after another in sub-folders of one workdir.

`config.stage_order` lists stage names; `config.stages.<name>` holds each
stage's full config. Stage `<name>` trains in `<workdir>/<name>`; a frozen
network whose path is still the placeholder is pointed at the sub-folder of
the stage that trains it (ihn -> ihn, histogram -> hist, encoder / generator /
discriminator -> color). Each stage resumes by itself, so a restarted chain
skips finished stages quickly. Finally `<workdir>/metrics_summary.{json,md}`
collects every stage's summary.
"""

from __future__ import annotations

import importlib
import json
import os

from absl import logging
import jax
import ml_collections

from ihc_jax.trainers import checkpoints as checkpoints_lib
from ihc_jax.trainers import config_schema as config_schema_lib
from ihc_jax.trainers import loop as loop_lib

# Which stage trains (and checkpoints) each network.
TRAINED_BY = {"ihn": "ihn", "histogram": "hist", "encoder": "color",
              "generator": "color", "discriminator": "color",
              "fusion": "fusion"}


def stage_configs(config: ml_collections.ConfigDict, workdir: str
                  ) -> list[tuple[str, ml_collections.ConfigDict, str]]:
  """(stage name, its config with frozen paths filled in, its workdir)."""
  out = []
  for name in config.stage_order:
    if name not in config.stages:
      raise ValueError(f"chain stage {name!r} has no config.stages.{name}; "
                       f"have {sorted(config.stages)}")
    stage_config = ml_collections.ConfigDict(config.stages[name].to_dict())
    for network in stage_config.get("frozen", {}).keys():
      path = stage_config.frozen[network]
      if not path or path.startswith(config_schema_lib.REQUIRED_PREFIX):
        stage_config.frozen[network] = os.path.join(workdir,
                                                    TRAINED_BY[network])
    out.append((name, stage_config, os.path.join(workdir, name)))
  return out


def train_and_evaluate(config: ml_collections.ConfigDict,
                       workdir: str) -> dict[str, dict[str, float]]:
  """Trains every stage of `config.stage_order` in turn.

  Args:
    config: a chain config (`trainer='chain'`, `stage_order`, `stages`).
    workdir: the chain's workdir; stages go to its sub-folders.

  Returns:
    stage name -> that stage's final evaluation metrics.
  """
  workdir = os.path.abspath(workdir)
  os.makedirs(workdir, exist_ok=True)
  plan = stage_configs(config, workdir)
  # Validate every stage before the first one computes anything.
  for name, stage_config, _ in plan:
    importlib.import_module(f"ihc_jax.trainers.{name}").validate(stage_config)
  results = {}
  for name, stage_config, stage_dir in plan:
    loop_lib.console(f"Chain: stage {name} in {stage_dir}")
    trainer = importlib.import_module(f"ihc_jax.trainers.{name}")
    results[name] = trainer.train_and_evaluate(stage_config, stage_dir)
    step = checkpoints_lib.checkpoint_networks(stage_dir)[0]
    if step < stage_config.num_train_steps:
      # The stage stopped early (SIGTERM): later stages must not start.
      logging.warning("Chain: stage %s stopped at step %d of %d; not "
                      "starting the next stages.", name, step,
                      stage_config.num_train_steps)
      return results
  with open(os.path.join(workdir, "metrics_summary.json"), "w") as f:
    json.dump(results, f, indent=2, sort_keys=True)
  lines = ["# Chain: final metrics per stage", "",
           "| stage | metric | value |", "|---|---|---|"]
  for name, metrics in results.items():
    lines += [f"| {name} | {k} | {v:.4f} |" for k, v in sorted(metrics.items())]
  with open(os.path.join(workdir, "metrics_summary.md"), "w") as f:
    f.write("\n".join(lines) + "\n")
  if jax.process_index() == 0:
    loop_lib.console("\n".join(lines))
  return results
