"""Tests for ihc_jax.input_pipeline: sources, determinism, resume, sharding."""

import math
import os
import time

from etils import epath
import jax
import numpy as np
from PIL import Image
import pytest
import tensorflow_datasets as tfds

from ihc_jax import input_pipeline

SIZE = 16


def _config(**overrides):
  config = input_pipeline.default_data_config()
  config.image_size = SIZE
  config.batch_size = 2
  config.eval_batch_size = 2
  config.num_parallel_calls = 1
  for key, value in overrides.items():
    config[key] = value
  return config


def _take(dataset, count):
  iterator = dataset.as_numpy_iterator()
  return [next(iterator) for _ in range(count)]


def _flat(path, value, size=(20, 24)):
  """Writes a flat colour image whose red channel identifies it."""
  array = np.zeros(size + (3,), np.uint8)
  array[..., 0] = value
  array[..., 1] = 255 - value
  array[..., 2] = 7
  Image.fromarray(array).save(path)


def _ids(images):
  """Red values (x255) of flat images, one per image."""
  return [int(round(float(image[..., 0].mean()) * 255)) for image in images]


def _real_images(evaluation):
  """The unmasked eval images of a host, in order."""
  return [image for batch in evaluation.as_numpy_iterator()
          for image, mask in zip(batch["image"], batch["mask"]) if mask > 0]


@pytest.fixture(scope="module")
def flat_folder(tmp_path_factory):
  root = tmp_path_factory.mktemp("flat")
  os.makedirs(root / "sub")
  values = [10 * (i + 1) for i in range(10)]
  for i, value in enumerate(values):
    # Half in a sub-folder, and mixed-case extensions: the walk is recursive.
    folder = root / "sub" if i % 2 else root
    ext = ".PNG" if i % 3 == 0 else ".png"
    _flat(str(folder / f"img{i:02d}{ext}"), value)
  return str(root), values


def test_demo_shapes_ranges_and_keys():
  train, evaluation = input_pipeline.create_datasets(_config(), seed=0)
  batch = _take(train, 1)[0]
  assert sorted(batch) == ["image", "reference"]
  for value in batch.values():
    assert value.shape == (2, SIZE, SIZE, 3)
    assert value.dtype == np.float32
    assert 0.0 <= value.min() and value.max() <= 1.0
  eval_batches = list(evaluation.as_numpy_iterator())
  # Three held-out demo photographs: full batches of 2, the last one padded.
  assert [b["image"].shape[0] for b in eval_batches] == [2, 2]
  np.testing.assert_array_equal(
      np.concatenate([b["mask"] for b in eval_batches]), [1, 1, 1, 0])
  np.testing.assert_array_equal(eval_batches[-1]["image"][1], 0.0)
  # The reference stream is a different stream than the image stream.
  assert not np.array_equal(batch["image"], batch["reference"])


def test_same_seed_same_batches_other_seed_differs():
  first = _take(input_pipeline.create_datasets(_config(), seed=3)[0], 3)
  second = _take(input_pipeline.create_datasets(_config(), seed=3)[0], 3)
  other = _take(input_pipeline.create_datasets(_config(), seed=4)[0], 3)
  for a, b in zip(first, second):
    np.testing.assert_array_equal(a["image"], b["image"])
    np.testing.assert_array_equal(a["reference"], b["reference"])
  assert not np.array_equal(first[0]["image"], other[0]["image"])


def test_start_step_resumes_exactly():
  config = _config(batch_size=4)
  fresh = _take(input_pipeline.create_datasets(config, seed=7)[0], 6)
  resumed = _take(
      input_pipeline.create_datasets(config, seed=7, start_step=4)[0], 2)
  # 6 batches of 4 cross the 8-image epoch boundary of the demo train set.
  for a, b in zip(fresh[4:], resumed):
    np.testing.assert_array_equal(a["image"], b["image"])
    np.testing.assert_array_equal(a["reference"], b["reference"])


def test_resume_skips_without_decoding(flat_folder, monkeypatch):
  root, _ = flat_folder
  config = _config(source=f"folder:{root}", eval_source=f"folder:{root}",
                   batch_size=1)
  calls = []
  real = input_pipeline._Picker.candidate
  monkeypatch.setattr(input_pipeline._Picker, "candidate",
                      lambda *args: calls.append(args[1]) or real(*args))
  train, _ = input_pipeline.create_datasets(config, seed=0, start_step=10**6)
  next(train.as_numpy_iterator())
  # A million skipped elements, yet only a few (prefetched) files planned
  # for decoding, all of them at or after the start.
  assert 0 < len(calls) < 50
  assert min(calls) >= 10**6


