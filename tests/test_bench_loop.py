"""`python -m ihc_jax.bench loop` on the hist stage at demo size (tiny
network, the demo photos, VGG-free), in one process and in two: the runs
go through `run_stage` for the step counts asked, and the printed lines read
back. Figures only; nothing here asserts a speed."""

import os
import re

import pytest

from ihc_jax.bench import loop as loop_bench
from ihc_jax.bench import train as train_bench
from ihc_jax.trainers import common

_LINE = re.compile(r"^hist +3 steps, sync_every_steps=(\d+) +([0-9.]+) steps/s "
                   r"\(([0-9., ]+); ([0-9.]+)x sync_every_steps=1\)$")


def test_loop_rate_runs_the_loop_for_twice_the_steps_asked(tmp_path):
  config, stage = train_bench.random_frozen_stage("hist")
  workdir = str(tmp_path / "run")
  rate = loop_bench.loop_rate(config, stage, 3, 2, workdir)
  assert rate > 0
  assert common.checkpoint_networks(workdir)[0] == 6
  # The checkpoint at the last step only.
  assert os.listdir(os.path.join(workdir, common.CHECKPOINT_DIR)) == ["6"]
  saved = common.load_stage_config(workdir)
  assert saved.sync_every_steps == 2 and saved.eval.num_batches == 1


@pytest.mark.parametrize("processes", [1, 2])
def test_main_prints_a_line_per_form(processes, capfd):
  loop_bench.main(["--stage", "hist", "--steps", "3",
                   "--repeats", "1", "--sync-every", "1,2",
                   "--processes", str(processes)])
  out = capfd.readouterr().out
  assert out.startswith(f"{processes} process(es)"), out
  lines = [_LINE.match(line) for line in out.splitlines()
           if line.startswith("hist")]
  assert [m and int(m.group(1)) for m in lines] == [1, 2], out
  assert all(float(m.group(2)) > 0 for m in lines)
  assert float(lines[0].group(4)) == 1.0


def test_bad_arguments_are_rejected(capsys):
  for argv, message in (
      (["--sync-every", "1,ten"], "integers separated by commas"),
      (["--sync-every", "0"], "must be >= 1"),
      (["--stage", "color", "--processes", "2"], "runs only")):
    with pytest.raises(SystemExit):
      loop_bench.main(argv)
    assert message in capsys.readouterr().err
