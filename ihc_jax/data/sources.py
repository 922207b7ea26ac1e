"""Data sources of the input pipeline and their per-host shards.

A source spec (`data.source`, `reference_source`, `eval_source`) is `demo`,
`photos`, `folder:<path>` or `tfds:<name>[:<split>]` (see
`ihc_jax.input_pipeline`). The two catalogues of installed photographs
(`demo`, `photos`) and folders become an `IndexedSource` (records addressed by
index, decoded by PIL on demand); TFDS splits a `TfdsSource` (encoded
records read in order). `build_sources` splits off the held-out set and
gives each host its shard: train shards are strided (a source smaller than
the number of hosts is read whole by every host), eval shards always are,
and `eval_steps` says how many eval batches every host runs.
"""

import dataclasses
import functools
import os
import threading
from typing import Any, Callable, NamedTuple, Sequence

from absl import logging
import ml_collections
import numpy as np
import tensorflow as tf

from ihc_jax import image_io
from ihc_jax.data import crops
from ihc_jax.data import demo
from ihc_jax.data import photos
from ihc_jax.data import skips
from ihc_jax.data import tf_setup  # pylint: disable=unused-import


@dataclasses.dataclass
class IndexedSource:
  """Records addressed by index: in-memory arrays or image files.

  Attributes:
    stems: one name per record (file stem or demo name), used for examples.
    items: per record a uint8 array (demo) or a file path.
    image_size: S; records are resized so that their short side is S.
    cache: keep resized arrays of files in memory.
  """
  stems: list[str]
  items: list[Any]
  image_size: int
  cache: bool

  def __post_init__(self):
    self._lock = threading.Lock()
    self._cached: dict[int, np.ndarray] = {}
    self._bad: set[int] = set()

  def __len__(self) -> int:
    return len(self.items)

  def subset(self, indices: Sequence[int]) -> "IndexedSource":
    return IndexedSource([self.stems[i] for i in indices],
                          [self.items[i] for i in indices],
                          self.image_size, self.cache)

  def load(self, index: int) -> np.ndarray | None:
    """The record resized to short side S, or None if it is unreadable."""
    with self._lock:
      if index in self._cached:
        return self._cached[index]
      if index in self._bad:
        return None
    item = self.items[index]
    keep = True
    if isinstance(item, np.ndarray):
      array = crops.resize_short_side(item, self.image_size)
    else:
      keep = self.cache
      try:
        with open(item, "rb") as f:
          array = crops.resize_short_side(
              image_io.decode_image(f.read(), self.image_size),
              self.image_size)
      except image_io.DECODE_ERRORS as error:
        skips.record(item, f"{type(error).__name__}: {error}")
        with self._lock:
          self._bad.add(index)
        return None
    if keep:
      with self._lock:
        self._cached[index] = array
    return array


@dataclasses.dataclass
class TfdsSource:
  """A split of a prepared TFDS data set, read as encoded images.

  Attributes:
    builder: the TFDS builder.
    split: the split (or sub-split) to read.
    image_key: the feature holding the image.
    image_size: S.
    cache: cache the encoded records in memory.
  """
  builder: Any
  split: Any
  image_key: str
  image_size: int
  cache: bool

  def encoded(self) -> tf.data.Dataset:
    """Encoded image bytes in the split's stored order."""
    import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
    dataset = self.builder.as_dataset(
        split=self.split, shuffle_files=False,
        decoders={self.image_key: tfds.decode.SkipDecoding()})
    dataset = dataset.map(lambda example: example[self.image_key])
    if self.cache:
      dataset = dataset.cache()
    return dataset

  def load_bytes(self, data: bytes, record: str) -> np.ndarray | None:
    """Decoded, resized record `data`, or None (logged as `record`)."""
    try:
      return crops.resize_short_side(
          image_io.decode_image(data, self.image_size), self.image_size)
    except image_io.DECODE_ERRORS as error:
      skips.record(record, f"{type(error).__name__}: {error}")
      return None