def test_folder_epoch_is_a_permutation(flat_folder):
  root, values = flat_folder
  config = _config(source=f"folder:{root}", eval_source=f"folder:{root}",
                   batch_size=5, random_flip=False)
  batches = _take(input_pipeline.create_datasets(config, seed=1)[0], 4)
  ids = [_ids(b["image"]) for b in batches]
  assert sorted(ids[0] + ids[1]) == values
  assert sorted(ids[2] + ids[3]) == values
  assert ids[0] + ids[1] != ids[2] + ids[3]  # reshuffled per epoch


def test_per_host_shards_disjoint_and_complete(flat_folder):
  root, values = flat_folder
  config = _config(source=f"folder:{root}", eval_source=f"folder:{root}",
                   batch_size=3, eval_batch_size=3)
  train_shards, eval_shards = [], []
  for host in range(3):
    train, evaluation = input_pipeline.create_datasets(
        config, seed=0, process_index=host, process_count=3)
    shard_size = len(range(host, 10, 3))
    train_shards.append(sorted(
        sum((_ids(b["image"]) for b in _take(train, shard_size)), [])))
    eval_shards.append(sorted(_ids(_real_images(evaluation))))
    # Every host runs the same eval steps: 2 batches of 1 (4 = ceil(10/3)).
    assert [b["mask"].shape for b in evaluation.as_numpy_iterator()] == [
        (1,)] * 4
  for shards in (train_shards, eval_shards):
    assert sorted(sum(shards, [])) == values
    assert [len(s) for s in shards] == [4, 3, 3]
    assert all(len(set(s)) == len(s) for s in shards)


def test_tiny_source_on_many_hosts_is_read_whole():
  config = _config(batch_size=16, eval_batch_size=16)
  train, evaluation = input_pipeline.create_datasets(
      config, seed=0, process_index=15, process_count=16)
  assert _take(train, 1)[0]["image"].shape == (1, SIZE, SIZE, 3)
  # Eval is still split (each image counts once): host 15 of 16 has none of
  # the 3 held-out images and runs one all-padding step like the others.
  batches = list(evaluation.as_numpy_iterator())
  assert [b["mask"].tolist() for b in batches] == [[0.0]]
  first = input_pipeline.create_datasets(
      config, seed=0, process_index=2, process_count=16)[1]
  assert [b["mask"].tolist() for b in first.as_numpy_iterator()] == [[1.0]]


def test_global_batch_must_divide():
  with pytest.raises(ValueError, match="divisible"):
    input_pipeline.create_datasets(_config(batch_size=3), seed=0,
                                   process_index=0, process_count=2)


@pytest.mark.parametrize("source, message", [
    ("imagenet", "unknown data source"),
    ("folder:", "needs a path"),
    ("folder:/does/not/exist", "does not exist"),
])
def test_bad_sources(source, message):
  with pytest.raises((ValueError, FileNotFoundError), match=message):
    input_pipeline.create_datasets(_config(source=source), seed=0)


def test_folder_without_eval_needs_num_eval(flat_folder):
  root, _ = flat_folder
  with pytest.raises(ValueError, match="num_eval"):
    input_pipeline.create_datasets(_config(source=f"folder:{root}"), seed=0)
  # With num_eval the held-out files leave the train set.
  config = _config(source=f"folder:{root}", num_eval=3, batch_size=7)
  train, evaluation = input_pipeline.create_datasets(config, seed=0)
  held_out = _ids(_real_images(evaluation))
  trained = _ids(_take(train, 1)[0]["image"])
  # Sorted by relative path: img00, img02, ..., img08, sub/img01, ...;
  # evenly spaced positions 0, 4, 9 are img00, img08, sub/img09.
  assert sorted(held_out) == [10, 90, 100]
  assert sorted(trained + held_out) == list(range(10, 101, 10))


