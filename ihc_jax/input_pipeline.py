"""tf.data input pipeline: colour photos, references and pseudo ground truth.

`create_datasets(data_config, seed=...)` returns (train, eval) tf.data
datasets. Every element is a dict of per-host batches, NHWC float32 in [0, 1]:

* `image`     [b,S,S,3] the colour photograph (the target),
* `reference` [b,S,S,3] a colour reference from a second, independently
  shuffled stream of `data_config.reference_source` (default: `source`),
* `example`   [b,S,S,3] only when `data_config.example_dir` is set: the
  exemplar-colorization pseudo ground truth of the (image, reference) pair,
  read from `<example_dir>/<image_stem>_<reference_stem>.png` (the names the
  official Deep Exemplar-based Colorization outputs have),
* `mask`      [b] (eval only) 1.0 for a held-out image, 0.0 for padding or
  an unreadable file.

Evaluation on several hosts: each host reads a strided shard of the held-out
files, and every host yields the same number of full eval batches
(`eval_steps`): a host that runs out of images pads with zero images whose
mask is 0. Metrics are therefore exact per-example means
(sum(value * mask) / sum(mask), see `trainers.common.evaluate`), the same for
any eval batch size and any number of processes.

Sources (`data_config.source`, `reference_source`, `eval_source`):

* `demo`: the photographs embedded in installed packages (ihc_jax.data.demo),
  train = `demo.TRAIN_NAMES`, eval = `demo.EVAL_NAMES`.
* `folder:<path>`: every image below <path> (recursive; jpg, jpeg, png, webp,
  bmp, tif, tiff in any case), sorted by relative path.
* `tfds:<name>[:<split>]`: a TFDS data set that is already prepared in
  `data_config.tfds_data_dir` (never downloaded unless
  `data_config.tfds_download=True`).

The train stream is a pure function of (seed, element index): element e of a
host takes record `permutation(seed, epoch)[e % n]` with epoch = e // n, and
its crop offsets and flip come from a numpy Generator seeded with
(seed, stream, process, e) (stateless TF uniforms in the native path). `start_step=k` therefore starts exactly at batch k
of a fresh stream by skipping indices, without decoding anything. (TFDS
sources are read sequentially: the skip happens on the encoded records, also
before decoding.)

The train streams of folder and TFDS sources decode JPEG, PNG, BMP and GIF
with TensorFlow ops (`ihc_jax.data.decode`, crop offsets and flips from
`tf.random.stateless_uniform` of (seed, stream, process, element)); TIFF,
WebP, CMYK JPEGs and anything the native ops refuse go to PIL inside
`tf.numpy_function`, as do eval, the demo source, `cache=True` and
`example_dir` streams. Unreadable files (truncated, empty, not an image) are
skipped, counted and logged with their path (`skipped_files()`); a train
element whose file is unreadable takes the next readable record of the same
permutation, so the stream stays a pure function of (seed, index).

TensorFlow only feeds data here: accelerators are hidden from it at import.
"""

import dataclasses
import io
import os
import threading
import time
from typing import Any, Sequence

from absl import logging
import jax
import ml_collections
import numpy as np
from PIL import Image
import tensorflow as tf

from ihc_jax.data import demo

try:
  tf.config.set_visible_devices([], "GPU")
  tf.config.set_visible_devices([], "TPU")
except (RuntimeError, ValueError) as _error:
  # Raised when TF was initialised before this import or knows no such device.
  logging.info("Could not hide accelerators from TensorFlow: %s", _error)

IMAGE_EXTENSIONS = (".bmp", ".jpeg", ".jpg", ".png", ".tif", ".tiff", ".webp")

# Stream tags that make the image and reference streams independent.
_IMAGE_STREAM = 0
_REFERENCE_STREAM = 1
# Eval pairs (image i -> reference) are fixed, independent of the train seed.
_EVAL_SEED = 20210919
# Errors PIL raises for unreadable or broken image data.
_DECODE_ERRORS = (OSError, ValueError, SyntaxError, EOFError,
                  Image.DecompressionBombError)


def default_data_config() -> ml_collections.ConfigDict:
  """The data section with every field the pipeline reads, and its defaults.

  Returns:
    ConfigDict with fields:
      source: "demo", "folder:<path>" or "tfds:<name>[:<split>]".
      reference_source: where references come from; None -> `source`.
      eval_source: a source used whole for evaluation; None -> the held-out
        part of `source` (demo: demo.EVAL_NAMES; folder: `num_eval` evenly
        spaced files; tfds: the first `num_eval` records of the split).
      example_dir: folder of precomputed pseudo ground truth
        `<image_stem>_<reference_stem>.png`; None -> no `example` key.
      image_size: S, the side of the square crops.
      batch_size: GLOBAL train batch (divided by the number of processes).
      eval_batch_size: GLOBAL eval batch.
      num_eval: number of eval images; -1 -> all of the eval split (demo,
        eval_source); a folder or tfds source without eval_source needs > 0.
      eval_drop_remainder: run only the eval batches that every host
        fills with real images (else the last ones are padded).
      random_flip: random horizontal flips in the train stream.
      shuffle_buffer: shuffle buffer for TFDS sources (others are permuted
        exactly).
      tfds_data_dir: TFDS data_dir (None -> TFDS default).
      tfds_download: allow `download_and_prepare` of TFDS sources.
      cache: keep decoded, resized images in memory (folder sources; demo
        images are always kept) or the encoded records (TFDS).
      num_parallel_calls: decoding threads; -1 -> tf.data.AUTOTUNE.
  """
  config = ml_collections.ConfigDict()
  config.source = "demo"
  config.reference_source = ml_collections.config_dict.placeholder(str)
  config.eval_source = ml_collections.config_dict.placeholder(str)
  config.example_dir = ml_collections.config_dict.placeholder(str)
  config.image_size = 256
  config.batch_size = 8
  config.eval_batch_size = 8
  config.num_eval = -1
  config.eval_drop_remainder = False
  config.random_flip = True
  config.shuffle_buffer = 1024
  config.tfds_data_dir = ml_collections.config_dict.placeholder(str)
  config.tfds_download = False
  config.cache = False
  config.num_parallel_calls = -1
  return config


