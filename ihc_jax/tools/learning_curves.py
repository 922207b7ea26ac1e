"""Held-out learning curves of training runs, as PNG plots and a table.

Every stage appends its held-out metrics to `<workdir>/eval_history.jsonl`
at each evaluation (`trainers.loop.append_eval_history`). This tool reads
the histories of several runs, groups them (one group per setting, one run
per seed), and plots a metric and its gap to a trivial answer:

  python -m ihc_jax.tools.learning_curves --stage=color \\
      --group="all photos=runs/s0,runs/s1,runs/s2" \\
      --group="8 photos=runs/p8_s0,runs/p8_s1,runs/p8_s2" \\
      --output=docs/images/curves_color.png

* against steps: each group's mean over seeds, with its min-max band;
* against the groups (e.g. the number of training photos): the gap at the
  last step, mean and min-max over seeds, when `--by_group` is given.

A group's runs may be chain workdirs (the stage's subfolder is used) or
stage workdirs. The table printed holds each group's final mean and spread.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
from typing import Sequence

import numpy as np

# (metric, trivial answer) per stage; the gap is metric - trivial answer.
PAIRS = {
    "ihn": ("ihn_psnr", "blur_baseline_psnr"),
    "color": ("recovery_psnr", "gray3_psnr"),
    "fusion": ("fusion_psnr", "best_input_psnr"),
}


@dataclasses.dataclass
class Curve:
  """One run's held-out history: steps and metric name -> values."""
  steps: np.ndarray
  values: dict[str, np.ndarray]


def read_history(workdir: str, stage: str | None = None) -> Curve:
  """The eval history of a stage workdir, or of `stage` in a chain workdir.

  A step evaluated twice (a restart) keeps its last line.

  Raises:
    FileNotFoundError: no `eval_history.jsonl` there.
    ValueError: a line that is not a {"step", "metrics"} record.
  """
  path = os.path.join(workdir, "eval_history.jsonl")
  if stage and not os.path.exists(path):
    path = os.path.join(workdir, stage, "eval_history.jsonl")
  if not os.path.exists(path):
    raise FileNotFoundError(
        f"no eval_history.jsonl in {workdir!r}"
        + (f" or its {stage!r} subfolder" if stage else "")
        + ": was the run evaluated (eval.every_steps)?")
  by_step: dict[int, dict[str, float]] = {}
  with open(path) as f:
    for number, line in enumerate(f, 1):
      if not line.strip():
        continue
      try:
        record = json.loads(line)
        by_step[int(record["step"])] = {
            k.removeprefix("eval/"): float(v)
            for k, v in record["metrics"].items()}
      except (ValueError, KeyError, TypeError) as error:
        raise ValueError(f"{path}:{number}: not an eval record ({error})"
                         ) from None
  steps = np.array(sorted(by_step))
  names = sorted(set.intersection(*(set(m) for m in by_step.values())))
  return Curve(steps, {n: np.array([by_step[s][n] for s in steps])
                       for n in names})


def series(curve: Curve, stage: str) -> dict[str, np.ndarray]:
  """The stage's metric and its gap to the trivial answer."""
  metric, trivial = PAIRS[stage]
  missing = [n for n in (metric, trivial) if n not in curve.values]
  if missing:
    raise KeyError(f"eval history lacks {missing}; it has "
                   f"{sorted(curve.values)}")
  return {metric: curve.values[metric],
          f"gap to {trivial}": curve.values[metric] - curve.values[trivial]}


def group_stats(curves: Sequence[Curve], stage: str
                ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
  """Steps common to all runs, and per series [3, steps]: mean, min, max."""
  common = sorted(set.intersection(*(set(c.steps.tolist()) for c in curves)))
  if not common:
    raise ValueError("the runs of a group share no evaluated step")
  stats = {}
  for curve in curves:
    index = [int(np.where(curve.steps == s)[0][0]) for s in common]
    for name, values in series(curve, stage).items():
      stats.setdefault(name, []).append(values[index])
  return np.array(common), {
      name: np.stack([np.mean(v, 0), np.min(v, 0), np.max(v, 0)])
      for name, v in ((n, np.array(v)) for n, v in stats.items())}


def plot(groups: dict[str, list[Curve]], stage: str, output: str,
         by_group: bool) -> list[str]:
  """Writes the PNG; returns the table's markdown lines."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  from matplotlib import pyplot as plt  # pylint: disable=g-import-not-at-top
  computed = {label: group_stats(curves, stage)
              for label, curves in groups.items()}
  names = list(next(iter(computed.values()))[1])
  columns = len(names) + (1 if by_group else 0)
  fig, axes = plt.subplots(1, columns, figsize=(5 * columns, 3.8),
                           squeeze=False)
  table = ["| group | seeds | " + " | ".join(names) + " |",
           "|---" * (len(names) + 2) + "|"]
  for label, (steps, stats) in computed.items():
    for axis, name in zip(axes[0], names):
      mean, low, high = stats[name]
      axis.plot(steps, mean, marker="o", label=label)
      axis.fill_between(steps, low, high, alpha=0.2)
      axis.set_xlabel("step")
      axis.set_title(f"{stage}: {name} (dB)", fontsize=10)
    table.append(f"| {label} | {len(groups[label])} | " + " | ".join(
        f"{stats[n][0, -1]:.2f} ({stats[n][1, -1]:.2f} to "
        f"{stats[n][2, -1]:.2f})" for n in names) + " |")
  for axis in axes[0][:len(names)]:
    axis.axhline(0.0, color="gray", linewidth=0.5) if "gap" in (
        axis.get_title()) else None
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8)
  if by_group:
    axis = axes[0][-1]
    labels = list(computed)
    gap = names[-1]  # the gap to the trivial answer: one scale, zero line
    final = np.array([computed[g][1][gap][:, -1] for g in labels])
    axis.errorbar(range(len(labels)), final[:, 0],
                  yerr=[final[:, 0] - final[:, 1], final[:, 2] - final[:, 0]],
                  marker="o", capsize=4, label=gap)
    axis.axhline(0.0, color="gray", linewidth=0.5)
    axis.set_xticks(range(len(labels)), labels)
    axis.set_title(f"{stage}: {gap} at the last step (dB)", fontsize=10)
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8)
  fig.tight_layout()
  os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
  fig.savefig(output, dpi=100)
  plt.close(fig)
  return table


def parse_group(spec: str) -> tuple[str, list[str]]:
  """'label=dir1,dir2' -> (label, [dir1, dir2])."""
  label, sep, dirs = spec.partition("=")
  paths = [d for d in dirs.split(",") if d]
  if not sep or not label or not paths:
    raise ValueError(f"--group must be 'label=dir1[,dir2...]', got {spec!r}")
  return label, paths


def main(argv: Sequence[str] | None = None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--stage", default="color", choices=sorted(PAIRS))
  parser.add_argument("--group", action="append", default=[], required=True,
                      help="label=workdir[,workdir...]: the seeds of one "
                      "setting")
  parser.add_argument("--output", default="learning_curves.png",
                      help="PNG path")
  parser.add_argument("--by_group", action="store_true",
                      help="add a panel of the final gap by group (e.g. the "
                      "number of training photos)")
  args = parser.parse_args(argv)
  groups = {}
  for spec in args.group:
    label, paths = parse_group(spec)
    groups[label] = [read_history(p, args.stage) for p in paths]
  table = plot(groups, args.stage, args.output, args.by_group)
  print("\n".join(table))
  print(f"Wrote {args.output}")


if __name__ == "__main__":
  main()
