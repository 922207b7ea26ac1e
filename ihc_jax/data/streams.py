"""Train image streams: one cropped photo per element index, deterministic.

Element e of a host's stream is a pure function of (seed, stream, process,
e): an indexed source (demo, folder) reads record `permutation(seed, epoch)[e
% n]` (`Picker`), an unreadable record is replaced by the next readable one
of the same permutation; a TFDS source is read in a seeded shuffle. Crop
offsets and flips come from stateless uniforms of (seed, stream, process, e),
so `start` skips elements without decoding them.

Files are decoded by TensorFlow ops where possible (`ihc_jax.data.decode`)
and by PIL otherwise (`pil_random_crop`, the same geometry); in-memory and
cached sources are cropped in numpy.
"""

import os
import threading
from typing import Any, Sequence

import numpy as np
import tensorflow as tf

from ihc_jax import image_io
from ihc_jax.data import crops
from ihc_jax.data import skips
from ihc_jax.data import sources
from ihc_jax.data import tf_setup  # pylint: disable=unused-import


def seed_words(seed: int, *words: int) -> list[int]:
  """The numpy seed words of a stream: (seed mod 2**64, *words)."""
  return [int(seed) % (1 << 64)] + [int(w) for w in words]


def _tf_seed(seed: int, *words: int) -> int:
  state = np.random.SeedSequence(seed_words(seed, *words)).generate_state(1)
  return int(state[0])


class Picker:
  """Element index -> record of an indexed source, as a pure function.

  Element e reads record `permutation(epoch)[e % n]` (epoch = e // n); if that
  record is unreadable it takes the next readable one of the same permutation.
  """

  def __init__(self, source: sources.IndexedSource, words: Sequence[int]):
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


def _encoded_stream(source: sources.TfdsSource, words: Sequence[int],
                    shuffle_buffer: int, start: int) -> tf.data.Dataset:
  """Encoded records of a TFDS source in a seeded shuffle, from `start` on."""
  dataset = source.encoded().shuffle(
      shuffle_buffer, seed=_tf_seed(*words),
      reshuffle_each_iteration=True).repeat()
  # Skips encoded records: nothing is decoded.
  return dataset.skip(start)


# Extensions PIL decodes in the train stream: TensorFlow has no op for them.
_PIL_ONLY_EXTENSIONS = (".pbm", ".pgm", ".pnm", ".ppm", ".tif", ".tiff",
                        ".webp")
_NATIVE, _PIL = 0, 1


def _crop_uniforms(words: Sequence[int], element: tf.Tensor) -> tf.Tensor:
  """Three uniforms in [0, 1) of an element: row, column, flip."""
  key = _tf_seed(*words, 2) % (1 << 63)
  return tf.random.stateless_uniform(
      [3], seed=tf.stack([tf.constant(key, tf.int64), element]),
      dtype=tf.float32)


def pil_random_crop(name: bytes, contents: bytes, uniforms: np.ndarray,
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
    array = crops.resize_short_side(image_io.decode_image(contents, size),
                                    size)
  except image_io.DECODE_ERRORS as error:
    skips.record(name, f"{type(error).__name__}: {error}")
    raise ValueError(f"unreadable image {name}") from error
  height, width = array.shape[:2]
  # float64(u) * choices, floored, as `decode.crop_offsets`.
  top = min(int(np.floor(np.float64(uniforms[0]) * (height - size + 1))),
            height - size)
  left = min(int(np.floor(np.float64(uniforms[1]) * (width - size + 1))),
             width - size)
  flip = bool(random_flip and uniforms[2] < 0.5)
  return crops.crop(array, size, top, left, flip)


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
        lambda n, c, u: pil_random_crop(n, c, u, size, random_flip),
        [name, contents, uniforms], tf.float32, stateful=False)
    image.set_shape([size, size, 3])
    return image

  return tf.cond(tf.equal(mode, _NATIVE), native, pil)


def _indexed_native_stream(source: sources.IndexedSource, picker: Picker,
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


def _encoded_native_stream(source: sources.TfdsSource, words: Sequence[int],
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


def _indexed_python_stream(source: sources.IndexedSource, picker: Picker,
                           words: Sequence[int], start: int, size: int,
                           random_flip: bool, parallel: int
                           ) -> tf.data.Dataset:
  """Images of an in-memory (demo) or cached source, cropped in numpy."""
  def element_image(element):
    element = int(element)
    _, image = picker.pick(element)
    top, left, flip = crops.random_crop_params(
        np.random.default_rng(list(words) + [1, element]), image.shape, size,
        random_flip)
    return crops.crop(image, size, top, left, flip)

  def as_tensor(element):
    image = tf.numpy_function(element_image, [element], tf.float32,
                              stateful=False)
    image.set_shape([size, size, 3])
    return image

  return tf.data.Dataset.range(start, np.iinfo(np.int64).max).map(
      as_tensor, num_parallel_calls=parallel, deterministic=True)


def image_stream(source: Any, words: Sequence[int], start: int, size: int,
                 random_flip: bool, shuffle_buffer: int, parallel: int
                 ) -> tf.data.Dataset:
  """One train image per element from `start` on, for any source."""
  if not isinstance(source, sources.IndexedSource):
    return _encoded_native_stream(source, words, shuffle_buffer, start, size,
                                  random_flip, parallel)
  picker = Picker(source, words)
  in_memory = source.cache or any(not isinstance(item, str)
                                  for item in source.items)
  if in_memory:
    # Decoded once and kept: numpy crops beat decoding again.
    return _indexed_python_stream(source, picker, words, start, size,
                                  random_flip, parallel)
  return _indexed_native_stream(source, picker, words, start, size,
                                random_flip, parallel)
