"""Demo photographs that ship inside installed Python packages.

No dataset can be downloaded on the machines this project runs on, so the demo
configuration trains on the colour photographs bundled with scikit-image,
scikit-learn and matplotlib. Only real colour photographs are listed (no gray
or synthetic test charts). The list is fixed and sorted by name; its
licences are recorded in docs/data.md.

The split is fixed: `EVAL_NAMES` are held out for evaluation, the rest is the
training set (the input pipeline takes many random crops from it).
"""

import dataclasses
import functools
import importlib.util
import os

from absl import logging
import numpy as np
from PIL import Image


@dataclasses.dataclass(frozen=True)
class DemoImage:
  """Where one demo photograph lives.

  Attributes:
    name: the image's name in this project.
    package: the installed package that ships it.
    path: path of the file relative to the package directory.
    licence: the licence as the package documents it.
  """
  name: str
  package: str
  path: str
  licence: str


DEMO_IMAGES: tuple[DemoImage, ...] = (
    DemoImage("astronaut", "skimage", "data/astronaut.png",
              "public domain (NASA)"),
    DemoImage("chelsea", "skimage", "data/chelsea.png", "CC0"),
    DemoImage("china", "sklearn", "datasets/images/china.jpg", "CC BY 2.0"),
    DemoImage("coffee", "skimage", "data/coffee.png", "CC0"),
    DemoImage("flower", "sklearn", "datasets/images/flower.jpg", "CC BY 2.0"),
    DemoImage("grace_hopper", "matplotlib",
              "mpl-data/sample_data/grace_hopper.jpg",
              "public domain (U.S. Navy photograph)"),
    DemoImage("hubble_deep_field", "skimage", "data/hubble_deep_field.jpg",
              "public domain (NASA)"),
    DemoImage("immunohistochemistry", "skimage", "data/ihc.png",
              "no known copyright restrictions"),
    DemoImage("motorcycle_left", "skimage", "data/motorcycle_left.png",
              "Middlebury 2014 stereo data set, research use"),
    DemoImage("retina", "skimage", "data/retina.jpg", "CC0"),
    DemoImage("rocket", "skimage", "data/rocket.jpg", "public domain (SpaceX)"),
)

DEMO_NAMES: tuple[str, ...] = tuple(image.name for image in DEMO_IMAGES)

# Held out for evaluation: three everyday scenes with varied colours.
EVAL_NAMES: tuple[str, ...] = ("chelsea", "coffee", "flower")
TRAIN_NAMES: tuple[str, ...] = tuple(
    name for name in DEMO_NAMES if name not in EVAL_NAMES)

SPLITS = ("all", "train", "eval")


def _package_dir(package: str) -> str | None:
  spec = importlib.util.find_spec(package)
  if spec is None or not spec.submodule_search_locations:
    return None
  return list(spec.submodule_search_locations)[0]


def demo_image_path(name: str) -> str:
  """The file of one demo photograph.

  Args:
    name: one of `DEMO_NAMES`.

  Returns:
    Absolute path of the image file.

  Raises:
    KeyError: unknown name.
    FileNotFoundError: the package or file is not installed.
  """
  entries = {image.name: image for image in DEMO_IMAGES}
  if name not in entries:
    raise KeyError(f"unknown demo image {name!r}; known: {DEMO_NAMES}")
  entry = entries[name]
  package_dir = _package_dir(entry.package)
  if package_dir is None:
    raise FileNotFoundError(
        f"demo image {name!r} ships with the package {entry.package!r}, "
        "which is not installed")
  path = os.path.join(package_dir, entry.path)
  if not os.path.isfile(path):
    raise FileNotFoundError(f"demo image {name!r} not found at {path}")
  return path


@functools.lru_cache(maxsize=None)
def _load(name: str) -> np.ndarray:
  with Image.open(demo_image_path(name)) as image:
    array = np.asarray(image.convert("RGB"), dtype=np.uint8)
  array.setflags(write=False)
  return array


def available_names(split: str = "all") -> tuple[str, ...]:
  """Names of the demo photographs of a split that are installed here.

  matplotlib is optional for this package; without it `grace_hopper` is left
  out (with a warning) and the list is otherwise unchanged.

  Args:
    split: "all", "train" or "eval".

  Returns:
    Sorted names.
  """
  if split not in SPLITS:
    raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
  names = {"all": DEMO_NAMES, "train": TRAIN_NAMES, "eval": EVAL_NAMES}[split]
  found = []
  for name in names:
    try:
      demo_image_path(name)
    except FileNotFoundError as error:
      logging.warning("Demo image left out: %s", error)
      continue
    found.append(name)
  return tuple(sorted(found))


def photo_files(split: str = "all") -> list[tuple[str, str]]:
  """(name, file path) of the installed demo photographs of a split (the
  interface `data.photos` has too)."""
  return [(name, demo_image_path(name)) for name in available_names(split)]


def demo_images(split: str = "all") -> list[tuple[str, np.ndarray]]:
  """The demo photographs of a split.

  Args:
    split: "all", "train" (the training set) or "eval" (the held-out set).

  Returns:
    (name, uint8 [H,W,3] RGB array) pairs sorted by name. The arrays are
    read-only and shared between calls.
  """
  return [(name, _load(name)) for name in available_names(split)]
