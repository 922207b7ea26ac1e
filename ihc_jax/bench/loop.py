"""The training loop's speed per host-check interval: `python -m ihc_jax.bench loop`.

  python -m ihc_jax.bench loop [--stage all] [--sync-every 1,10]
      [--steps N] [--warmup 2] [--repeats 3] [--processes 1]

Runs `run_stage` itself, on the demo config of each stage (the demo photos
through tf.data, random frozen networks as `bench train`), once per
`config.sync_every_steps` value: how often the host reads the steps'
non-finite flags and, with several processes, how often the processes agree
on SIGTERM (a collective). Logs, samples, the evaluation (one batch) and the
checkpoint come only at the last step, so every step in between is a step
whose host work that interval decides.

Steps/s of a form = `--steps` / (seconds of a run of `--warmup + --steps`
steps - seconds of a run of `--warmup` steps), each in a fresh workdir: the
start-up, the data pipeline's first batches, the final evaluation and save
cancel, and compiling happens once (the first run; later runs hit JAX's
cache). The forms run interleaved in each repeat; the medians are printed.

`--processes P` starts P processes on localhost (gloo collectives, one CPU
device each) that run the same runs in step; process 0 prints. Only stages
without frozen networks (ihn, hist) run on several processes here: the
random frozen checkpoints would have to live on a file system all processes
share.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from typing import Any

from ihc_jax import distributed

STAGES = ("hist", "ihn", "color", "fusion")
MULTI_PROCESS_STAGES = ("hist", "ihn")
# About 5-10 s of steps on a 2-core CPU, well above the run-to-run spread of
# the fixed costs that the difference cancels.
DEFAULT_STEPS = {"hist": 400, "ihn": 20, "color": 20, "fusion": 20}


def run_seconds(config: Any, stage: Any, num_steps: int, sync_every: int,
                workdir: str) -> float:
  """Wall seconds of `run_stage` for `num_steps` steps in a fresh `workdir`.

  Every periodic action (log, sample, evaluation of one batch, checkpoint)
  happens once, at the last step. The loop's progress lines are dropped.
  """
  from ihc_jax.trainers import common  # pylint: disable=g-import-not-at-top
  config = config.copy_and_resolve_references()
  config.num_train_steps = num_steps
  config.sync_every_steps = sync_every
  for section in (config.log, config.eval, config.checkpoint):
    section.every_steps = num_steps
  config.log.sample_every_steps = num_steps
  config.eval.num_batches = 1
  start = time.perf_counter()
  with contextlib.redirect_stdout(io.StringIO()):
    common.run_stage(config, workdir, stage)
  return time.perf_counter() - start


def measure(name: str, forms: Sequence[int], steps: int, warmup: int,
            repeats: int, root: str) -> dict[int, list[float]]:
  """Steps/s of each `sync_every_steps` form of stage `name`, per repeat."""
  from ihc_jax.bench import train as train_bench  # pylint: disable=g-import-not-at-top
  config, stage = train_bench.random_frozen_stage(name)
  rates: dict[int, list[float]] = {form: [] for form in forms}
  run_seconds(config, stage, warmup, forms[0],
              os.path.join(root, f"{name}-compile"))
  for repeat in range(repeats):
    for form in forms:
      prefix = os.path.join(root, f"{name}-every{form}-{repeat}")
      short = run_seconds(config, stage, warmup, form, prefix + "-short")
      long = run_seconds(config, stage, warmup + steps, form, prefix + "-long")
      rates[form].append(steps / max(long - short, 1e-9))
  return rates


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _launch(argv: Sequence[str], processes: int) -> None:
  """Runs this benchmark in `processes` processes; relays process 0's output."""
  port = _free_port()
  with tempfile.TemporaryDirectory() as root:
    children = []
    for index in range(processes):
      command = [sys.executable, "-m", "ihc_jax.bench", "loop", *argv,
                 f"--process-id={index}", f"--root={root}",
                 f"--coordinator=127.0.0.1:{port}"]
      children.append(subprocess.Popen(
          command, stdout=None if index == 0 else subprocess.DEVNULL,
          env=dict(os.environ, JAX_PLATFORMS="cpu")))
    codes = [child.wait() for child in children]
  if any(codes):
    sys.exit(f"bench loop: the processes exited with {codes}")


def _parse(argv: Sequence[str]) -> argparse.Namespace:
  parser = argparse.ArgumentParser(prog="python -m ihc_jax.bench loop",
                                   description=__doc__.split("\n")[0])
  parser.add_argument("--stage", default="all", choices=STAGES + ("all",))
  parser.add_argument("--sync-every", default="1,10",
                      help="comma-separated config.sync_every_steps values")
  parser.add_argument("--steps", type=int, default=None,
                      help="timed steps per run (the difference of two "
                      f"runs); default per stage {DEFAULT_STEPS}")
  parser.add_argument("--warmup", type=int, default=2,
                      help="steps of the shorter run")
  parser.add_argument("--repeats", type=int, default=3)
  parser.add_argument("--processes", type=int, default=1)
  # Set by `_launch` for its children.
  parser.add_argument("--process-id", type=int, default=None,
                      help=argparse.SUPPRESS)
  parser.add_argument("--root", default=None, help=argparse.SUPPRESS)
  parser.add_argument("--coordinator", default=None, help=argparse.SUPPRESS)
  args = parser.parse_args(list(argv))
  try:
    args.forms = [int(x) for x in args.sync_every.split(",")]
  except ValueError:
    parser.error(f"--sync-every must be integers separated by commas, got "
                 f"{args.sync_every!r}")
  if min(args.forms) < 1 or (args.steps or 1) < 1 or args.warmup < 1:
    parser.error("--sync-every values, --steps and --warmup must be >= 1")
  args.stages = STAGES if args.stage == "all" else (args.stage,)
  if args.processes > 1:
    if args.stage == "all":
      args.stages = MULTI_PROCESS_STAGES
    elif args.stage not in MULTI_PROCESS_STAGES:
      parser.error(f"--processes > 1 runs only {MULTI_PROCESS_STAGES} (no "
                   f"frozen networks to share), got --stage {args.stage}")
  return args


def main(argv: Sequence[str]) -> None:
  """Parses `argv`, runs the stages and prints one line per stage and form."""
  args = _parse(argv)
  if args.processes > 1 and args.process_id is None:
    _launch(argv, args.processes)
    return
  if args.processes > 1:
    # Before anything touches a device.
    distributed.initialize(args.coordinator, args.processes, args.process_id)
  import jax  # pylint: disable=g-import-not-at-top
  with contextlib.ExitStack() as stack:
    root = args.root or stack.enter_context(tempfile.TemporaryDirectory())
    print(f"{jax.process_count()} process(es), {jax.device_count()} x "
          f"{jax.devices()[0].device_kind}; median of {args.repeats}; "
          f"load average "
          f"{os.getloadavg()[0]:.2f}", flush=True)
    for name in args.stages:
      steps = args.steps or DEFAULT_STEPS[name]
      rates = measure(name, args.forms, steps, args.warmup, args.repeats,
                      root)
      base = statistics.median(rates[args.forms[0]])
      for form in args.forms:
        median = statistics.median(rates[form])
        print(f"{name:7s} {steps} steps, sync_every_steps={form:<4d} "
              f"{median:8.2f} steps/s "
              f"({', '.join(f'{r:.2f}' for r in rates[form])}; "
              f"{median / base:.3f}x sync_every_steps={args.forms[0]})",
              flush=True)
    print(f"load average {os.getloadavg()[0]:.2f}", flush=True)