# --------------------------------------------------------------------------
# Skipped-file bookkeeping.


class _SkipLog:
  """Thread-safe record of unreadable files (path -> reason)."""

  def __init__(self):
    self._lock = threading.Lock()
    self._reasons: dict[str, str] = {}

  def add(self, path: str, reason: str) -> bool:
    with self._lock:
      new = path not in self._reasons
      self._reasons[path] = reason
    if new:
      logging.warning("Skipping unreadable image %s: %s", path, reason)
    return new

  def paths(self) -> tuple[str, ...]:
    with self._lock:
      return tuple(sorted(self._reasons))

  def clear(self) -> None:
    with self._lock:
      self._reasons.clear()


_SKIP_LOG = _SkipLog()


def skipped_files() -> tuple[str, ...]:
  """Sorted paths (or TFDS record ids) of the unreadable images seen so far."""
  return _SKIP_LOG.paths()


def num_skipped_files() -> int:
  """How many distinct unreadable images were skipped so far."""
  return len(_SKIP_LOG.paths())


def reset_skipped_files() -> None:
  """Forgets the skipped images (for tests and new runs)."""
  _SKIP_LOG.clear()


# --------------------------------------------------------------------------
# Decoding and geometry.


def _pil_to_array(image: Image.Image) -> np.ndarray:
  """PIL image -> uint8 [H,W,3] or float32 [H,W,3] in [0, 1]."""
  if image.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
    # 16-bit gray (PNG/TIFF): full scale is 65535.
    gray = np.asarray(image, dtype=np.float32) / 65535.0
    return np.repeat(np.clip(gray, 0.0, 1.0)[..., None], 3, axis=-1)
  if image.mode == "F":
    # Float TIFFs are taken to be in [0, 1] already.
    gray = np.asarray(image, dtype=np.float32)
    return np.repeat(np.clip(gray, 0.0, 1.0)[..., None], 3, axis=-1)
  has_alpha = image.mode in ("RGBA", "LA", "PA", "La", "RGBa") or (
      image.mode == "P" and "transparency" in image.info)
  if has_alpha:
    # Composite on white: fully transparent pixels often hold black RGB.
    rgba = np.asarray(image.convert("RGBA"), dtype=np.float32) / 255.0
    alpha = rgba[..., 3:]
    rgb = rgba[..., :3] * alpha + (1.0 - alpha)
    return np.round(rgb * 255.0).astype(np.uint8)
  return np.asarray(image.convert("RGB"), dtype=np.uint8)


def decode_image(data: bytes, min_short_side: int | None = None) -> np.ndarray:
  """Decodes encoded image bytes to RGB.

  Gray images are replicated to three channels, RGBA is composited on white,
  16-bit gray is scaled by 1/65535 (PIL reduces 16-bit colour PNGs to 8 bits).

  Args:
    data: the encoded file contents.
    min_short_side: if set, JPEGs may be decoded at a reduced scale (DCT
      scaling, 1/2 to 1/8) as long as the shorter side stays >= this; much
      faster for large photographs that are shrunk anyway.

  Returns:
    uint8 [H,W,3] (8-bit sources) or float32 [H,W,3] in [0, 1].

  Raises:
    OSError, ValueError, SyntaxError, EOFError: unreadable data.
  """
  with Image.open(io.BytesIO(data)) as image:
    if min_short_side and image.format == "JPEG":
      width, height = image.size
      scale = min_short_side / min(width, height)
      if scale < 1:
        image.draft("RGB", (int(np.ceil(width * scale)),
                            int(np.ceil(height * scale))))
    image.load()
    array = _pil_to_array(image)
  if array.shape[0] < 1 or array.shape[1] < 1:
    raise ValueError(f"empty image of shape {array.shape}")
  return array


def resize_short_side(array: np.ndarray, size: int) -> np.ndarray:
  """Resizes so that the shorter side is `size` (bilinear, antialiased).

  PIL's bilinear filter widens its support when shrinking, so downscaling is
  antialiased (torchvision's `Resize` on PIL images, as in the official code).

  Args:
    array: uint8 or float32 [H,W,3].
    size: target length of the shorter side.

  Returns:
    The resized array, same dtype.
  """
  height, width = array.shape[:2]
  scale = size / min(height, width)
  new_height = max(size, int(round(height * scale)))
  new_width = max(size, int(round(width * scale)))
  if (new_height, new_width) == (height, width):
    return array
  if array.dtype == np.uint8:
    resized = Image.fromarray(array).resize(
        (new_width, new_height), Image.Resampling.BILINEAR)
    return np.asarray(resized)
  channels = [
      np.asarray(Image.fromarray(array[..., c].astype(np.float32), "F").resize(
          (new_width, new_height), Image.Resampling.BILINEAR))
      for c in range(array.shape[-1])]
  return np.stack(channels, axis=-1)


def _to_float(array: np.ndarray) -> np.ndarray:
  if array.dtype == np.uint8:
    return array.astype(np.float32) / 255.0
  return array.astype(np.float32)


