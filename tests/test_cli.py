"""Tests for `ihc-colorize` (ihc_jax.cli) with a tiny RANDOM-weight pipeline.

Random weights on purpose: these tests check files, names, messages and exit
codes. Every colorizing run uses 32 px tiles, a reference plus two random
codes (or the same count of codes) and intermediates where possible, so the
graph compiled by tests/test_inference.py is reused.
"""

import os

import numpy as np
import pytest
from PIL import Image

from ihc_jax import cli
from ihc_jax import inference
from ihc_jax.trainers import defaults


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
  folder = tmp_path_factory.mktemp("weights")
  config = defaults.tiny_model(32)
  variables = inference.init_random_variables(config, image_size=32)
  inference.Pipeline(config, variables, image_size=32).save(folder)
  return str(folder)


def _gray_png(path, h=40, w=56, seed=0):
  rng = np.random.default_rng(seed)
  Image.fromarray((rng.random((h, w)) * 255).astype(np.uint8)).save(path)


def _reference(path):
  rng = np.random.default_rng(9)
  Image.fromarray((rng.random((48, 48, 3)) * 255).astype(np.uint8)).save(path)


def _run(capsys, *argv):
  code = cli.main([str(a) for a in argv])
  captured = capsys.readouterr()
  return code, captured.err


