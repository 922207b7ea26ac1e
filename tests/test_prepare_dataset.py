"""`ihc-prepare-dataset` writes a resized TFDS data set the `tfds:` source
reads; `python -m ihc_jax.bench data --source` times a source's stream."""

import re

import numpy as np
from PIL import Image

from ihc_jax import input_pipeline
from ihc_jax.bench import data as bench_data
from ihc_jax.tools import prepare_dataset


def _photos(folder, count=5):
  folder.mkdir()
  rng = np.random.default_rng(3)
  for i in range(count):
    pixels = (rng.random((40 + 4 * i, 60, 3)) * 255).astype(np.uint8)
    Image.fromarray(pixels).save(folder / f"photo{i}.png")
  (folder / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
  return folder


def test_prepared_dataset_is_resized_and_readable(tmp_path, capsys):
  photos = _photos(tmp_path / "photos")
  data_dir = str(tmp_path / "tfds")
  status = prepare_dataset.main([
      "--input_dir", str(photos), "--name", "ihc_test_photos",
      "--data_dir", data_dir, "--short_side", "24"])
  output = capsys.readouterr()
  assert status == 0
  assert "wrote 5 images" in output.out and "skipped 1" in output.out
  assert "broken.jpg" in output.err

  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  builder = tfds.builder_from_directory(f"{data_dir}/ihc_test_photos/1.0.0")
  records = list(builder.as_dataset(split="train").as_numpy_iterator())
  assert sorted(r["name"].decode() for r in records) == [
      f"photo{i}.png" for i in range(5)]
  # Short side 24, aspect kept (40x60 -> 24x36, 56x60 -> 24x26).
  assert sorted(r["image"].shape for r in records) == sorted(
      (24, round(60 * 24 / (40 + 4 * i)), 3) for i in range(5))

  config = input_pipeline.default_data_config()
  config.source = "tfds:ihc_test_photos:train"
  config.tfds_data_dir = data_dir
  config.num_eval = 2
  config.image_size = 16
  config.batch_size = 3
  config.eval_batch_size = 2
  config.num_parallel_calls = 1
  train, evaluation = input_pipeline.create_datasets(config, seed=0)
  batch = next(train.as_numpy_iterator())
  assert batch["image"].shape == (3, 16, 16, 3)
  assert 0.0 <= batch["image"].min() and batch["image"].max() <= 1.0
  masks = [b["mask"].tolist() for b in evaluation.as_numpy_iterator()]
  assert masks == [[1.0, 1.0]]


def test_bad_arguments_exit_2(tmp_path, capsys):
  assert prepare_dataset.main([
      "--input_dir", str(tmp_path / "missing"), "--name", "x",
      "--data_dir", str(tmp_path)]) == 2
  assert "does not exist" in capsys.readouterr().err


def test_bench_prints_the_source_throughput(tmp_path, capsys):
  photos = _photos(tmp_path / "photos")
  bench_data.main(["--source", f"folder:{photos}", "--batch", "2",
                   "--size", "16", "--repeats", "1",
                   "--pipeline-batches", "2", "--num-parallel-calls", "1"])
  out = capsys.readouterr().out
  match = re.search(r"^input pipeline: ([0-9.]+) images/s", out, re.M)
  assert match and float(match.group(1)) > 0, out
  assert re.search(r"input pipeline CPU: [0-9.]+ ms per image", out)