def _crop(array: np.ndarray, size: int, top: int, left: int,
          flip: bool) -> np.ndarray:
  out = array[top:top + size, left:left + size]
  if flip:
    out = out[:, ::-1]
  return np.ascontiguousarray(_to_float(out))


def _random_crop_params(rng: np.random.Generator, shape: Sequence[int],
                        size: int, random_flip: bool) -> tuple[int, int, bool]:
  top = int(rng.integers(0, shape[0] - size + 1))
  left = int(rng.integers(0, shape[1] - size + 1))
  flip = bool(random_flip and rng.random() < 0.5)
  return top, left, flip


def _center_crop_params(shape: Sequence[int], size: int) -> tuple[int, int]:
  return (int(round((shape[0] - size) / 2.0)),
          int(round((shape[1] - size) / 2.0)))


# --------------------------------------------------------------------------
# Sources.


@dataclasses.dataclass
class _IndexedSource:
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

  def subset(self, indices: Sequence[int]) -> "_IndexedSource":
    return _IndexedSource([self.stems[i] for i in indices],
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
      array = resize_short_side(item, self.image_size)
    else:
      keep = self.cache
      try:
        with open(item, "rb") as f:
          array = resize_short_side(decode_image(f.read(), self.image_size),
                                    self.image_size)
      except _DECODE_ERRORS as error:
        _SKIP_LOG.add(item, f"{type(error).__name__}: {error}")
        with self._lock:
          self._bad.add(index)
        return None
    if keep:
      with self._lock:
        self._cached[index] = array
    return array


@dataclasses.dataclass
class _TfdsSource:
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
    try:
      return resize_short_side(decode_image(data, self.image_size),
                               self.image_size)
    except _DECODE_ERRORS as error:
      _SKIP_LOG.add(record, f"{type(error).__name__}: {error}")
      return None


def list_image_files(root: str) -> list[str]:
  """Image files below `root`, recursive, sorted by relative path.

  Args:
    root: a folder.

  Returns:
    Absolute paths of files with an image extension (any case).

  Raises:
    FileNotFoundError: `root` is not a folder.
  """
  if not os.path.isdir(root):
    raise FileNotFoundError(f"image folder {root!r} does not exist")
  found = []
  for directory, _, files in os.walk(root):
    for name in files:
      if os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS:
        found.append(os.path.relpath(os.path.join(directory, name), root))
  return [os.path.join(os.path.abspath(root), rel) for rel in sorted(found)]


def _parse_source(spec: str) -> tuple[str, str, str | None]:
  if not isinstance(spec, str) or not spec:
    raise ValueError(f"data source must be a non-empty string, got {spec!r}")
  if spec == "demo":
    return "demo", "", None
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
      f"unknown data source {spec!r}; use 'demo', 'folder:<path>' or "
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
  if isinstance(held_out, _IndexedSource):
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
             cache: bool) -> _IndexedSource:
  if kind == "demo":
    pairs = demo.demo_images("all")
    return _IndexedSource([n for n, _ in pairs], [a for _, a in pairs],
                          image_size, True)
  paths = list_image_files(arg)
  if not paths:
    raise ValueError(
        f"image folder {arg!r} holds no files with extensions "
        f"{IMAGE_EXTENSIONS}")
  stems = [os.path.splitext(os.path.basename(p))[0] for p in paths]
  return _IndexedSource(stems, paths, image_size, cache)


def _build_sources(data_config: ml_collections.ConfigDict, process_index: int,
                   process_count: int) -> tuple[Any, Any, Any, list[int]]:
  """The host's (train, eval) sources, the reference source, and the number
  of eval records of every host."""
  size = int(data_config.image_size)
  cache = bool(data_config.get("cache", False))
  num_eval = int(data_config.get("num_eval", -1))
  eval_spec = data_config.get("eval_source")
  kind, arg, split = _parse_source(data_config.source)

  def tfds_source(name, split_spec):
    builder = _tfds_builder(name, data_config)
    return _TfdsSource(builder, split_spec, _tfds_image_key(builder), size,
                       cache)

  # The full train set (all hosts) and the eval set.
  if kind == "demo":
    full = _indexed(kind, arg, size, cache)
    train_all = full.subset([full.stems.index(n)
                             for n in demo.available_names("train")])
    held_out = full.subset([full.stems.index(n)
                            for n in demo.available_names("eval")])
  elif kind == "folder":
    full = _indexed(kind, arg, size, cache)
    if eval_spec is None:
      if num_eval <= 0 or num_eval >= len(full):
        raise ValueError(
            f"source {data_config.source!r} without data.eval_source needs "
            f"0 < data.num_eval < {len(full)} (the number of files) to hold "
            f"out an eval set; got num_eval={num_eval}")
      eval_indices = _evenly_spaced(num_eval, len(full))
      held_out = full.subset(eval_indices)
      train_all = full.subset(
          [i for i in range(len(full)) if i not in set(eval_indices)])
    else:
      train_all, held_out = full, None
  else:
    if eval_spec is None:
      if num_eval <= 0:
        raise ValueError(
            f"source {data_config.source!r} without data.eval_source needs "
            f"data.num_eval > 0 to hold out an eval set; got {num_eval}")
      train_all = f"{split}[{num_eval}:]"
      held_out = f"{split}[:{num_eval}]"
    else:
      train_all, held_out = split, None

  if eval_spec is not None:
    eval_kind, eval_arg, eval_split = _parse_source(eval_spec)
    if eval_kind == "demo":
      names = demo.available_names("eval")
      full_eval = _indexed(eval_kind, eval_arg, size, cache)
      held_out = full_eval.subset([full_eval.stems.index(n) for n in names])
    elif eval_kind == "folder":
      held_out = _indexed(eval_kind, eval_arg, size, cache)
    else:
      held_out = tfds_source(eval_arg, eval_split if num_eval <= 0
                             else f"{eval_split}[:{num_eval}]")
    if eval_kind != "tfds" and num_eval > 0:
      held_out = held_out.subset(range(min(num_eval, len(held_out))))
  elif kind == "demo" and num_eval > 0:
    held_out = held_out.subset(range(min(num_eval, len(held_out))))

  def host_part(source, role):
    if isinstance(source, _IndexedSource):
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
    if isinstance(source, _TfdsSource):
      return dataclasses.replace(source, split=tfds.split_for_jax_process(
          source.split, process_index=process_index,
          process_count=process_count))
    return tfds_source(arg, tfds.split_for_jax_process(
        source, process_index=process_index, process_count=process_count))

  if isinstance(held_out, str):
    held_out = tfds_source(arg, held_out)
  train = host_part(train_all, "train")
  evaluation = host_part(held_out, "eval")
  eval_counts = _host_counts(held_out, process_count)

  reference_spec = data_config.get("reference_source")
  if reference_spec is None or reference_spec == data_config.source:
    # References are conditioning inputs, not examples: every host draws from
    # the whole train set (with its own seed).
    reference = (train_all if not isinstance(train_all, str)
                 else tfds_source(arg, train_all))
  else:
    ref_kind, ref_arg, ref_split = _parse_source(reference_spec)
    if ref_kind == "demo":
      full_ref = _indexed(ref_kind, ref_arg, size, cache)
      reference = full_ref.subset([full_ref.stems.index(n)
                                   for n in demo.available_names("train")])
    elif ref_kind == "folder":
      reference = _indexed(ref_kind, ref_arg, size, cache)
    else:
      reference = tfds_source(ref_arg, ref_split)
  return train, evaluation, reference, eval_counts