def test_folder_run_continues_after_bad_files(tmp_path, checkpoint, capsys):
  scans = tmp_path / "scans"
  (scans / "sub").mkdir(parents=True)
  _gray_png(scans / "good.png")
  _gray_png(scans / "sub" / "nested.png", seed=1)
  rgba = np.zeros((40, 56, 4), np.uint8)
  rgba[..., 3] = 255
  Image.fromarray(rgba, "RGBA").save(scans / "alpha.png")
  Image.new("CMYK", (56, 40), (0, 0, 0, 128)).save(scans / "cmyk.jpg")
  Image.fromarray(np.full((40, 56), 30000, np.uint16)).save(scans / "g16.png")
  (scans / "empty.png").write_bytes(b"")
  (scans / "text.jpg").write_text("not a picture")
  Image.new("L", (1, 1)).save(scans / "dot.png")
  Image.new("L", (20001, 16)).save(scans / "wide.png")
  data = (scans / "good.png").read_bytes()
  (scans / "cut.png").write_bytes(data[:len(data) // 2])
  Image.fromarray(np.zeros((40, 56, 3), np.uint8)).save(scans / "t.jpg")
  data = (scans / "t.jpg").read_bytes()
  (scans / "t.jpg").write_bytes(data[:len(data) // 2])
  _reference(tmp_path / "ref.png")
  inputs_before = {p: p.read_bytes() for p in scans.rglob("*") if p.is_file()}
  out = tmp_path / "out"

  code, err = _run(capsys, scans, "--checkpoint", checkpoint, "--reference",
                   tmp_path / "ref.png", "--samples", 2, "--out", out,
                   "--intermediates", "--seed", 1, "--tile-batch", 4)
  assert code == 1
  assert "colorized 5 of 11 input(s)" in err
  failed = {line.split(": ")[1]: line for line in err.splitlines()
            if line.startswith("failed: ")}
  assert {os.path.basename(k) for k in failed} == {
      "empty.png", "text.jpg", "dot.png", "wide.png", "cut.png", "t.jpg"}
  reasons = {os.path.basename(k): v for k, v in failed.items()}
  assert "0 bytes" in reasons["empty.png"]
  assert "not an image" in reasons["text.jpg"]
  assert "minimum is 16x16" in reasons["dot.png"]
  assert "limit is 20000" in reasons["wide.png"]
  assert "truncated" in reasons["cut.png"] and "truncated" in reasons["t.jpg"]
  assert "composited on white" in err and "CMYK" in err and "16-bit" in err
  names = sorted(os.path.relpath(p, out) for p in out.rglob("*.png"))
  per_input = 3 + 3 + 3 * 3  # results, shared maps, 3 maps per code
  assert len(names) == 5 * per_input
  for stem in ("good", "alpha", "cmyk", "g16", "sub/nested"):
    for suffix in ("ref", "rand1", "rand2", "ihn_gray", "edges_gray",
                   "edges_halftone", "ref_forward", "rand2_inverse",
                   "rand1_color_halftone"):
      assert f"{stem}_{suffix}.png" in names
  for bad in ("empty", "text", "dot", "wide", "cut", "t"):
    assert not any(n.startswith(bad + "_") for n in names)
  assert not [p for p in out.rglob(".tmp-*")]  # no partial files
  image = np.asarray(Image.open(out / "good_ref.png"))
  assert image.shape == (40, 56, 3) and image.dtype == np.uint8
  assert {p: p.read_bytes() for p in scans.rglob("*") if p.is_file()} == (
      inputs_before)


def test_inputs_never_overwritten(tmp_path, checkpoint, capsys):
  # Output of a.png would be a_rand1.png, which is itself an input here.
  _gray_png(tmp_path / "a.png")
  _gray_png(tmp_path / "a_rand1.png", seed=3)
  _reference(tmp_path / "ref.png")
  before = (tmp_path / "a_rand1.png").read_bytes()
  code, err = _run(capsys, tmp_path / "a.png", tmp_path / "a_rand1.png",
                   "--checkpoint", checkpoint, "--reference",
                   tmp_path / "ref.png", "--samples", 2, "--intermediates",
                   "--tile-batch", 4, "--out", tmp_path, "--quiet")
  assert code == 1
  assert (tmp_path / "a_rand1.png").read_bytes() == before
  assert "refusing to overwrite an input image" in err
  # The failed input left none of its outputs behind (a_ref came first).
  assert not (tmp_path / "a_ref.png").exists()
  assert not (tmp_path / "a_rand2.png").exists()
  assert (tmp_path / "a_rand1_rand2.png").exists()


@pytest.mark.parametrize("case,words", [
    ("no_checkpoint", ["--checkpoint is required"]),
    ("wrong_stage", ["missing", "generator.npz", "fusion.npz"]),
    ("reference_dir", ["reference", "is a directory"]),
    ("reference_missing", ["reference", "no such file"]),
    ("out_under_file", ["cannot create output folder", "non-directory"]),
    ("nothing", ["nothing to do"]),
])
def test_unusable_arguments_exit_2(tmp_path, checkpoint, capsys, case,
                                   words, monkeypatch):
  monkeypatch.delenv(cli.CHECKPOINT_ENV, raising=False)
  _gray_png(tmp_path / "a.png")
  args = [tmp_path / "a.png", "--out", tmp_path / "out", "--checkpoint",
          checkpoint]
  if case == "no_checkpoint":
    args = args[:3]
  elif case == "wrong_stage":
    partial = tmp_path / "partial"
    partial.mkdir()
    for f in ("ihn.npz", "encoder.npz", "pipeline.json"):
      (partial / f).write_bytes((tmp_path / checkpoint / f).read_bytes())
    args[-1] = partial
  elif case == "reference_dir":
    args += ["--reference", tmp_path]
  elif case == "reference_missing":
    args += ["--reference", tmp_path / "nope.png"]
  elif case == "out_under_file":
    args[2] = tmp_path / "a.png" / "out"
  elif case == "nothing":
    args += ["--samples", 0]
  code, err = _run(capsys, *args)
  assert code == 2
  lines = [l for l in err.splitlines() if l.startswith("ihc-colorize: error")]
  assert len(lines) == 1, err
  for word in words:
    assert word in lines[0]


def test_missing_input_and_empty_folder(tmp_path, checkpoint, capsys):
  (tmp_path / "empty").mkdir()
  code, err = _run(capsys, tmp_path / "nope.png", tmp_path / "empty",
                   "--checkpoint", checkpoint, "--out", tmp_path / "o")
  assert code == 1
  assert "nope.png: no such file" in err
  assert "empty: folder holds no image files" in err


def test_screen_period_argument():
  parser = cli.build_parser()
  assert parser.parse_args(["x", "--screen-period", "auto"]).screen_period \
      == "auto"
  assert parser.parse_args(["x", "--screen-period", "4.5"]).screen_period \
      == 4.5
  with pytest.raises(SystemExit):
    parser.parse_args(["x", "--screen-period", "big"])
