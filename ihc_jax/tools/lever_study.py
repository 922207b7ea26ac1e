"""Levers of one stage, each over several seeds, on the same frozen stages.

    python -m ihc_jax.tools.lever_study --workdir=runs/levers \\
        --frozen=runs/q0 --seeds=0,1,2 \\
        --lever="paper=model.generator.luma=learned" \\
        --lever="chroma=model.generator.luma=input" \\
        --lever="chroma+jitter=model.generator.luma=input;augment.gain=0.1"

(run from the repository root.) Each lever is a name and `;`-separated
overrides of the stage's config (`key=value`, keys relative to
`config.stages.<stage>`). Every lever x seed trains the stage alone with
`python -m ihc_jax.main --config=<config>:<seed>`, its frozen networks taken
from the chain workdir `--frozen` (e.g. the IHN and H of a quality run; a
`{seed}` in it is replaced by the seed, so that every seed of every lever
uses that seed's own frozen stages), in
`<workdir>/<lever>/s<seed>`; a finished run is reused. Then it writes
`<workdir>/lever_study.md` and `.json`: each lever's held-out figures, mean
and (min to max) over seeds, against the stage's trivial answers. The tables
of docs/training.md ("Levers") come from here.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from collections.abc import Sequence

import numpy as np

# (column, how it is computed from eval metrics m) per stage.
COLUMNS = {
    "color": (
        ("recovery dB", lambda m: m["recovery_psnr"]),
        ("- gray3 dB", lambda m: m["recovery_psnr"] - m["gray3_psnr"]),
        ("- self transfer dB",
         lambda m: m["recovery_psnr"] - m["self_transfer_psnr"]),
        ("ref. chroma / gray's",
         lambda m: m["reference_chroma_dist"] / m["gray_chroma_dist"]),
        ("random luma - IHN gray dB",
         lambda m: m["random_luma_psnr"] - m["ihn_gray_psnr"]),
        ("random difference", lambda m: m["random_difference"]),
        ("washed", lambda m: m["random_washed"]),
    ),
    "ihn": (
        ("IHN dB", lambda m: m["ihn_psnr"]),
        ("- blur dB", lambda m: m["ihn_psnr"] - m["blur_baseline_psnr"]),
    ),
    "fusion": (
        ("F dB", lambda m: m["fusion_psnr"]),
        ("- better input dB", lambda m: m["fusion_psnr"] - m["best_input_psnr"]),
    ),
}
FROZEN_STAGES = {"ihn": (), "color": ("ihn", "hist"),
                 "fusion": ("ihn", "color")}
FROZEN_KEYS = {"ihn": ("ihn",), "hist": ("histogram",),
               "color": ("encoder", "generator")}


def parse_lever(spec: str) -> tuple[str, list[str]]:
  """'name=key=value;key=value' -> (name, ['key=value', ...])."""
  name, sep, rest = spec.partition("=")
  overrides = [o.strip() for o in rest.split(";") if o.strip()]
  if not sep or not name or any("=" not in o for o in overrides):
    raise ValueError(
        f"--lever must be 'name=key=value[;key=value...]', got {spec!r}")
  if "/" in name or name.startswith("."):
    raise ValueError(f"a lever name is a folder name, got {name!r}")
  return name, overrides


def command(config: str, seed: int, stage: str, frozen: str, run_dir: str,
            overrides: Sequence[str], steps: int | None) -> list[str]:
  """The `ihc_jax.main` command line of one lever x seed."""
  args = [sys.executable, "-m", "ihc_jax.main", f"--config={config}:{seed}",
          f"--workdir={run_dir}", f"--config.stage_order=('{stage}',)"]
  for frozen_stage in FROZEN_STAGES[stage]:
    for key in FROZEN_KEYS[frozen_stage]:
      args.append(f"--config.stages.{stage}.frozen.{key}="
                  f"{os.path.join(frozen, frozen_stage)}")
  if steps:
    args.append(f"--config.stages.{stage}.num_train_steps={steps}")
  args += [f"--config.stages.{stage}.{o}" for o in overrides]
  return args


def final_metrics(run_dir: str, stage: str) -> dict[str, float] | None:
  """The stage's summary metrics (without 'eval/'), None if unfinished."""
  path = os.path.join(run_dir, stage, "metrics_summary.json")
  if not os.path.exists(path):
    return None
  with open(path) as f:
    metrics = json.load(f)["metrics"]
  return {k.removeprefix("eval/"): float(v) for k, v in metrics.items()}