# Catalogues of photographs that installed packages ship, with a fixed split.
CATALOGUES = {"demo": demo, "photos": photos}


def _parse_source(spec: str) -> tuple[str, str, str | None]:
  if not isinstance(spec, str) or not spec:
    raise ValueError(f"data source must be a non-empty string, got {spec!r}")
  if spec in CATALOGUES:
    return spec, "", None
  if spec.startswith("folder:"):
    path = spec[len("folder:"):]
    if not path:
      raise ValueError("data source 'folder:' needs a path: folder:<path>")
    return "folder", path, None
  if spec.startswith("tfds:"):
    parts = spec[len("tfds:"):].split(":", 1)
    if not parts[0]:
      raise ValueError(
          "data source 'tfds:' needs a name: tfds:<name>[:<split>]")
    return "tfds", parts[0], parts[1] if len(parts) > 1 else "train"
  raise ValueError(
      f"unknown data source {spec!r}; use 'demo', 'photos', 'folder:<path>' or "
      "'tfds:<name>[:<split>]'")


def _tfds_builder(name: str, data_config: ml_collections.ConfigDict) -> Any:
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  data_dir = data_config.get("tfds_data_dir")
  builder = tfds.builder(name, data_dir=data_dir)
  if not builder.is_prepared():
    if data_config.get("tfds_download", False):
      logging.info("Preparing TFDS data set %s in %s", name, builder.data_dir)
      builder.download_and_prepare()
    else:
      raise FileNotFoundError(
          f"TFDS data set {name!r} is not prepared in {builder.data_dir!r}. "
          f"Prepare it first with `tfds build {name} --data_dir="
          f"{data_dir or '<tfds_data_dir>'}` (nothing is downloaded "
          "implicitly), or set data.tfds_download=True to allow it.")
  return builder


def _tfds_image_key(builder: Any) -> str:
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  features = builder.info.features
  if "image" in features.keys():
    return "image"
  for key in sorted(features.keys()):
    if isinstance(features[key], tfds.features.Image):
      return key
  raise ValueError(
      f"TFDS data set {builder.name!r} has no image feature (features: "
      f"{sorted(features.keys())})")


def _evenly_spaced(count: int, total: int) -> list[int]:
  return sorted(set(np.round(np.linspace(0, total - 1, count)).astype(int)))


def _shard(indices: Sequence[int], process_index: int,
           process_count: int) -> list[int]:
  return list(indices)[process_index::process_count]


def _host_counts(held_out: Any, process_count: int) -> list[int]:
  """Number of eval records each host reads (its shard of `held_out`)."""
  if isinstance(held_out, IndexedSource):
    return [len(_shard(range(len(held_out)), p, process_count))
            for p in range(process_count)]
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  builder, split = held_out.builder, held_out.split
  return [builder.info.splits[tfds.split_for_jax_process(
      split, process_index=p, process_count=process_count)].num_examples
          for p in range(process_count)]


