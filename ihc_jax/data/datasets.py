"""One host's train and eval tf.data datasets, built from its sources.

Train elements pair an image with an independently drawn reference (two
streams of `ihc_jax.data.streams`); with `data.example_dir` the example of
the pair is read and cropped like its image in one numpy function. Eval
elements are centre crops with a fixed reference per image (independent of
the train seed), padded with masked elements up to the common number of
eval batches.
"""

import dataclasses
from typing import Any, Sequence

import numpy as np
import tensorflow as tf

from ihc_jax.data import crops
from ihc_jax.data import examples as examples_lib
from ihc_jax.data import sources
from ihc_jax.data import streams
from ihc_jax.data import tf_setup  # pylint: disable=unused-import

# Stream tags that make the image and reference streams independent.
_IMAGE_STREAM = 0
_REFERENCE_STREAM = 1
# Eval pairs (image i -> reference) are fixed, independent of the train seed.
_EVAL_SEED = 20210919


@dataclasses.dataclass(frozen=True)
class StreamOptions:
  """How elements are made.

  Attributes:
    size: S, the side of the square crops.
    random_flip: random horizontal flips in the train stream.
    shuffle_buffer: shuffle buffer of TFDS train streams.
    parallel: decoding threads (or tf.data.AUTOTUNE).
  """
  size: int
  random_flip: bool
  shuffle_buffer: int
  parallel: int


def _keys(examples: Any) -> list[str]:
  return ["image", "reference"] + (["example"] if examples else [])


def _out_types(keys: Sequence[str]) -> list[tf.dtypes.DType]:
  return [tf.float32] * len(keys) + [tf.bool]


def _unusable(size: int, count: int) -> list[Any]:
  """The placeholder of an element whose files could not be read."""
  return [np.zeros((size, size, 3), np.float32)] * count + [False]


def _picker(source: Any, words: Sequence[int]) -> streams.Picker | None:
  if isinstance(source, sources.IndexedSource):
    return streams.Picker(source, words)
  return None


def _read(picker: streams.Picker | None, source: Any, index: int,
          encoded: bytes) -> tuple[int, np.ndarray | None]:
  """(record index or -1, image or None): from an indexed source through
  its picker, else decoded from the streamed bytes."""
  if picker is not None:
    return picker.pick(index)
  return -1, source.load_bytes(encoded, f"{source.split}#{index}")


def _endless_empty() -> tf.data.Dataset:
  return tf.data.Dataset.from_tensors(tf.constant(b"")).repeat()


class _TrainElement:
  """Train element e -> crops of (image, reference, example) and `usable`."""

  def __init__(self, train: Any, reference: Any,
               examples: examples_lib.Examples, image_words: list[int],
               reference_words: list[int], options: StreamOptions):
    self.train = train
    self.reference = reference
    self.examples = examples
    self.image_words = image_words
    self.reference_words = reference_words
    self.image_picker = _picker(train, image_words)
    self.reference_picker = _picker(reference, reference_words)
    self.options = options

  def arrays(self, element, image_bytes, reference_bytes) -> list[Any]:
    size, random_flip = self.options.size, self.options.random_flip
    element = int(element)
    image_rng = np.random.default_rng(self.image_words + [1, element])
    reference_rng = np.random.default_rng(self.reference_words + [1, element])
    image_index, image = _read(self.image_picker, self.train, element,
                               image_bytes)
    reference_index, reference_image = _read(
        self.reference_picker, self.reference, element, reference_bytes)
    if image is None or reference_image is None:
      return _unusable(size, 3)
    top, left, flip = crops.random_crop_params(image_rng, image.shape, size,
                                               random_flip)
    outputs = [crops.crop(image, size, top, left, flip)]
    stem = self.train.stems[image_index]
    start = int(reference_rng.integers(0, 1 << 30))
    reference_index, reference_image, example = self.examples.choose(
        stem, reference_index, start, image.shape)
    r_top, r_left, r_flip = crops.random_crop_params(
        reference_rng, reference_image.shape, size, random_flip)
    outputs.append(crops.crop(reference_image, size, r_top, r_left, r_flip))
    outputs.append(crops.crop(example, size, top, left, flip))
    return outputs + [True]


