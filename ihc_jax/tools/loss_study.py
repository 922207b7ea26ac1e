"""Loss-balance study of the colour stage at demo scale.

    python -m ihc_jax.tools.loss_study --workdir=/tmp/ihc_study \
        --seeds=0,1 --ablation_seeds=0 --steps=150

(run from the repository root: it reads configs/demo.py.)

1. Trains (or reuses) the demo's IHN and H stages (configs/demo.py) in
   `<workdir>/ihn` and `<workdir>/hist`.
2. Builds the demo's colour stage once with every term switched on and
   compiles its step once; loss weights are passed to the step as data, so
   every variant reuses that compiled step. Variants: `default` (the default
   weights), `-<term>` (that term's weight 0) for every weighted term, and
   `reconstruction only` (recovery L1, reference MSE, C->IHN task and KL);
   `--variants` may add leave-several-out variants such as
   `-reference_mse-structure` and reweighted ones such as `kl=0.05`.
   Each variant trains `--steps` steps from a fresh initialisation per seed
   on the demo's training stream; every finished run is saved in
   `<workdir>/runs/` with its weights and reused when the study is restarted
   with the same weights.
3. Writes `<workdir>/loss_study.md` (and .json): the magnitude of every
   weighted term over training in the default runs (mean over seeds), and
   the held-out metrics of every variant (mean and spread over seeds) beside
   the trivial answers (the IHN gray in three channels; the gray's chroma
   distance to the reference).

The tables it writes are those quoted in docs/training.md.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence

import argparse

from absl import logging
import ml_collections
import numpy as np

# Held-out figures reported per variant (eval/<name>).
REPORTED = ("recovery_psnr", "recovery_ssim", "reference_chroma_dist",
            "random_difference", "random_luma_ssim", "random_saturated",
            "random_washed")
RECONSTRUCTION_ONLY = ("recovery_l1", "reference_mse", "halftone_task", "kl")


def variants(loss: ml_collections.ConfigDict,
             extra: Sequence[str] = ()) -> dict[str, dict[str, float]]:
  """Variant name -> loss weights.

  Args:
    loss: the default loss weights.
    extra: further variants: leave-several-out ones, `-<term>-<term>...`
      (term names have no hyphen), e.g. `-reference_mse-structure`, and
      reweighted ones, `<term>=<weight>`, e.g. `kl=0.05`.
  """
  default = {k: float(v) for k, v in loss.items()}
  out = {"default": default}
  for name, weight in default.items():
    if weight > 0:
      out[f"-{name}"] = dict(default, **{name: 0.0})
  out["reconstruction only"] = {
      k: (v if k in RECONSTRUCTION_ONLY else 0.0) for k, v in default.items()}
  for variant in extra:
    if "=" in variant:
      term, _, weight = variant.partition("=")
      if term not in default:
        raise ValueError(f"variant {variant!r} names unknown loss term "
                         f"{term!r}; have {sorted(default)}")
      out[variant] = dict(default, **{term: float(weight)})
      continue
    terms = variant.split("-")[1:]
    if not variant.startswith("-") or not all(terms):
      raise ValueError(f"variant {variant!r} is not of the form -<term>-<term>")
    unknown = sorted(set(terms) - set(default))
    if unknown:
      raise ValueError(f"variant {variant!r} names unknown loss terms "
                       f"{unknown}; have {sorted(default)}")
    out[variant] = dict(default, **{t: 0.0 for t in terms})
  return out


def _study_config(workdir: str, steps: int | None) -> ml_collections.ConfigDict:
  from configs import demo  # pylint: disable=g-import-not-at-top
  config = demo.stage_config("color")
  if steps:
    config.num_train_steps = steps
  config.frozen.ihn = os.path.join(workdir, "ihn")
  config.frozen.histogram = os.path.join(workdir, "hist")
  return config


def run_variants(config: ml_collections.ConfigDict,
                 plan: dict[str, tuple[dict[str, float], Sequence[int]]],
                 log_every: int, results_dir: str) -> dict[str, list[dict]]:
  """Trains every (variant, seed) with one compiled step.

  Each run's result is written to `results_dir/<variant>.seed<k>.json` as
  soon as it finishes and reused when the study is restarted.

  Args:
    config: the demo colour-stage config (frozen paths set).
    plan: variant -> (loss weights, seeds).
    log_every: steps per logged term magnitude.
    results_dir: where per-run results go.

  Returns:
    variant -> per seed {'heldout': metrics, 'terms': {step: {term: value}}}.
  """
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  from ihc_jax import input_pipeline  # pylint: disable=g-import-not-at-top
  from ihc_jax.trainers import color  # pylint: disable=g-import-not-at-top
  from ihc_jax.trainers import loop  # pylint: disable=g-import-not-at-top
  from ihc_jax.trainers import mesh as mesh_lib  # pylint: disable=g-import-not-at-top
  from ihc_jax.trainers import train_state  # pylint: disable=g-import-not-at-top
  all_on = ml_collections.ConfigDict(config.to_dict())
  for name in all_on.loss.keys():
    all_on.loss[name] = 1.0  # every term computed; values come as data
  color.validate(all_on)
  stage = color.make_stage(all_on)
  mesh = mesh_lib.make_mesh()
  frozen = mesh_lib.replicate(stage.frozen, mesh)
  train_step = jax.jit(stage.train_step, donate_argnums=(0,))
  eval_step = loop.compile_eval_step(stage.eval_step)
  out = {}
  os.makedirs(results_dir, exist_ok=True)
  for variant, (weights, seeds) in plan.items():
    out[variant] = []
    weight_array = {k: jnp.float32(v) for k, v in weights.items()}
    for seed in seeds:
      path = os.path.join(results_dir,
                          f"{variant.replace(' ', '_')}.seed{seed}.json")
      if os.path.exists(path):
        with open(path) as f:
          saved = json.load(f)
        if saved.get("weights") == weights:
          out[variant].append(saved)
          continue
      logging.warning("study: %s, seed %d", variant, seed)
      key = jax.random.PRNGKey(seed)
      init_key, train_key, eval_key = jax.random.split(key, 3)
      state = mesh_lib.replicate(train_state.init_state(
          stage.init_variables(init_key), stage.optimizers), mesh)
      train_ds, eval_ds = input_pipeline.create_datasets(config.data,
                                                         seed=seed)
      terms, pending = {}, []
      for step, batch in zip(range(config.num_train_steps),
                             train_ds.as_numpy_iterator()):
        state, metrics = train_step(
            state, input_pipeline.shard_batch(batch, mesh), frozen,
            jax.random.fold_in(train_key, step), weight_array)
        pending.append(metrics)
        if (step + 1) % log_every == 0:
          means = jax.tree.map(lambda *x: float(np.mean(x)),
                               *jax.device_get(pending))
          terms[step + 1] = means  # weighted terms: 0 where switched off
          pending = []
      heldout = loop.evaluate(stage, state, eval_ds, mesh,
                                config.eval.num_batches, eval_key, eval_step)
      result = {"weights": weights, "heldout": heldout,
                "terms": {str(k): v for k, v in terms.items()}}
      with open(path, "w") as f:
        json.dump(result, f)
      out[variant].append(result)
  return out


def summarise(results: dict[str, list[dict]]) -> dict:
  """Held-out metrics per variant and term magnitudes of the default runs."""
  table = {}
  for variant, per_seed in results.items():
    metrics = [r["heldout"] for r in per_seed]
    table[variant] = {k: (float(np.mean([m[k] for m in metrics])),
                          float(np.std([m[k] for m in metrics])))
                      for k in sorted(metrics[0])}
  curves: dict[str, dict[int, float]] = {}
  default = results.get("default", [])
  for run in default:
    for step, values in run["terms"].items():
      for name, value in values.items():
        if name != "nonfinite":
          curves.setdefault(name, {}).setdefault(int(step), 0.0)
          curves[name][int(step)] += value / len(default)
  weights = default[0].get("weights", {}) if default else {}
  return {"heldout": table, "term_magnitudes": curves,
          "default_weights": weights}


def markdown(summary: dict, seeds: Sequence[int],
             ablation_seeds: Sequence[int]) -> str:
  """The two tables of the study."""
  lines = [f"## Weighted term magnitudes, default weights (mean of seeds "
           f"{', '.join(map(str, seeds))})", "",
           "Default weights: " + ", ".join(
               f"{k} {v:g}" for k, v in summary["default_weights"].items()),
           ""]
  curves = summary["term_magnitudes"]
  if curves:
    steps = sorted(next(iter(curves.values())))
    shown = sorted({steps[0], steps[len(steps) // 4], steps[len(steps) // 2],
                    steps[-1]})
    lines += ["| term | " + " | ".join(f"step {s}" for s in shown) + " |",
              "|---|" + "---|" * len(shown)]
    for tag in sorted(curves):
      lines.append(f"| {tag} | " + " | ".join(
          f"{curves[tag].get(s, float('nan')):.4g}" for s in shown) + " |")
  lines += ["", "## Held-out metrics per variant (mean ± std over seeds "
            f"{', '.join(map(str, seeds))}; leave-one-out variants: seeds "
            f"{', '.join(map(str, ablation_seeds))})", ""]
  heldout = summary["heldout"]
  reference = heldout.get("default") or next(iter(heldout.values()))
  header = ["recovery_psnr", "gray3_psnr"] + [
      k for k in REPORTED if k != "recovery_psnr"] + ["gray_chroma_dist"]
  header = [k for k in header if f"eval/{k}" in reference]
  lines += ["| variant | " + " | ".join(header) + " |",
            "|---|" + "---|" * len(header)]
  for variant, metrics in heldout.items():
    cells = [f"{metrics[f'eval/{k}'][0]:.3f} ± {metrics[f'eval/{k}'][1]:.3f}"
             for k in header]
    lines.append(f"| {variant} | " + " | ".join(cells) + " |")
  return "\n".join(lines) + "\n"


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
  """The study's command line."""
  parser = argparse.ArgumentParser(
      prog="python -m ihc_jax.tools.loss_study",
      description="Loss-balance study of the colour stage at demo scale.")
  parser.add_argument("--workdir", required=True, help="Where the runs go.")
  parser.add_argument("--seeds", default="0,1",
                      help="Seeds of the default and reconstruction-only "
                      "variants (comma-separated).")
  parser.add_argument("--ablation_seeds", default=None,
                      help="Seeds of the leave-one-out variants (default: "
                      "--seeds).")
  parser.add_argument("--steps", type=int, default=None,
                      help="Colour-stage steps (default: the demo's).")
  parser.add_argument("--variants", default=None,
                      help="Variants to run, comma-separated (default: all), "
                      "e.g. default,-style; `-a-b` switches off terms a and b "
                      "together, `a=w` sets term a's weight to w.")
  return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
  args = parse_args(argv)
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  tf.config.set_visible_devices([], "GPU")
  from configs import demo  # pylint: disable=g-import-not-at-top
  from ihc_jax.trainers import hist  # pylint: disable=g-import-not-at-top
  from ihc_jax.trainers import ihn  # pylint: disable=g-import-not-at-top
  workdir = os.path.abspath(args.workdir)
  ihn.train_and_evaluate(demo.stage_config("ihn"), os.path.join(workdir, "ihn"))
  hist.train_and_evaluate(demo.stage_config("hist"),
                          os.path.join(workdir, "hist"))
  seeds = [int(s) for s in args.seeds.split(",")]
  ablation_seeds = ([int(s) for s in args.ablation_seeds.split(",")]
                    if args.ablation_seeds else seeds)
  config = _study_config(workdir, args.steps)
  chosen = args.variants.split(",") if args.variants else []
  simple = variants(config.loss)
  weights = variants(config.loss, [c for c in chosen if c not in simple
                                   and (c.startswith("-") or "=" in c)])
  if chosen:
    unknown = sorted(set(chosen) - set(weights))
    if unknown:
      raise SystemExit(f"loss_study: unknown variants {unknown}; have "
                       f"{sorted(weights)}")
    weights = {k: weights[k] for k in chosen}
  plan = {name: (w, ablation_seeds if name.startswith("-") else seeds)
          for name, w in weights.items()}
  results = run_variants(config, plan,
                         log_every=max(1, config.num_train_steps // 10),
                         results_dir=os.path.join(workdir, "runs"))
  summary = summarise(results)
  with open(os.path.join(workdir, "loss_study.json"), "w") as f:
    json.dump(summary, f, indent=2)
  text = markdown(summary, seeds, ablation_seeds)
  with open(os.path.join(workdir, "loss_study.md"), "w") as f:
    f.write(text)
  print(text)


if __name__ == "__main__":
  main()
