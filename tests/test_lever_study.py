"""`ihc_jax.tools.lever_study`: its command lines, parsing and table (the
metric values are made up here; training is covered by the stage tests)."""

import json
import os
import sys

import pytest

from ihc_jax.tools import lever_study


def test_parse_lever():
  assert lever_study.parse_lever(
      "chroma+jitter=model.generator.luma=input; augment.gain=0.1") == (
          "chroma+jitter", ["model.generator.luma=input", "augment.gain=0.1"])
  assert lever_study.parse_lever("paper=") == ("paper", [])
  for bad in ("noequals", "=a=b", "x=key", "a/b=k=v"):
    with pytest.raises(ValueError):
      lever_study.parse_lever(bad)


def test_command_points_the_stage_at_the_frozen_chain():
  cmd = lever_study.command("configs/cpu_quality.py", 2, "color", "/r/q0",
                            "/r/lev/x/s2", ["augment.gain=0.1"], 100)
  assert cmd[:3] == [sys.executable, "-m", "ihc_jax.main"]
  assert "--config=configs/cpu_quality.py:2" in cmd
  assert "--config.stage_order=('color',)" in cmd
  assert "--config.stages.color.frozen.ihn=/r/q0/ihn" in cmd
  assert "--config.stages.color.frozen.histogram=/r/q0/hist" in cmd
  assert "--config.stages.color.num_train_steps=100" in cmd
  assert cmd[-1] == "--config.stages.color.augment.gain=0.1"
  fusion = lever_study.command("c.py", 0, "fusion", "/q", "/o", [], None)
  assert "--config.stages.fusion.frozen.encoder=/q/color" in fusion
  assert not any("num_train_steps" in a for a in fusion)


def test_frozen_stages_per_seed(tmp_path, monkeypatch):
  calls = []

  def fake_run(cmd, check):
    calls.append(cmd)
    run_dir = next(a for a in cmd if a.startswith("--workdir="))[10:]
    seed = int(run_dir[-1])
    _finished(tmp_path, "x", seed, recovery_psnr=20.0 + seed, gray3_psnr=19.0,
              self_transfer_psnr=21.0, reference_chroma_dist=1.0,
              gray_chroma_dist=2.0, random_luma_psnr=1.0, ihn_gray_psnr=1.0,
              random_difference=0.1, random_washed=0.0)

  monkeypatch.setattr(lever_study.subprocess, "run", fake_run)
  lever_study.main(["--workdir", str(tmp_path), "--frozen", "/runs/q{seed}",
                    "--seeds", "1,2", "--lever", "x=augment.gain=0.1"])
  assert [c for c in calls[0] if "frozen.ihn" in c] == [
      "--config.stages.color.frozen.ihn=/runs/q1/ihn"]
  assert [c for c in calls[1] if "frozen.ihn" in c] == [
      "--config.stages.color.frozen.ihn=/runs/q2/ihn"]
  # Finished runs are reused: a second study trains nothing.
  lever_study.main(["--workdir", str(tmp_path), "--frozen", "/runs/q{seed}",
                    "--seeds", "1,2", "--lever", "x=augment.gain=0.1"])
  assert len(calls) == 2


def _finished(tmp_path, lever, seed, **metrics):
  stage_dir = tmp_path / lever / f"s{seed}" / "color"
  stage_dir.mkdir(parents=True)
  (stage_dir / "metrics_summary.json").write_text(json.dumps(
      {"stage": "color", "step": 1,
       "metrics": {f"eval/{k}": v for k, v in metrics.items()}}))


def test_summary_of_finished_runs(tmp_path, capsys):
  base = dict(gray3_psnr=20.0, self_transfer_psnr=22.0,
              reference_chroma_dist=16.0, gray_chroma_dist=20.0,
              random_luma_psnr=27.0, ihn_gray_psnr=28.0,
              random_difference=0.05, random_washed=0.0)
  _finished(tmp_path, "a", 0, recovery_psnr=21.0, **base)
  _finished(tmp_path, "a", 1, recovery_psnr=22.0, **base)
  lever_study.main(["--workdir", str(tmp_path), "--frozen", "/unused",
                    "--seeds", "0,1", "--lever", "a=augment.gain=0.1",
                    "--summary_only"])
  with open(os.path.join(tmp_path, "lever_study.json")) as f:
    summary = json.load(f)["summary"]["a"]
  assert summary["recovery dB"] == [21.5, 21.0, 22.0]
  assert summary["- gray3 dB"] == [1.5, 1.0, 2.0]
  assert summary["- self transfer dB"] == [-0.5, -1.0, 0.0]
  assert summary["ref. chroma / gray's"] == pytest.approx([0.8, 0.8, 0.8])
  assert summary["random luma - IHN gray dB"] == [-1.0, -1.0, -1.0]
  assert summary["seeds"] == 2
  assert "| a | 2 | 21.5 (21 to 22) | 1.5 (1 to 2) |" in capsys.readouterr().out
  with pytest.raises(SystemExit, match="no finished run"):
    lever_study.main(["--workdir", str(tmp_path / "none"), "--frozen", "/f",
                      "--lever", "b=", "--summary_only"])