def train_dataset(train: Any, reference: Any,
                  examples: examples_lib.Examples | None, *, seed: int,
                  process_index: int, start: int, batch: int,
                  options: StreamOptions) -> tf.data.Dataset:
  """The endless train batches of a host from element `start` on."""
  image_words = streams.seed_words(seed, _IMAGE_STREAM, process_index)
  reference_words = streams.seed_words(seed, _REFERENCE_STREAM,
                                       process_index)
  o = options
  if examples is None:
    # Independent image and reference streams (native decoding for files).
    train_ds = tf.data.Dataset.zip(
        streams.image_stream(train, image_words, start, o.size,
                             o.random_flip, o.shuffle_buffer, o.parallel),
        streams.image_stream(reference, reference_words, start, o.size,
                             o.random_flip, o.shuffle_buffer, o.parallel))
    train_ds = train_ds.map(lambda i, r: {"image": i, "reference": r})
    return train_ds.batch(batch, drop_remainder=True).prefetch(
        tf.data.AUTOTUNE)
  # Examples are cropped like their target: one numpy function for both.
  element = _TrainElement(train, reference, examples, image_words,
                          reference_words, options)
  keys = _keys(examples)
  empty = _endless_empty()
  elements = tf.data.Dataset.range(start, np.iinfo(np.int64).max)
  train_ds = tf.data.Dataset.zip((elements, empty, empty))
  train_ds = train_ds.map(
      lambda e, i, r: tf.numpy_function(element.arrays, [e, i, r],
                                        _out_types(keys), stateful=False),
      num_parallel_calls=o.parallel, deterministic=True)
  return _finish(train_ds, keys, o.size, batch, True)


class _EvalElement:
  """Eval element i -> centre crops of (image, reference, example), usable."""

  def __init__(self, evaluation: Any, reference: Any,
               examples: examples_lib.Examples | None, host_count: int,
               size: int, process_index: int = 0, process_count: int = 1):
    self.process_index = process_index
    self.process_count = process_count
    self.evaluation = evaluation
    self.reference = reference
    self.examples = examples
    self.reference_picker = _picker(reference, [_EVAL_SEED])
    self.host_count = host_count
    self.size = size
    self.num_keys = len(_keys(examples))

  def _image(self, index: int, image_bytes: bytes) -> np.ndarray | None:
    if isinstance(self.evaluation, sources.IndexedSource):
      return self.evaluation.load(index)
    return self.evaluation.load_bytes(
        image_bytes, f"{self.evaluation.split}#{index}")

  def arrays(self, index, image_bytes, reference_bytes) -> list[Any]:
    size = self.size
    index = int(index)
    if index >= self.host_count:
      # Padding up to the common number of batches.
      return _unusable(size, self.num_keys)
    image = self._image(index, image_bytes)
    # An indexed reference source is picked by the example's place in the
    # whole split, so that it does not depend on the number of processes.
    reference_index, reference_image = _read(
        self.reference_picker, self.reference,
        example_id(index, self.process_index, self.process_count),
        reference_bytes)
    if image is None or reference_image is None:
      return _unusable(size, self.num_keys)
    top, left = crops.center_crop_params(image.shape, size)
    outputs = [crops.crop(image, size, top, left, False)]
    example = None
    if self.examples is not None:
      reference_index, reference_image, example = self.examples.choose(
          self.evaluation.stems[index], reference_index, 0, image.shape)
    r_top, r_left = crops.center_crop_params(reference_image.shape, size)
    outputs.append(crops.crop(reference_image, size, r_top, r_left, False))
    if example is not None:
      outputs.append(crops.crop(example, size, top, left, False))
    return outputs + [True]


def example_id(index: int, process_index: int, process_count: int) -> int:
  """The split-wide index of a host's eval element `index` (strided shards,
  `sources.build_sources`); padding gets ids past the split's end."""
  return process_index + index * process_count


def eval_dataset(evaluation: Any, reference: Any,
                 examples: examples_lib.Examples | None, *, host_count: int,
                 length: int, batch: int, options: StreamOptions,
                 process_index: int = 0, process_count: int = 1
                 ) -> tf.data.Dataset:
  """`length` eval elements of a host (its shard, then padding), batched,
  each with its split-wide `id` (`example_id`)."""
  element = _EvalElement(evaluation, reference, examples, host_count,
                         options.size, process_index, process_count)
  keys = _keys(examples)
  empty = _endless_empty()
  eval_elements = tf.data.Dataset.range(length)
  if isinstance(evaluation, sources.IndexedSource):
    eval_images = empty
  else:
    eval_images = evaluation.encoded().concatenate(empty)
  eval_references = (empty if element.reference_picker is not None
                     else reference.encoded().repeat())
  eval_ds = tf.data.Dataset.zip((eval_elements, eval_images, eval_references))
  eval_ds = eval_ds.map(
      lambda e, i, r: (tf.cast(example_id(e, process_index, process_count),
                               tf.int32),
                       *tf.numpy_function(element.arrays, [e, i, r],
                                          _out_types(keys), stateful=False)),
      num_parallel_calls=options.parallel, deterministic=True)
  return _finish_eval(eval_ds, keys, options.size, batch)


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
  def to_dict(ids, *values):
    out = {}
    for key, value in zip(keys, values[:-1]):
      value.set_shape([size, size, 3])
      out[key] = value
    out["mask"] = tf.cast(values[-1], tf.float32)
    out["id"] = ids
    return out
  return dataset.map(to_dict).batch(batch, drop_remainder=True).prefetch(
      tf.data.AUTOTUNE)