# --------------------------------------------------------------------------
# Streams.


def _seed_words(seed: int, *words: int) -> list[int]:
  return [int(seed) % (1 << 64)] + [int(w) for w in words]


def _tf_seed(seed: int, *words: int) -> int:
  state = np.random.SeedSequence(_seed_words(seed, *words)).generate_state(1)
  return int(state[0])


class _Picker:
  """Element index -> record of an indexed source, as a pure function.

  Element e reads record `permutation(epoch)[e % n]` (epoch = e // n); if that
  record is unreadable it takes the next readable one of the same permutation.
  """

  def __init__(self, source: _IndexedSource, words: Sequence[int]):
    self._source = source
    self._words = list(words)
    self._lock = threading.Lock()
    self._perms: dict[int, np.ndarray] = {}

  def _permutation(self, epoch: int) -> np.ndarray:
    with self._lock:
      perm = self._perms.get(epoch)
    if perm is None:
      rng = np.random.default_rng(self._words + [0, epoch])
      perm = rng.permutation(len(self._source))
      with self._lock:
        self._perms[epoch] = perm
        # Parallel decoding touches at most a couple of neighbouring epochs.
        for old in sorted(self._perms)[:-4]:
          del self._perms[old]
    return perm

  def pick(self, element: int) -> tuple[int, np.ndarray]:
    n = len(self._source)
    epoch, position = divmod(int(element), n)
    perm = self._permutation(epoch)
    for k in range(n):
      index = int(perm[(position + k) % n])
      array = self._source.load(index)
      if array is not None:
        return index, array
    raise RuntimeError(
        f"none of the {n} images of this data source can be read; see the "
        "skipped files in the log")

  def candidate(self, element: int, attempt: int) -> int:
    """Record tried at `attempt` (0, 1, ...) for an element: the permutation
    from the element's position on, without checking readability."""
    n = len(self._source)
    epoch, position = divmod(int(element), n)
    return int(self._permutation(epoch)[(position + int(attempt)) % n])

  def rng(self, element: int) -> np.random.Generator:
    """The augmentation Generator of one element."""
    return np.random.default_rng(self._words + [1, int(element)])


