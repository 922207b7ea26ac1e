"""The catalogue of installed photographs (`source="photos"`).

The Debian packages may be missing where the suite runs (CI on a fresh
machine): the tests that need their files hide or fake them explicitly.
"""

import os

import numpy as np
from PIL import Image
import pytest

from ihc_jax import input_pipeline
from ihc_jax.data import demo
from ihc_jax.data import photos
from ihc_jax.data import sources


def test_catalogue_is_consistent():
  names = photos.PHOTO_NAMES
  assert len(set(names)) == len(names) == 35
  assert list(names) == sorted(names)
  # Every demo photo is in it, with the demo's held-out three held out here.
  assert set(demo.DEMO_NAMES) <= set(names)
  assert set(demo.EVAL_NAMES) <= set(photos.EVAL_NAMES)
  assert set(photos.EVAL_NAMES) <= set(names)
  assert not set(photos.EVAL_NAMES) & set(photos.TRAIN_NAMES)
  # At least a fifth held out.
  assert len(photos.EVAL_NAMES) * 5 >= len(names)
  for photo in photos.PHOTOS:
    assert photo.licence and photo.kind in ("python", "debian")
    # The maintainers' evaluation photos are never listed.
    assert "lomiri" not in photo.package and "lomiri" not in photo.path
    if photo.kind == "debian":
      assert os.path.isabs(photo.path) and photo.author


def test_licences_are_documented():
  docs = os.path.join(os.path.dirname(os.path.dirname(__file__)), "docs",
                      "data.md")
  with open(docs) as f:
    text = f.read()
  for photo in photos.DEBIAN_PHOTOS:
    assert photo.name in text, photo.name


def test_missing_package_is_named_and_left_out(monkeypatch):
  missing = photos.DEBIAN_PHOTOS[0]
  real_isfile = os.path.isfile
  monkeypatch.setattr(os.path, "isfile",
                      lambda p: False if p == missing.path else real_isfile(p))
  with pytest.raises(FileNotFoundError, match=missing.package):
    photos.photo_path(missing.name)
  assert missing.name not in photos.available_names("all")
  assert missing.package in photos.install_command()
  with pytest.raises(KeyError, match="unknown photo"):
    photos.photo_path("no_such_photo")
  with pytest.raises(ValueError, match="split"):
    photos.available_names("test")


def _fake_debian(monkeypatch, tmp_path):
  """Writes a small JPEG for every Debian photo and points the catalogue
  at them (the packages need not be installed)."""
  rng = np.random.default_rng(0)
  fakes = []
  for photo in photos.DEBIAN_PHOTOS:
    path = tmp_path / f"{photo.name}.jpg"
    Image.fromarray(rng.integers(0, 255, (48, 80, 3), np.uint8)).save(path)
    fakes.append(photos.Photo(photo.name, photo.package, photo.kind,
                              str(path), photo.licence, photo.author))
  by_name = {p.name: p for p in fakes}
  monkeypatch.setattr(photos, "PHOTOS", tuple(
      by_name.get(p.name, p) for p in photos.PHOTOS))
  monkeypatch.setattr(photos, "DEBIAN_PHOTOS", tuple(fakes))


def test_photos_source_splits_and_limits(monkeypatch, tmp_path):
  _fake_debian(monkeypatch, tmp_path)
  config = input_pipeline.default_data_config()
  config.update(source="photos", image_size=32)
  built = sources.build_sources(config, 0, 1)
  assert sorted(built.evaluation.stems) == list(photos.EVAL_NAMES)
  assert sorted(built.train.stems) == list(photos.TRAIN_NAMES)
  assert built.eval_counts == [len(photos.EVAL_NAMES)]
  # Fewer training photos, evenly spaced; the held-out set is unchanged.
  config.num_train_images = 8
  built = sources.build_sources(config, 0, 1)
  assert len(built.train) == 8
  assert set(built.train.stems) <= set(photos.TRAIN_NAMES)
  assert sorted(built.evaluation.stems) == list(photos.EVAL_NAMES)
  for bad in (0, 27):
    config.num_train_images = bad
    with pytest.raises(ValueError, match="num_train_images"):
      sources.build_sources(config, 0, 1)


def test_photos_source_streams_crops(monkeypatch, tmp_path):
  _fake_debian(monkeypatch, tmp_path)
  config = input_pipeline.default_data_config()
  config.update(source="photos", image_size=32, batch_size=4,
                eval_batch_size=4)
  train, evaluation = input_pipeline.create_datasets(config, seed=0,
                                                     start_step=0)
  batch = next(train.as_numpy_iterator())
  assert batch["image"].shape == (4, 32, 32, 3)
  assert 0.0 <= batch["image"].min() and batch["image"].max() <= 1.0
  seen = sum(float(b["mask"].sum()) for b in evaluation.as_numpy_iterator())
  assert seen == len(photos.EVAL_NAMES)


def test_main_lists_photos_and_the_install_line(capsys, monkeypatch, tmp_path):
  _fake_debian(monkeypatch, tmp_path)
  assert photos.main() == 0
  out = capsys.readouterr().out
  assert "35 of 35 photos installed (9 held out)" in out
  missing = photos.DEBIAN_PHOTOS[-1]
  os.remove(missing.path)
  assert photos.main() == 1
  out = capsys.readouterr().out
  assert f"MISSING (package {missing.package})" in out
  assert "apt-get install" in out
