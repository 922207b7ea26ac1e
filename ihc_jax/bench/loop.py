"""The training loop's speed per host-check interval: `python -m ihc_jax.bench loop`.

  python -m ihc_jax.bench loop [--stage all] [--sync-every 1,10]
      [--steps N] [--repeats 3] [--processes 1]

Runs `run_stage` itself, on the demo config of each stage (the demo photos
through tf.data, random frozen networks as `bench train`), once per
`config.sync_every_steps` value: how often the host reads the steps'
non-finite flags and, with several processes, how often the processes agree
on SIGTERM (a collective).

Each run has `2 * --steps` steps in a fresh workdir and logs at the middle
and the end; a form's steps/s is the loop's own progress figure for the
second half (steps between the two logs over the seconds between them).
Start-up, compiling (only in the first run; later runs hit JAX's cache) and
the data pipeline's first batches fall in the first half; samples, the
evaluation (one batch) and the checkpoint come after the last log. So the
timed steps are steps whose host work only that interval decides. The forms
run interleaved in each repeat; the medians are printed.

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
import re
import socket
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from typing import Any

from ihc_jax import distributed

STAGES = ("hist", "ihn", "color", "fusion")
MULTI_PROCESS_STAGES = ("hist", "ihn")
# About 5-10 s of timed steps per run on a 2-core CPU.
DEFAULT_STEPS = {"hist": 400, "ihn": 20, "color": 20, "fusion": 20}


def loop_rate(config: Any, stage: Any, steps: int, sync_every: int,
              workdir: str) -> float:
  """Steps/s of the second half of a `2 * steps`-step `run_stage` run.

  The run (in a fresh `workdir`) logs at steps `steps` and `2 * steps`; the
  rate is the loop's own progress line at the second log, i.e. the steps
  between the two logs over the seconds between them: start-up, compiling
  and the data pipeline's first batches fall in the first half. Samples, the
  evaluation (one batch) and the checkpoint come at the last step, after that
  line. NaN on a process that prints no progress (not process 0).
  """
  from ihc_jax.trainers import common  # pylint: disable=g-import-not-at-top
  config = config.copy_and_resolve_references()
  config.num_train_steps = 2 * steps
  config.sync_every_steps = sync_every
  config.log.every_steps = steps
  for section in (config.eval, config.checkpoint):
    section.every_steps = 2 * steps
  config.log.sample_every_steps = 2 * steps
  config.eval.num_batches = 1
  printed = io.StringIO()
  with contextlib.redirect_stdout(printed):
    common.run_stage(config, workdir, stage)
  last = re.findall(rf"step {2 * steps}/{2 * steps} +([0-9.]+) steps/s",
                    printed.getvalue())
  return float(last[-1]) if last else float("nan")


def measure(name: str, forms: Sequence[int], steps: int, repeats: int,
            root: str) -> dict[int, list[float]]:
  """Steps/s of each `sync_every_steps` form of stage `name`, per repeat."""
  from ihc_jax.bench import train as train_bench  # pylint: disable=g-import-not-at-top
  config, stage = train_bench.random_frozen_stage(name)
  rates: dict[int, list[float]] = {form: [] for form in forms}
  for repeat in range(repeats):
    for form in forms:
      rates[form].append(loop_rate(
          config, stage, steps, form,
          os.path.join(root, f"{name}-every{form}-{repeat}")))
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
                      help="timed steps per run (after as many untimed); "
                      f"default per stage {DEFAULT_STEPS}")
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
  if min(args.forms) < 1 or (args.steps or 1) < 1:
    parser.error("--sync-every values and --steps must be >= 1")
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
      rates = measure(name, args.forms, steps, args.repeats, root)
      base = statistics.median(rates[args.forms[0]])
      for form in args.forms:
        median = statistics.median(rates[form])
        print(f"{name:7s} {steps} steps, sync_every_steps={form:<4d} "
              f"{median:8.2f} steps/s "
              f"({', '.join(f'{r:.2f}' for r in rates[form])}; "
              f"{median / base:.3f}x sync_every_steps={args.forms[0]})",
              flush=True)
    print(f"load average {os.getloadavg()[0]:.2f}", flush=True)