def test_corrupt_files_are_skipped_and_counted(tmp_path):
  input_pipeline.reset_skipped_files()
  for i, value in enumerate((40, 80, 120)):
    _flat(str(tmp_path / f"good{i}.jpg"), value, size=(32, 32))
  good = np.zeros((32, 32, 3), np.uint8)
  Image.fromarray(good).save(tmp_path / "full.jpg", quality=95)
  data = (tmp_path / "full.jpg").read_bytes()
  (tmp_path / "full.jpg").unlink()
  (tmp_path / "truncated.jpg").write_bytes(data[:len(data) // 2])
  (tmp_path / "empty.png").write_bytes(b"")
  (tmp_path / "notes.png").write_text("this is not an image")
  config = _config(source=f"folder:{tmp_path}",
                   eval_source=f"folder:{tmp_path}", eval_batch_size=4)
  train, evaluation = input_pipeline.create_datasets(config, seed=0)
  # 6 files in batches of 4 -> 2 full batches; the 3 unreadable files and
  # 2 padding elements are masked out.
  masks = np.concatenate([b["mask"] for b in evaluation.as_numpy_iterator()])
  assert masks.shape == (8,) and masks.sum() == 3
  train_ids = sum((_ids(b["image"]) for b in _take(train, 6)), [])
  # JPEG is lossy: flat colours come back within a few levels.
  assert all(min(abs(i - v) for v in (40, 80, 120)) <= 3 for i in train_ids)
  skipped = input_pipeline.skipped_files()
  assert sorted(os.path.basename(p) for p in skipped) == [
      "empty.png", "notes.png", "truncated.jpg"]
  assert input_pipeline.num_skipped_files() == 3


def test_decode_gray_rgba_and_16_bit(tmp_path):
  gray = np.full((4, 4), 51, np.uint8)
  Image.fromarray(gray).save(tmp_path / "gray.png")
  rgba = np.zeros((4, 4, 4), np.uint8)
  rgba[...] = (255, 0, 0, 51)  # 20 % opaque red on white
  Image.fromarray(rgba, "RGBA").save(tmp_path / "rgba.png")
  deep = np.full((4, 4), 32768, np.uint16)
  Image.fromarray(deep).save(tmp_path / "deep.png")
  decoded = {name: input_pipeline.decode_image(
      (tmp_path / f"{name}.png").read_bytes())
             for name in ("gray", "rgba", "deep")}
  np.testing.assert_array_equal(decoded["gray"], np.full((4, 4, 3), 51))
  # 0.2 * (255, 0, 0) + 0.8 * 255 = (255, 204, 204).
  np.testing.assert_array_equal(decoded["rgba"][0, 0], [255, 204, 204])
  np.testing.assert_allclose(decoded["deep"], 32768 / 65535, rtol=1e-6)
  assert decoded["deep"].shape == (4, 4, 3)


def test_jpeg_draft_decoding_keeps_the_short_side(tmp_path):
  Image.fromarray(np.full((64, 96, 3), 90, np.uint8)).save(
      tmp_path / "big.jpg")
  data = (tmp_path / "big.jpg").read_bytes()
  # A 1/4-scale decode keeps the short side at 16 >= 13; 1/8 would give 8.
  assert input_pipeline.decode_image(data, 13).shape == (16, 24, 3)
  assert input_pipeline.decode_image(data).shape == (64, 96, 3)


def test_resize_short_side_and_antialias():
  stripes = np.zeros((40, 80, 3), np.uint8)
  stripes[:, ::2] = 255
  resized = input_pipeline.resize_short_side(stripes, 10)
  assert resized.shape == (10, 20, 3)
  # Antialiased: 1-pixel stripes average out to mid gray, no aliasing.
  assert abs(float(resized.mean()) - 127.5) < 3
  assert resized.max() - resized.min() < 20


def _example_folder(tmp_path, pairs):
  images = tmp_path / "images"
  examples = tmp_path / "examples"
  images.mkdir()
  examples.mkdir()
  stems = {"a_cat": 30, "b": 60, "c": 90}  # a stem with "_" on purpose
  for stem, value in stems.items():
    _flat(str(images / f"{stem}.png"), value)
  for target, reference in pairs:
    # The example's red channel encodes the pair.
    _flat(str(examples / f"{target}_{reference}.png"),
          stems[target] + stems[reference] // 30)
  return images, examples, stems


def test_examples_loaded_by_name(tmp_path):
  pairs = [(t, r) for t in ("a_cat", "b", "c") for r in ("a_cat", "b", "c")]
  images, examples, _ = _example_folder(tmp_path, pairs)
  config = _config(source=f"folder:{images}", eval_source=f"folder:{images}",
                   example_dir=str(examples), batch_size=3, eval_batch_size=3)
  train, evaluation = input_pipeline.create_datasets(config, seed=0)
  eval_batches = list(evaluation.as_numpy_iterator())
  assert all(b["mask"].all() for b in eval_batches)
  for batch in _take(train, 3) + eval_batches:
    assert batch["example"].shape == batch["image"].shape
    expected = [i + r // 30 for i, r in zip(_ids(batch["image"]),
                                            _ids(batch["reference"]))]
    assert _ids(batch["example"]) == expected


def test_missing_example_falls_back_to_existing_pair(tmp_path):
  pairs = [("a_cat", "c"), ("b", "c"), ("c", "a_cat")]
  images, examples, stems = _example_folder(tmp_path, pairs)
  config = _config(source=f"folder:{images}", eval_source=f"folder:{images}",
                   example_dir=str(examples), batch_size=3)
  train, _ = input_pipeline.create_datasets(config, seed=0)
  only_reference = {stems[t]: stems[r] for t, r in pairs}
  for batch in _take(train, 3):
    for image, reference in zip(_ids(batch["image"]),
                                _ids(batch["reference"])):
      assert only_reference[image] == reference
  os.remove(examples / "b_c.png")
  with pytest.raises(ValueError, match="no example"):
    input_pipeline.create_datasets(config, seed=0)


class IhcTinyImages(tfds.core.GeneratorBasedBuilder):
  """A tiny local TFDS data set: 8 flat images, built from code in the test."""

  VERSION = tfds.core.Version("1.0.0")
  # tests/ is no package; tell TFDS where the (absent) metadata files live.
  pkg_dir_path = epath.Path(os.path.dirname(os.path.abspath(__file__)))

  def _info(self):
    return self.dataset_info_from_configs(
        features=tfds.features.FeaturesDict(
            {"image": tfds.features.Image(shape=(None, None, 3))}))

  def _split_generators(self, dl_manager):
    del dl_manager
    return {"train": self._generate_examples()}

  def _generate_examples(self):
    for i in range(8):
      array = np.zeros((18, 20, 3), np.uint8)
      array[..., 0] = 10 * (i + 1)
      yield i, {"image": array}


def test_tfds_source_from_local_build(tmp_path):
  data_dir = str(tmp_path / "tfds")
  config = _config(source="tfds:ihc_tiny_images:train", num_eval=2,
                   tfds_data_dir=data_dir, shuffle_buffer=8)
  with pytest.raises(FileNotFoundError, match="tfds build"):
    input_pipeline.create_datasets(config, seed=0)
  IhcTinyImages(data_dir=data_dir).download_and_prepare()
  train, evaluation = input_pipeline.create_datasets(config, seed=0)
  eval_ids = _ids(_real_images(evaluation))
  # train[:2] in TFDS's stored order (it shuffles records when building).
  assert len(set(eval_ids)) == 2
  batches = _take(train, 6)
  train_ids = sum((_ids(b["image"]) for b in batches), [])
  # Two epochs over the other 6 records.
  rest = sorted(set(range(10, 90, 10)) - set(eval_ids))
  assert sorted(train_ids[:6]) == rest and sorted(train_ids[6:]) == rest
  resumed = _take(
      input_pipeline.create_datasets(config, seed=0, start_step=4)[0], 2)
  for a, b in zip(batches[4:], resumed):
    np.testing.assert_array_equal(a["image"], b["image"])
    np.testing.assert_array_equal(a["reference"], b["reference"])


def test_shard_batch_builds_global_arrays():
  mesh = jax.sharding.Mesh(np.array(jax.devices()), ("data",))
  batch = {"image": np.arange(2 * 3 * 3 * 3, dtype=np.float32).reshape(
      2, 3, 3, 3)}
  sharded = input_pipeline.shard_batch(batch, mesh)
  assert isinstance(sharded["image"], jax.Array)
  np.testing.assert_array_equal(np.asarray(sharded["image"]), batch["image"])
  assert sharded["image"].sharding.spec == jax.sharding.PartitionSpec("data")
  with pytest.raises(ValueError, match="no axis"):
    input_pipeline.shard_batch(batch, mesh, data_axis="model")


def test_measure_pipeline_counts_the_timed_images_and_their_time():
  config = _config(batch_size=2)
  begin = time.perf_counter()
  rate = input_pipeline.measure_pipeline(config, 3, warmup_batches=1)
  elapsed = time.perf_counter() - begin
  # Three timed batches of two images; the warm-up batch is not counted.
  assert rate.num_images == 3 * 2
  # The timed part lies inside this call.
  assert 0 < rate.seconds <= elapsed
  assert math.isfinite(rate.cpu_ms_per_image) and rate.cpu_ms_per_image > 0


def test_benchmark_pipeline_is_the_measured_rate(monkeypatch):
  calls = []

  def measure(data_config, num_batches, *, seed, warmup_batches):
    calls.append((data_config, num_batches, seed, warmup_batches))
    return input_pipeline.PipelineRate(3.0, 10, 0.8)  # 12.5 images/s

  monkeypatch.setattr(input_pipeline, "measure_pipeline", measure)
  config = _config()
  assert input_pipeline.benchmark_pipeline(config, 5, seed=3,
                                           warmup_batches=1) == 12.5
  assert calls == [(config, 5, 3, 1)]
