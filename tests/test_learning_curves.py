"""`ihc_jax.tools.learning_curves` on histories written by the loop's
own `append_eval_history` (made-up metric values, stated per test)."""

import json
import os

import numpy as np
from PIL import Image
import pytest

from ihc_jax.tools import learning_curves
from ihc_jax.trainers import loop


def _run(tmp_path, name, values):
  """A chain workdir whose color stage has eval lines (step, rec, gray3)."""
  stage_dir = tmp_path / name / "color"
  stage_dir.mkdir(parents=True)
  for step, rec, gray3 in values:
    loop.append_eval_history(str(stage_dir), step, {
        "eval/recovery_psnr": rec, "eval/gray3_psnr": gray3})
  return str(tmp_path / name)


def test_read_history_keeps_the_last_line_of_a_step(tmp_path):
  run = _run(tmp_path, "a", [(100, 18.0, 17.0), (200, 19.0, 17.0),
                             (200, 19.5, 17.0)])
  curve = learning_curves.read_history(run, "color")
  np.testing.assert_array_equal(curve.steps, [100, 200])
  np.testing.assert_allclose(curve.values["recovery_psnr"], [18.0, 19.5])
  gap = learning_curves.series(curve, "color")["gap to gray3_psnr"]
  np.testing.assert_allclose(gap, [1.0, 2.5])


def test_group_stats_mean_and_band_over_common_steps(tmp_path):
  runs = [_run(tmp_path, "s0", [(100, 18.0, 17.0), (200, 20.0, 17.0)]),
          _run(tmp_path, "s1", [(100, 19.0, 17.0), (200, 21.0, 18.0),
                                (300, 22.0, 18.0)])]
  curves = [learning_curves.read_history(r, "color") for r in runs]
  steps, stats = learning_curves.group_stats(curves, "color")
  np.testing.assert_array_equal(steps, [100, 200])
  np.testing.assert_allclose(stats["recovery_psnr"][:, 1], [20.5, 20.0, 21.0])
  np.testing.assert_allclose(stats["gap to gray3_psnr"][:, 1],
                             [3.0, 3.0, 3.0])


def test_plot_writes_a_png_and_the_table(tmp_path):
  many = [_run(tmp_path, f"all{s}", [(100, 18.0 + s, 17.0),
                                     (200, 20.0 + s, 17.0)]) for s in (0, 1)]
  few = [_run(tmp_path, f"few{s}", [(100, 17.0, 17.0), (200, 17.5 + s, 17.0)])
         for s in (0, 1)]
  groups = {"all": [learning_curves.read_history(r, "color") for r in many],
            "8": [learning_curves.read_history(r, "color") for r in few]}
  output = str(tmp_path / "out" / "curves.png")
  table = learning_curves.plot(groups, "color", output, by_group=True)
  with Image.open(output) as image:
    assert image.size[0] > 1000 and image.size[1] > 300
  assert table[2].startswith("| all | 2 | 20.50 (20.00 to 21.00)")
  assert "| 8 | 2 | 18.00 (17.50 to 18.50) | 1.00 (0.50 to 1.50) |" in table


def test_errors_name_the_problem(tmp_path):
  with pytest.raises(FileNotFoundError, match="eval_history.jsonl"):
    learning_curves.read_history(str(tmp_path), "color")
  bad = tmp_path / "bad"
  bad.mkdir()
  (bad / "eval_history.jsonl").write_text('{"step": 1}\n')
  with pytest.raises(ValueError, match="eval_history.jsonl:1"):
    learning_curves.read_history(str(bad))
  run = _run(tmp_path, "ihn_only", [(100, 18.0, 17.0)])
  with pytest.raises(KeyError, match="ihn_psnr"):
    learning_curves.series(learning_curves.read_history(run, "color"), "ihn")
  for spec in ("nolabel", "=dir", "label="):
    with pytest.raises(ValueError, match="--group"):
      learning_curves.parse_group(spec)
  assert learning_curves.parse_group("8 photos=a,b") == ("8 photos", ["a", "b"])


def test_history_lines_are_json(tmp_path):
  loop.append_eval_history(str(tmp_path), 5, {"eval/x": np.float32(1.5)})
  with open(os.path.join(tmp_path, loop.EVAL_HISTORY)) as f:
    assert json.loads(f.readline()) == {"step": 5, "metrics": {"eval/x": 1.5}}


def test_command_line(tmp_path, capsys):
  # The tools parse their own arguments: importable side by side.
  from ihc_jax.tools import heldout_grid  # pylint: disable=unused-import
  run = _run(tmp_path, "a", [(100, 18.0, 17.0), (200, 19.0, 17.5)])
  output = str(tmp_path / "c.png")
  learning_curves.main(["--stage=color", f"--group=a={run}", f"--output={output}",
                        "--by_group"])
  assert os.path.getsize(output) > 0
  assert "| a | 1 | 19.00 (19.00 to 19.00) | 1.50" in capsys.readouterr().out
  with pytest.raises(SystemExit):
    learning_curves.main(["--stage=color"])