class _Examples:
  """Index of `<example_dir>/<target_stem>_<reference_stem>.png` files."""

  def __init__(self, example_dir: str, targets: _IndexedSource,
               references: _IndexedSource):
    if not os.path.isdir(example_dir):
      raise FileNotFoundError(
          f"data.example_dir {example_dir!r} is not a folder")
    self._dir = example_dir
    duplicates = {s for s in targets.stems if targets.stems.count(s) > 1}
    if duplicates:
      raise ValueError(
          "example files are matched by file stem, but several images share "
          f"the stems {sorted(duplicates)[:5]}")
    target_stems = set(targets.stems)
    reference_index = {}
    for index, stem in enumerate(references.stems):
      reference_index.setdefault(stem, []).append(index)
    self._candidates: dict[str, list[int]] = {}
    for name in sorted(os.listdir(example_dir)):
      if not name.endswith(".png"):
        continue
      base = name[:-len(".png")]
      # Stems may contain "_": try every split point.
      for cut in [i for i, c in enumerate(base) if c == "_"]:
        target, reference = base[:cut], base[cut + 1:]
        if target in target_stems and reference in reference_index:
          self._candidates.setdefault(target, []).extend(
              reference_index[reference])
    missing = [s for s in targets.stems if s not in self._candidates]
    if missing:
      raise ValueError(
          f"data.example_dir {example_dir!r} has no example "
          f"'<image>_<reference>.png' (with a reference from the reference "
          f"source) for {len(missing)} of {len(targets)} images, e.g. "
          f"{missing[:5]}")
    self._references = references

  def path(self, target: str, reference: str) -> str:
    return os.path.join(self._dir, f"{target}_{reference}.png")

  def has(self, target: str, reference_index: int) -> bool:
    return reference_index in self._candidates.get(target, ())

  def load(self, target: str, reference_index: int,
           shape: Sequence[int]) -> np.ndarray | None:
    """The example resized to `shape` (the resized target's), or None."""
    path = self.path(target, self._references.stems[reference_index])
    try:
      with open(path, "rb") as f:
        array = decode_image(f.read())
    except _DECODE_ERRORS as error:
      _SKIP_LOG.add(path, f"{type(error).__name__}: {error}")
      return None
    if array.shape[:2] != tuple(shape[:2]):
      if array.dtype != np.uint8:
        array = np.round(np.clip(array, 0, 1) * 255).astype(np.uint8)
      array = np.asarray(Image.fromarray(array).resize(
          (shape[1], shape[0]), Image.Resampling.BILINEAR))
    return array

  def choose(self, target: str, reference_index: int, start: int,
             shape: Sequence[int]) -> tuple[int, np.ndarray, np.ndarray]:
    """(reference index, reference, example) for a target.

    Uses the drawn reference when its example exists, else the candidates of
    the target from position `start` on (cyclically).
    """
    order = []
    if self.has(target, reference_index):
      order.append(reference_index)
    candidates = self._candidates[target]
    order += [candidates[(start + k) % len(candidates)]
              for k in range(len(candidates))]
    for index in order:
      reference = self._references.load(index)
      if reference is None:
        continue
      example = self.load(target, index, shape)
      if example is not None:
        return index, reference, example
    raise RuntimeError(
        f"no readable (reference, example) pair for image {target!r} in "
        f"{self._dir!r}")


def _encoded_stream(source: _TfdsSource, seed_words: Sequence[int],
                    shuffle_buffer: int, start: int) -> tf.data.Dataset:
  dataset = source.encoded().shuffle(
      shuffle_buffer, seed=_tf_seed(*seed_words),
      reshuffle_each_iteration=True).repeat()
  # Skips encoded records: nothing is decoded.
  return dataset.skip(start)


# --------------------------------------------------------------------------
# The train streams: one image per element, native decoding where possible.

# Extensions PIL decodes in the train stream: TensorFlow has no op for them.
_PIL_ONLY_EXTENSIONS = (".tif", ".tiff", ".webp")
_NATIVE, _PIL = 0, 1


def _crop_uniforms(seed_words: Sequence[int], element: tf.Tensor
                   ) -> tf.Tensor:
  """Three uniforms in [0, 1) of an element: row, column, flip."""
  key = _tf_seed(*seed_words, 2) % (1 << 63)
  return tf.random.stateless_uniform(
      [3], seed=tf.stack([tf.constant(key, tf.int64), element]),
      dtype=tf.float32)


def _pil_random_crop(name: bytes, contents: bytes, uniforms: np.ndarray,
                     size: int, random_flip: bool) -> np.ndarray:
  """PIL fallback of `decode.native_random_crop`, with the same geometry.

  Reads the file `name` when `contents` is empty. Unreadable data is
  recorded in the skip log (by path or record id) and raises ValueError.
  """
  name = name.decode() if isinstance(name, bytes) else str(name)
  try:
    if not contents:
      with open(name, "rb") as f:
        contents = f.read()
    array = resize_short_side(decode_image(contents, size), size)
  except _DECODE_ERRORS as error:
    _SKIP_LOG.add(name, f"{type(error).__name__}: {error}")
    raise ValueError(f"unreadable image {name}") from error
  height, width = array.shape[:2]
  # float64(u) * choices, floored, as `decode.crop_offsets`.
  top = min(int(np.floor(np.float64(uniforms[0]) * (height - size + 1))),
            height - size)
  left = min(int(np.floor(np.float64(uniforms[1]) * (width - size + 1))),
             width - size)
  flip = bool(random_flip and uniforms[2] < 0.5)
  return _crop(array, size, top, left, flip)


def _first_readable(attempts: tf.data.Dataset) -> tf.data.Dataset:
  """The first attempt that decodes; failed attempts are dropped."""
  options = tf.data.Options()
  # Sequential and lazy: an attempt after a success is never decoded.
  options.experimental_optimization.map_parallelization = False
  options.experimental_optimization.inject_prefetch = False
  return attempts.ignore_errors().take(1).with_options(options)


def _decode_attempt(name: tf.Tensor, contents: tf.Tensor, mode: tf.Tensor,
                    uniforms: tf.Tensor, size: int, random_flip: bool
                    ) -> tf.Tensor:
  """A random crop by native ops (mode 0) or PIL (mode 1); may fail."""
  from ihc_jax.data import decode  # pylint: disable=g-import-not-at-top

  def native():
    data = tf.cond(tf.equal(tf.strings.length(contents), 0),
                   lambda: tf.io.read_file(name), lambda: contents)
    return decode.native_random_crop(data, size, uniforms, random_flip)

  def pil():
    image = tf.numpy_function(
        lambda n, c, u: _pil_random_crop(n, c, u, size, random_flip),
        [name, contents, uniforms], tf.float32, stateful=False)
    image.set_shape([size, size, 3])
    return image

  return tf.cond(tf.equal(mode, _NATIVE), native, pil)


