"""Tests for the `ihc-halftone` command line tool on a real photograph."""

import math
import os
import pathlib
import subprocess
import sys

import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from ihc_jax import halftone
from ihc_jax.halftone import cli

skimage_data = pytest.importorskip("skimage.data")
REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def photo_path(tmp_path_factory):
  path = tmp_path_factory.mktemp("photos") / "astronaut.png"
  Image.fromarray(skimage_data.astronaut()).save(path)
  return path


def _read(path):
  return np.asarray(Image.open(path), np.float32) / 255.0


def test_am_on_astronaut(photo_path, tmp_path):
  out = tmp_path / "am.png"
  assert cli.main([str(photo_path), str(out), "--method", "am", "--period", "3",
                   "--angle", "45"]) == 0
  result = _read(out)
  gray = _read(photo_path) @ np.array([0.299, 0.587, 0.114], np.float32)
  assert result.shape == (512, 512)
  # Official tone curve: the halftone's mean is pi/4 of the photo's.
  assert abs(result.mean() - math.pi / 4 * gray.mean()) < 0.02
  period, angle = halftone.estimate_screen(result)
  assert abs(period - 3.0) < 0.15 and abs(angle - 45.0) < 2.25
  assert not list(tmp_path.glob(".*tmp"))  # no temporary file left behind


@pytest.mark.parametrize("flags,kernel", [
    (["--method", "bayer", "--size", "4"], None),
    (["--method", "fs", "--serpentine"], "floyd_steinberg"),
    (["--method", "jarvis"], "jarvis"),
])
def test_binary_methods_match_the_library(tmp_path, flags, kernel):
  crop = tmp_path / "crop.png"
  Image.fromarray(skimage_data.astronaut()[100:164, 180:260]).save(crop)
  out = tmp_path / "out.png"
  assert cli.main([str(crop), str(out)] + flags) == 0
  gray = jnp.asarray(np.asarray(Image.open(crop).convert("L"), np.float32)
                     / 255.0)[None, :, :, None]
  if kernel is None:
    expected = halftone.ordered_dither(gray, size=4)
  else:
    expected = halftone.error_diffusion(gray, kernel=kernel,
                                        serpentine="--serpentine" in flags)
  np.testing.assert_array_equal(_read(out), np.asarray(expected)[0, :, :, 0])


def test_color_halftone(photo_path, tmp_path):
  out = tmp_path / "color.png"
  assert cli.main([str(photo_path), str(out), "--color", "--period", "3.5",
                   "--angles", "15,75,0"]) == 0
  result = _read(out)
  assert result.shape == (512, 512, 3)
  assert abs(halftone.estimate_screen(result[..., 0])[1] - 15.0) < 1.0
  assert abs(halftone.estimate_screen(result[..., 1])[1] - 75.0) < 1.0


def test_folder_mode_keeps_going_past_bad_files(tmp_path, capsys):
  source = tmp_path / "in"
  (source / "sub").mkdir(parents=True)
  crop = skimage_data.astronaut()[:40, :48]
  Image.fromarray(crop).save(source / "a.png")
  Image.fromarray(crop).save(source / "sub" / "b.jpg")
  (source / "sub" / "broken.png").write_bytes(b"not an image at all")
  (source / "notes.txt").write_text("skipped")
  target = tmp_path / "out"
  assert cli.main([str(source), str(target), "--method", "bayer"]) == 1
  assert sorted(p.relative_to(target).as_posix() for p in target.rglob("*")
                if p.is_file()) == ["a.png", "sub/b.png"]
  assert _read(target / "sub" / "b.png").shape == (40, 48)
  errors = [line for line in capsys.readouterr().err.splitlines()
            if "error" in line]
  assert len(errors) == 1 and "broken.png" in errors[0]


def test_refuses_missing_input_and_overwriting_it(photo_path, tmp_path, capsys):
  assert cli.main([str(tmp_path / "missing.png"), str(tmp_path / "o.png")]) == 1
  assert "missing.png" in capsys.readouterr().err
  copy = tmp_path / "copy.png"
  copy.write_bytes(photo_path.read_bytes())
  before = copy.read_bytes()
  assert cli.main([str(copy), str(copy)]) == 1
  assert "overwrite" in capsys.readouterr().err
  assert copy.read_bytes() == before


def test_runs_as_a_module(tmp_path):
  crop = tmp_path / "crop.png"
  Image.fromarray(skimage_data.astronaut()[:32, :32]).save(crop)
  env = dict(os.environ, PYTHONPATH=str(REPO_ROOT), JAX_PLATFORMS="cpu")
  result = subprocess.run(
      [sys.executable, "-m", "ihc_jax.halftone.cli", str(crop),
       str(tmp_path / "out.png"), "--method", "am", "--period", "3",
       "--angle", "30"], env=env, capture_output=True, text=True, check=False)
  assert result.returncode == 0, result.stderr
  assert _read(tmp_path / "out.png").shape == (32, 32)