def eval_steps(host_counts: Sequence[int], host_batch: int,
               drop_remainder: bool) -> int:
  """Eval batches every host runs, so that all of them run the same number.

  Args:
    host_counts: eval records per host.
    host_batch: per-host eval batch.
    drop_remainder: drop what does not fill a batch on every host.

  Returns:
    ceil(max(counts) / batch) (hosts with fewer records pad with masked
    elements), or with `drop_remainder` floor(min(counts) / batch).
  """
  if drop_remainder:
    return min(host_counts) // host_batch
  return -(-max(host_counts) // host_batch)


def _indexed(kind: str, arg: str, image_size: int,
             cache: bool) -> IndexedSource:
  if kind == "demo":
    pairs = demo.demo_images("all")
    return IndexedSource([n for n, _ in pairs], [a for _, a in pairs],
                         image_size, True)
  if kind == "photos":
    # Large files decoded once, kept at short side S.
    pairs = photos.photo_files("all")
    return IndexedSource([n for n, _ in pairs], [p for _, p in pairs],
                         image_size, True)
  paths = [os.path.abspath(p) for p in image_io.list_image_files(arg)]
  if not paths:
    raise ValueError(
        f"image folder {arg!r} holds no files with extensions "
        f"{image_io.IMAGE_EXTENSIONS}")
  stems = [os.path.splitext(os.path.basename(p))[0] for p in paths]
  return IndexedSource(stems, paths, image_size, cache)


def _catalogue_split(full: IndexedSource, kind: str,
                     split: str) -> IndexedSource:
  """The photographs of catalogue `kind`'s `split` ("train" or "eval")."""
  return full.subset([full.stems.index(n)
                      for n in CATALOGUES[kind].available_names(split)])


@dataclasses.dataclass(frozen=True)
class _Settings:
  """The fields of the data config that every source is built with."""
  config: ml_collections.ConfigDict
  size: int
  cache: bool
  num_eval: int

  @classmethod
  def of(cls, data_config: ml_collections.ConfigDict) -> "_Settings":
    return cls(data_config, int(data_config.image_size),
               bool(data_config.get("cache", False)),
               int(data_config.get("num_eval", -1)))

  def indexed(self, kind: str, arg: str) -> IndexedSource:
    return _indexed(kind, arg, self.size, self.cache)

  def tfds(self, name: str, split: Any) -> TfdsSource:
    builder = _tfds_builder(name, self.config)
    return TfdsSource(builder, split, _tfds_image_key(builder), self.size,
                      self.cache)


def _limit_train(train: IndexedSource, settings: _Settings) -> IndexedSource:
  """The first `data.num_train_images` of `train`, evenly spaced (-1: all)."""
  count = int(settings.config.get("num_train_images", -1))
  if count == -1 or count == len(train):
    return train
  if not 0 < count < len(train):
    raise ValueError(
        f"data.num_train_images must be -1 or in [1, {len(train)}] (the "
        f"train photos of {settings.config.source!r}), got {count}")
  return train.subset(_evenly_spaced(count, len(train)))


def _train_and_held_out(settings: _Settings, kind: str, arg: str,
                        split: str | None, has_eval_source: bool
                        ) -> tuple[Any, Any]:
  """The full train set (all hosts) and the held-out part of `source`.

  Sources, TFDS split strings, or None for the held-out part when
  `data.eval_source` is set (the whole source is then the train set).
  """
  num_eval = settings.num_eval
  source = settings.config.source
  if kind in CATALOGUES:
    full = settings.indexed(kind, arg)
    return (_limit_train(_catalogue_split(full, kind, "train"), settings),
            _catalogue_split(full, kind, "eval"))
  if kind == "folder":
    full = settings.indexed(kind, arg)
    if has_eval_source:
      return _limit_train(full, settings), None
    if num_eval <= 0 or num_eval >= len(full):
      raise ValueError(
          f"source {source!r} without data.eval_source needs "
          f"0 < data.num_eval < {len(full)} (the number of files) to hold "
          f"out an eval set; got num_eval={num_eval}")
    eval_indices = _evenly_spaced(num_eval, len(full))
    held_out = full.subset(eval_indices)
    train_all = full.subset(
        [i for i in range(len(full)) if i not in set(eval_indices)])
    return _limit_train(train_all, settings), held_out
  if has_eval_source:
    return split, None
  if num_eval <= 0:
    raise ValueError(
        f"source {source!r} without data.eval_source needs "
        f"data.num_eval > 0 to hold out an eval set; got {num_eval}")
  return f"{split}[{num_eval}:]", f"{split}[:{num_eval}]"


def _eval_source(settings: _Settings, eval_spec: str) -> Any:
  """The whole `data.eval_source` (its first `num_eval` records if > 0)."""
  num_eval = settings.num_eval
  eval_kind, eval_arg, eval_split = _parse_source(eval_spec)
  if eval_kind in CATALOGUES:
    held_out = _catalogue_split(settings.indexed(eval_kind, eval_arg),
                                eval_kind, "eval")
  elif eval_kind == "folder":
    held_out = settings.indexed(eval_kind, eval_arg)
  else:
    held_out = settings.tfds(eval_arg, eval_split if num_eval <= 0
                             else f"{eval_split}[:{num_eval}]")
  if eval_kind != "tfds" and num_eval > 0:
    held_out = held_out.subset(range(min(num_eval, len(held_out))))
  return held_out


def _host_part(source: Any, role: str, process_index: int,
               process_count: int, make_tfds: Callable[[Any], TfdsSource]
               ) -> Any:
  """This host's shard of a train or eval source (a TFDS split string
  becomes a source through `make_tfds`)."""
  if isinstance(source, IndexedSource):
    if role == "eval":
      # Eval is always split: hosts that run out read padding (mask 0),
      # so every image counts exactly once in the metrics.
      return source.subset(_shard(range(len(source)), process_index,
                                  process_count))
    if len(source) < process_count:
      # Tiny sources (the demo set on many hosts): every host reads all.
      logging.warning(
          "The %s set has %d images for %d processes: every process reads "
          "all of them instead of a shard.", role, len(source),
          process_count)
      return source
    return source.subset(_shard(range(len(source)), process_index,
                                process_count))
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  if isinstance(source, TfdsSource):
    return dataclasses.replace(source, split=tfds.split_for_jax_process(
        source.split, process_index=process_index,
        process_count=process_count))
  return make_tfds(tfds.split_for_jax_process(
      source, process_index=process_index, process_count=process_count))


def _reference_source(settings: _Settings, train_all: Any, arg: str) -> Any:
  """Where references come from: `data.reference_source`, else the whole
  train set."""
  reference_spec = settings.config.get("reference_source")
  if reference_spec is None or reference_spec == settings.config.source:
    # References are conditioning inputs, not examples: every host draws from
    # the whole train set (with its own seed).
    return (train_all if not isinstance(train_all, str)
            else settings.tfds(arg, train_all))
  ref_kind, ref_arg, ref_split = _parse_source(reference_spec)
  if ref_kind in CATALOGUES:
    return _catalogue_split(settings.indexed(ref_kind, ref_arg), ref_kind,
                            "train")
  if ref_kind == "folder":
    return settings.indexed(ref_kind, ref_arg)
  return settings.tfds(ref_arg, ref_split)


class HostSources(NamedTuple):
  """One host's sources (`IndexedSource` or `TfdsSource` each).

  Attributes:
    train: this host's shard of the train set.
    evaluation: this host's shard of the held-out set.
    reference: where this host draws references from (all of them).
    eval_counts: the number of held-out records of every host.
  """
  train: Any
  evaluation: Any
  reference: Any
  eval_counts: list[int]


def build_sources(data_config: ml_collections.ConfigDict, process_index: int,
                  process_count: int) -> HostSources:
  """The host's train, eval and reference sources (see `HostSources`)."""
  settings = _Settings.of(data_config)
  eval_spec = data_config.get("eval_source")
  kind, arg, split = _parse_source(data_config.source)
  train_all, held_out = _train_and_held_out(settings, kind, arg, split,
                                            eval_spec is not None)
  if eval_spec is not None:
    held_out = _eval_source(settings, eval_spec)
  elif kind in CATALOGUES and settings.num_eval > 0:
    held_out = held_out.subset(range(min(settings.num_eval, len(held_out))))
  if isinstance(held_out, str):
    held_out = settings.tfds(arg, held_out)
  make_tfds = functools.partial(settings.tfds, arg)
  train = _host_part(train_all, "train", process_index, process_count,
                     make_tfds)
  evaluation = _host_part(held_out, "eval", process_index, process_count,
                          make_tfds)
  eval_counts = _host_counts(held_out, process_count)
  reference = _reference_source(settings, train_all, arg)
  return HostSources(train, evaluation, reference, eval_counts)