def _indexed_native_stream(source: _IndexedSource, picker: _Picker,
                           words: Sequence[int], start: int, size: int,
                           random_flip: bool, parallel: int
                           ) -> tf.data.Dataset:
  """Images of elements start, start+1, ... of a folder, decoded natively.

  Element e tries the records `picker.candidate(e, 0)`, `(e, 1)`, ... (the
  permutation from e's position on) until one decodes: first with native
  ops, then with PIL; so an unreadable file is replaced by the next readable
  record of the permutation, as in the PIL path.
  """
  suffixes = [os.path.splitext(p)[1].lower() for p in source.items]

  def plan(element, attempt):
    index = picker.candidate(int(element), int(attempt))
    mode = _PIL if suffixes[index] in _PIL_ONLY_EXTENSIONS else _NATIVE
    return np.bytes_(source.items[index].encode()), np.int64(mode)

  def element_images(element):
    uniforms = _crop_uniforms(words, element)

    def planned(attempt):
      path, mode = tf.numpy_function(plan, [element, attempt],
                                     [tf.string, tf.int64], stateful=False)
      path.set_shape([])
      mode.set_shape([])
      # Native first, then PIL; PIL-only formats go to PIL directly.
      return tf.data.Dataset.range(mode, _PIL + 1).map(
          lambda m: (path, m))

    attempts = tf.data.Dataset.range(len(source)).flat_map(planned).map(
        lambda path, m: _decode_attempt(path, tf.constant(b""), m, uniforms,
                                        size, random_flip))
    return _first_readable(attempts)

  elements = tf.data.Dataset.range(start, np.iinfo(np.int64).max)
  return elements.interleave(
      element_images, cycle_length=parallel, block_length=1,
      num_parallel_calls=parallel, deterministic=True)


def _encoded_native_stream(source: "_TfdsSource", words: Sequence[int],
                           shuffle_buffer: int, start: int, size: int,
                           random_flip: bool, parallel: int
                           ) -> tf.data.Dataset:
  """Images of a TFDS stream (seeded shuffle), decoded natively or by PIL.

  A record neither can decode is dropped (logged by its split and element).
  """
  encoded = _encoded_stream(source, words, shuffle_buffer, start)
  elements = tf.data.Dataset.range(start, np.iinfo(np.int64).max)

  def element_images(element, contents):
    uniforms = _crop_uniforms(words, element)
    name = tf.strings.join([str(source.split), "#",
                            tf.strings.as_string(element)])
    attempts = tf.data.Dataset.range(_NATIVE, _PIL + 1).map(
        lambda m: _decode_attempt(name, contents, m, uniforms, size,
                                  random_flip))
    return _first_readable(attempts)

  return tf.data.Dataset.zip((elements, encoded)).interleave(
      element_images, cycle_length=parallel, block_length=1,
      num_parallel_calls=parallel, deterministic=True)


def _indexed_python_stream(source: _IndexedSource, picker: _Picker,
                           words: Sequence[int], start: int, size: int,
                           random_flip: bool, parallel: int
                           ) -> tf.data.Dataset:
  """Images of an in-memory (demo) or cached source, cropped in numpy."""
  def element_image(element):
    element = int(element)
    _, image = picker.pick(element)
    top, left, flip = _random_crop_params(
        np.random.default_rng(list(words) + [1, element]), image.shape, size,
        random_flip)
    return _crop(image, size, top, left, flip)

  def as_tensor(element):
    image = tf.numpy_function(element_image, [element], tf.float32,
                              stateful=False)
    image.set_shape([size, size, 3])
    return image

  return tf.data.Dataset.range(start, np.iinfo(np.int64).max).map(
      as_tensor, num_parallel_calls=parallel, deterministic=True)


def _image_stream(source: Any, words: Sequence[int], start: int, size: int,
                  random_flip: bool, shuffle_buffer: int, parallel: int
                  ) -> tf.data.Dataset:
  """One train image per element from `start` on, for any source."""
  if not isinstance(source, _IndexedSource):
    return _encoded_native_stream(source, words, shuffle_buffer, start, size,
                                  random_flip, parallel)
  picker = _Picker(source, words)
  in_memory = source.cache or any(not isinstance(item, str)
                                  for item in source.items)
  if in_memory:
    # Decoded once and kept: numpy crops beat decoding again.
    return _indexed_python_stream(source, picker, words, start, size,
                                  random_flip, parallel)
  return _indexed_native_stream(source, picker, words, start, size,
                                random_flip, parallel)


def _finish(dataset: tf.data.Dataset, keys: Sequence[str], size: int,
            batch: int, drop_remainder: bool) -> tf.data.Dataset:
  """Train: drops unusable elements, batches and prefetches."""
  def to_dict(*values):
    out = {}
    for key, value in zip(keys, values[:-1]):
      value.set_shape([size, size, 3])
      out[key] = value
    return out
  dataset = dataset.filter(lambda *values: values[-1]).map(to_dict)
  return dataset.batch(batch, drop_remainder=drop_remainder).prefetch(
      tf.data.AUTOTUNE)


def _finish_eval(dataset: tf.data.Dataset, keys: Sequence[str], size: int,
                 batch: int) -> tf.data.Dataset:
  """Eval: keeps every element, with `mask` 1.0 for a usable image and 0.0
  for padding or an unreadable file, in full batches."""
  def to_dict(*values):
    out = {}
    for key, value in zip(keys, values[:-1]):
      value.set_shape([size, size, 3])
      out[key] = value
    out["mask"] = tf.cast(values[-1], tf.float32)
    return out
  return dataset.map(to_dict).batch(batch, drop_remainder=True).prefetch(
      tf.data.AUTOTUNE)


