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
* `id`        [b] int32 (eval only) the image's index in the whole held-out
  split (padding: past its end); evaluation keys each image's halftone
  screen, noise map and random codes by it (`trainers.per_example`), and
  an indexed reference source is picked by it.

Evaluation on several hosts: each host reads a strided shard of the held-out
files, and every host yields the same number of full eval batches
(`eval_steps`): a host that runs out of images pads with zero images whose
mask is 0. Metrics are therefore exact per-example means
(sum(value * mask) / sum(mask), see `trainers.loop.evaluate`), the same for
any eval batch size and any number of processes.

Sources (`data_config.source`, `reference_source`, `eval_source`):

* `demo`: the photographs embedded in installed packages (ihc_jax.data.demo),
  train = `demo.TRAIN_NAMES`, eval = `demo.EVAL_NAMES`.
* `folder:<path>`: every image below <path> (`image_io.list_image_files`:
  recursive; bmp, gif, jpeg, jpg, pbm, pgm, png, pnm, ppm, tif, tiff, webp
  in any case; hidden files and folders skipped), sorted by relative path.
* `tfds:<name>[:<split>]`: a TFDS data set that is already prepared in
  `data_config.tfds_data_dir` (never downloaded unless
  `data_config.tfds_download=True`).

The train stream is a pure function of (seed, element index): element e of a
host takes record `permutation(seed, epoch)[e % n]` with epoch = e // n, and
its crop offsets and flip come from a numpy Generator seeded with
(seed, stream, process, e) (stateless TF uniforms in the native path).
`start_step=k` therefore starts exactly at batch k of a fresh stream by
skipping indices, without decoding anything. (TFDS
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

Code: this module is the public entry (configuration, `create_datasets`,
`shard_batch`, throughput); the parts live in `ihc_jax.data`: `sources`
(demo / folder / TFDS sources, held-out split, host shards, `eval_steps`),
`streams` (train image streams, `Picker`, the PIL and native decode paths),
`datasets` (train and eval element assembly), `examples` (pseudo ground
truth files), `crops` (resize and crop geometry), `skips` (unreadable files)
and `decode` (TensorFlow-op decoding); file listing and PIL decoding are in
`ihc_jax.image_io`.
"""

import dataclasses
import time
from typing import Any, Sequence

import jax
import ml_collections
import numpy as np
import tensorflow as tf

from ihc_jax import image_io
from ihc_jax.data import crops
from ihc_jax.data import datasets
from ihc_jax.data import examples as examples_lib
from ihc_jax.data import skips
from ihc_jax.data import sources
from ihc_jax.data import streams
from ihc_jax.data import tf_setup  # pylint: disable=unused-import

# Names this module has always offered; they live in ihc_jax.data and
# ihc_jax.image_io now.
IMAGE_EXTENSIONS = image_io.IMAGE_EXTENSIONS
decode_image = image_io.decode_image
list_image_files = image_io.list_image_files
resize_short_side = crops.resize_short_side
eval_steps = sources.eval_steps
skipped_files = skips.skipped_files
num_skipped_files = skips.num_skipped_files
reset_skipped_files = skips.reset_skipped_files
# Private names that tests reach (the PIL path, the element picker).
_Picker = streams.Picker
_pil_random_crop = streams.pil_random_crop


def default_data_config() -> ml_collections.ConfigDict:
  """The data section with every field the pipeline reads, and its defaults.

  Returns:
    ConfigDict with fields:
      source: "demo", "photos", "folder:<path>" or "tfds:<name>[:<split>]".
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
        photos, eval_source); a folder or tfds source without eval_source
        needs > 0.
      num_train_images: train on this many photographs of the train split
        of `demo`, `photos` or a folder, evenly spaced in name order (for
        learning curves over the amount of data); -1 -> all of them.
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
  config.num_train_images = -1
  config.eval_drop_remainder = False
  config.random_flip = True
  config.shuffle_buffer = 1024
  config.tfds_data_dir = ml_collections.config_dict.placeholder(str)
  config.tfds_download = False
  config.cache = False
  config.num_parallel_calls = -1
  return config


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


def _num_eval_batches(data_config: ml_collections.ConfigDict,
                      eval_counts: Sequence[int], eval_batch: int,
                      process_count: int) -> int:
  """Eval batches every host runs; at least one."""
  num_eval_batches = eval_steps(
      eval_counts, eval_batch, bool(data_config.get("eval_drop_remainder",
                                                    False)))
  if num_eval_batches == 0:
    raise ValueError(
        f"the eval set ({sum(eval_counts)} images over {process_count} "
        f"processes) fills no eval batch of {eval_batch} per process with "
        "data.eval_drop_remainder=True; lower data.eval_batch_size or set "
        "eval_drop_remainder=False")
  return num_eval_batches


def _examples(data_config: ml_collections.ConfigDict,
              host: sources.HostSources) -> tuple[Any, Any]:
  """The example index of the train and of the eval images, or Nones."""
  example_dir = data_config.get("example_dir")
  if not example_dir:
    return None, None
  indexed = sources.IndexedSource
  if not (isinstance(host.train, indexed)
          and isinstance(host.evaluation, indexed)
          and isinstance(host.reference, indexed)):
    raise ValueError(
        "data.example_dir matches files by image name, which needs 'demo' "
        "or 'folder:' sources for images, eval and references (not tfds)")
  return (examples_lib.Examples(example_dir, host.train, host.reference),
          examples_lib.Examples(example_dir, host.evaluation,
                                host.reference))


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
  options = datasets.StreamOptions(
      size=size, random_flip=bool(data_config.get("random_flip", True)),
      shuffle_buffer=int(data_config.get("shuffle_buffer", 1024)),
      parallel=tf.data.AUTOTUNE if parallel <= 0 else parallel)
  host = sources.build_sources(data_config, process_index, process_count)
  num_eval_batches = _num_eval_batches(data_config, host.eval_counts,
                                       eval_batch, process_count)
  train_examples, eval_examples = _examples(data_config, host)
  train_ds = datasets.train_dataset(
      host.train, host.reference, train_examples, seed=seed,
      process_index=process_index, start=start_step * train_batch,
      batch=train_batch, options=options)
  eval_ds = datasets.eval_dataset(
      host.evaluation, host.reference, eval_examples,
      host_count=host.eval_counts[process_index],
      length=num_eval_batches * eval_batch, batch=eval_batch,
      options=options, process_index=process_index,
      process_count=process_count)
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
    cpu_ms_per_image: this process's CPU time (all threads) per image; on a
      machine shared with other jobs it still says what one image costs.
    num_images: images read while the clock ran (timed batches x batch).
    seconds: wall-clock seconds of the timed batches.
  """
  cpu_ms_per_image: float
  num_images: int
  seconds: float

  @property
  def images_per_s(self) -> float:
    """Wall-clock images (the `image` key) per second."""
    return self.num_images / self.seconds


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
  return PipelineRate(1000.0 * cpu / images, images, wall)


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