def summarise(results: dict[str, list[dict[str, float]]], stage: str
              ) -> dict[str, dict[str, list[float]]]:
  """lever -> column -> [mean, min, max] over its seeds, and "seeds" -> the
  number of finished runs."""
  out = {}
  for lever, runs in results.items():
    out[lever] = {"seeds": len(runs)}
    for column, fn in COLUMNS[stage]:
      values = np.array([fn(m) for m in runs])
      out[lever][column] = [float(values.mean()), float(values.min()),
                            float(values.max())]
  return out


def markdown(summary: dict, seeds: Sequence[int], stage: str) -> str:
  names = [c for c, _ in COLUMNS[stage]]
  lines = [f"Stage `{stage}`, seeds {list(seeds)}: mean (min to max).", "",
           "| lever | seeds | " + " | ".join(names) + " |",
           "|---" * (len(names) + 2) + "|"]
  for lever, columns in summary.items():
    lines.append(f"| {lever} | {columns['seeds']} | " + " | ".join(
        f"{columns[n][0]:.3g} ({columns[n][1]:.3g} to {columns[n][2]:.3g})"
        for n in names) + " |")
  return "\n".join(lines) + "\n"


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--workdir", required=True)
  parser.add_argument("--frozen", default="",
                      help="chain workdir holding the frozen stages")
  parser.add_argument("--config", default="configs/cpu_quality.py")
  parser.add_argument("--stage", default="color", choices=sorted(COLUMNS))
  parser.add_argument("--seeds", default="0,1,2")
  parser.add_argument("--steps", type=int, default=None)
  parser.add_argument("--lever", action="append", default=[], required=True)
  parser.add_argument("--summary_only", action="store_true",
                      help="tabulate the finished runs, train nothing")
  args = parser.parse_args(argv)
  if FROZEN_STAGES[args.stage] and not args.frozen:
    parser.error(f"--frozen is needed for stage {args.stage!r}")
  return args


def main(argv: Sequence[str] | None = None) -> None:
  args = parse_args(argv)
  seeds = [int(s) for s in args.seeds.split(",") if s]
  levers = dict(parse_lever(spec) for spec in args.lever)
  results = {}
  for lever, overrides in levers.items():
    results[lever] = []
    for seed in seeds:
      run_dir = os.path.join(args.workdir, lever, f"s{seed}")
      if final_metrics(run_dir, args.stage) is None and not args.summary_only:
        cmd = command(args.config, seed, args.stage,
                      args.frozen.replace("{seed}", str(seed)), run_dir,
                      overrides, args.steps)
        print(" ".join(cmd), flush=True)
        subprocess.run(cmd, check=True)
      metrics = final_metrics(run_dir, args.stage)
      if metrics is not None:
        results[lever].append(metrics)
  results = {k: v for k, v in results.items() if v}
  if not results:
    raise SystemExit("no finished run to tabulate")
  summary = summarise(results, args.stage)
  text = markdown(summary, seeds, args.stage)
  os.makedirs(args.workdir, exist_ok=True)
  with open(os.path.join(args.workdir, "lever_study.md"), "w") as f:
    f.write(text)
  with open(os.path.join(args.workdir, "lever_study.json"), "w") as f:
    json.dump({"seeds": seeds, "levers": levers, "summary": summary,
               "runs": results}, f, indent=2)
  print(text)


if __name__ == "__main__":
  main()