def _check_config(data_config: ml_collections.ConfigDict, process_count: int
                  ) -> tuple[int, int, int]:
  size = data_config.get("image_size")
  if (not isinstance(size, (int, np.integer)) or isinstance(size, bool)
      or size <= 0):
    raise ValueError(f"data.image_size must be a positive int, got {size!r}")
  batches = []
  for field in ("batch_size", "eval_batch_size"):
    value = data_config.get(field)
    if (not isinstance(value, (int, np.integer)) or isinstance(value, bool)
        or value <= 0):
      raise ValueError(f"data.{field} must be a positive int, got {value!r}")
    if value % process_count:
      raise ValueError(
          f"data.{field}={value} is the global batch and must be divisible "
          f"by the number of processes ({process_count})")
    batches.append(int(value) // process_count)
  return int(size), batches[0], batches[1]


def create_datasets(
    data_config: ml_collections.ConfigDict, *, seed: int,
    process_index: int | None = None, process_count: int | None = None,
    start_step: int = 0) -> tuple[tf.data.Dataset, tf.data.Dataset]:
  """Builds this host's train and eval datasets.

  Args:
    data_config: the data section (fields: see `default_data_config`).
    seed: train seed; the same config and seed give identical batches.
    process_index: this host (default `jax.process_index()`).
    process_count: number of hosts (default `jax.process_count()`).
    start_step: the first train batch is batch `start_step` of a fresh stream
      (exact resume; skipped elements are never decoded).

  Returns:
    (train, eval). train is infinite, eval finite; elements are dicts with
    `image`, `reference` and (with `example_dir`) `example`, each
    [per-host batch, S, S, 3] float32 in [0, 1].
  """
  if process_index is None:
    process_index = jax.process_index()
  if process_count is None:
    process_count = jax.process_count()
  if not 0 <= process_index < process_count:
    raise ValueError(
        f"process_index={process_index} must be in [0, {process_count})")
  if start_step < 0:
    raise ValueError(f"start_step must be >= 0, got {start_step}")
  size, train_batch, eval_batch = _check_config(data_config, process_count)
  parallel = int(data_config.get("num_parallel_calls", -1))
  parallel = tf.data.AUTOTUNE if parallel <= 0 else parallel
  random_flip = bool(data_config.get("random_flip", True))
  shuffle_buffer = int(data_config.get("shuffle_buffer", 1024))
  train, evaluation, reference, eval_counts = _build_sources(
      data_config, process_index, process_count)
  num_eval_batches = eval_steps(
      eval_counts, eval_batch, bool(data_config.get("eval_drop_remainder",
                                                    False)))
  if num_eval_batches == 0:
    raise ValueError(
        f"the eval set ({sum(eval_counts)} images over {process_count} "
        f"processes) fills no eval batch of {eval_batch} per process with "
        "data.eval_drop_remainder=True; lower data.eval_batch_size or set "
        "eval_drop_remainder=False")
  eval_length = num_eval_batches * eval_batch
  host_eval_count = eval_counts[process_index]

  examples = None
  example_dir = data_config.get("example_dir")
  if example_dir:
    if not (isinstance(train, _IndexedSource)
            and isinstance(evaluation, _IndexedSource)
            and isinstance(reference, _IndexedSource)):
      raise ValueError(
          "data.example_dir matches files by image name, which needs 'demo' "
          "or 'folder:' sources for images, eval and references (not tfds)")
    examples = _Examples(example_dir, train, reference)
    eval_examples = _Examples(example_dir, evaluation, reference)
  keys = ["image", "reference"] + (["example"] if examples else [])
  out_types = [tf.float32] * len(keys) + [tf.bool]

  image_words = _seed_words(seed, _IMAGE_STREAM, process_index)
  reference_words = _seed_words(seed, _REFERENCE_STREAM, process_index)
  image_picker = (_Picker(train, image_words)
                  if isinstance(train, _IndexedSource) else None)
  reference_picker = (_Picker(reference, reference_words)
                      if isinstance(reference, _IndexedSource) else None)

  def read(picker, source, index, encoded):
    """(record index or -1, image or None): from an indexed source through
    its picker, else decoded from the streamed bytes."""
    if picker is not None:
      return picker.pick(index)
    return -1, source.load_bytes(encoded, f"{source.split}#{index}")

  def unusable():
    """The placeholder of an element whose files could not be read."""
    return [np.zeros((size, size, 3), np.float32)] * len(keys) + [False]

  def train_element(element, image_bytes, reference_bytes):
    element = int(element)
    image_rng = np.random.default_rng(image_words + [1, element])
    reference_rng = np.random.default_rng(reference_words + [1, element])
    image_index, image = read(image_picker, train, element, image_bytes)
    reference_index, reference_image = read(reference_picker, reference,
                                            element, reference_bytes)
    if image is None or reference_image is None:
      return unusable()
    top, left, flip = _random_crop_params(image_rng, image.shape, size,
                                          random_flip)
    outputs = [_crop(image, size, top, left, flip)]
    example = None
    if examples is not None:
      stem = train.stems[image_index]
      start = int(reference_rng.integers(0, 1 << 30))
      reference_index, reference_image, example = examples.choose(
          stem, reference_index, start, image.shape)
    r_top, r_left, r_flip = _random_crop_params(
        reference_rng, reference_image.shape, size, random_flip)
    outputs.append(_crop(reference_image, size, r_top, r_left, r_flip))
    if example is not None:
      outputs.append(_crop(example, size, top, left, flip))
    return outputs + [True]

  start = start_step * train_batch
  empty = tf.data.Dataset.from_tensors(tf.constant(b"")).repeat()
  if examples is None:
    # Independent image and reference streams (native decoding for files).
    train_ds = tf.data.Dataset.zip(
        _image_stream(train, image_words, start, size, random_flip,
                      shuffle_buffer, parallel),
        _image_stream(reference, reference_words, start, size, random_flip,
                      shuffle_buffer, parallel))
    train_ds = train_ds.map(lambda i, r: {"image": i, "reference": r})
    train_ds = train_ds.batch(train_batch, drop_remainder=True).prefetch(
        tf.data.AUTOTUNE)
  else:
    # Examples are cropped like their target: one numpy function for both.
    elements = tf.data.Dataset.range(start, np.iinfo(np.int64).max)
    train_ds = tf.data.Dataset.zip((elements, empty, empty))
    train_ds = train_ds.map(
        lambda e, i, r: tf.numpy_function(train_element, [e, i, r],
                                          out_types, stateful=False),
        num_parallel_calls=parallel, deterministic=True)
    train_ds = _finish(train_ds, keys, size, train_batch, True)

  # Eval: centre crops, a fixed reference per image (independent of seed).
  eval_reference_picker = (_Picker(reference, [_EVAL_SEED])
                           if isinstance(reference, _IndexedSource) else None)

  def eval_element(index, image_bytes, reference_bytes):
    index = int(index)
    if index >= host_eval_count:
      return unusable()  # padding up to the common number of batches
    if isinstance(evaluation, _IndexedSource):
      image = evaluation.load(index)
    else:
      image = evaluation.load_bytes(image_bytes, f"{evaluation.split}#{index}")
    reference_index, reference_image = read(eval_reference_picker, reference,
                                            index, reference_bytes)
    if image is None or reference_image is None:
      return unusable()
    top, left = _center_crop_params(image.shape, size)
    outputs = [_crop(image, size, top, left, False)]
    example = None
    if examples is not None:
      reference_index, reference_image, example = eval_examples.choose(
          evaluation.stems[index], reference_index, 0, image.shape)
    r_top, r_left = _center_crop_params(reference_image.shape, size)
    outputs.append(_crop(reference_image, size, r_top, r_left, False))
    if example is not None:
      outputs.append(_crop(example, size, top, left, False))
    return outputs + [True]

  # Every host yields `eval_length` elements: its shard, then padding.
  eval_elements = tf.data.Dataset.range(eval_length)
  if isinstance(evaluation, _IndexedSource):
    eval_images = empty
  else:
    eval_images = evaluation.encoded().concatenate(empty)
  eval_references = (empty if eval_reference_picker is not None
                     else reference.encoded().repeat())
  eval_ds = tf.data.Dataset.zip((eval_elements, eval_images, eval_references))
  eval_ds = eval_ds.map(
      lambda e, i, r: tf.numpy_function(eval_element, [e, i, r], out_types,
                                        stateful=False),
      num_parallel_calls=parallel, deterministic=True)
  eval_ds = _finish_eval(eval_ds, keys, size, eval_batch)
  return train_ds, eval_ds


def shard_batch(batch: dict[str, Any], mesh: jax.sharding.Mesh,
                data_axis: str = "data") -> dict[str, jax.Array]:
  """Per-host numpy batch -> global `jax.Array`s sharded along `data_axis`.

  Args:
    batch: dict of per-host arrays (numpy or tf tensors), batch axis first.
    mesh: the device mesh.
    data_axis: the mesh axis the batch is split over.

  Returns:
    dict of global arrays whose leading axis is the global batch.
  """
  if data_axis not in mesh.axis_names:
    raise ValueError(
        f"mesh has no axis {data_axis!r} (axes: {mesh.axis_names})")
  sharding = jax.sharding.NamedSharding(
      mesh, jax.sharding.PartitionSpec(data_axis))
  out = {}
  for key, value in batch.items():
    value = np.asarray(value)
    if value.ndim == 0:
      raise ValueError(f"batch[{key!r}] is a scalar; expected a batch axis")
    out[key] = jax.make_array_from_process_local_data(sharding, value)
  return out


@dataclasses.dataclass(frozen=True)
class PipelineRate:
  """Throughput of a train stream.

  Attributes:
    images_per_s: wall-clock images (the `image` key) per second.
    cpu_ms_per_image: this process's CPU time (all threads) per image; on a
      machine shared with other jobs it still says what one image costs.
  """
  images_per_s: float
  cpu_ms_per_image: float


def measure_pipeline(data_config: ml_collections.ConfigDict,
                     num_batches: int, *, seed: int = 0,
                     warmup_batches: int = 2) -> PipelineRate:
  """Times the train stream of `data_config` (see `benchmark_pipeline`)."""
  if num_batches <= 0:
    raise ValueError(f"num_batches must be positive, got {num_batches}")
  train_ds, _ = create_datasets(data_config, seed=seed)
  iterator = train_ds.as_numpy_iterator()
  for _ in range(warmup_batches):
    next(iterator)
  images = 0
  begin, cpu_begin = time.perf_counter(), time.process_time()
  for _ in range(num_batches):
    images += next(iterator)["image"].shape[0]
  wall = time.perf_counter() - begin
  cpu = time.process_time() - cpu_begin
  return PipelineRate(images / wall, 1000.0 * cpu / images)


def benchmark_pipeline(data_config: ml_collections.ConfigDict,
                       num_batches: int, *, seed: int = 0,
                       warmup_batches: int = 2) -> float:
  """Measures the train stream's throughput.

  Args:
    data_config: the data section.
    num_batches: batches to time (after `warmup_batches`).
    seed: stream seed.
    warmup_batches: batches read before the clock starts.

  Returns:
    Images per second (per host) of the `image` key.
  """
  return measure_pipeline(data_config, num_batches, seed=seed,
                          warmup_batches=warmup_batches).images_per_s
