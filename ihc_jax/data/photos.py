"""Every real colour photograph that installs from a package registry.

`source="photos"` trains on the demo photographs (`ihc_jax.data.demo`, from
scikit-image, scikit-learn and matplotlib) and the nature and landscape
photographs shipped by two Debian packages, `mate-backgrounds` and
`plasma-workspace-wallpapers`. Nothing is downloaded at run time: a photo
whose package is not installed is left out with a warning, and
`python -m ihc_jax.data.photos` says which are missing and the one
`apt-get install` line that brings them. Artwork, renders, logos and
vector wallpapers of those packages are not listed. Licences are recorded
here and in docs/data.md.

`lomiri-wallpapers*` is never listed: the project's maintainers evaluate
trained checkpoints on those photos.

The split is fixed (`EVAL_NAMES`, 9 of 35, a quarter): the demo's three
held-out photos and six scenes unlike the rest (boats at sunset, a forest
path, a kite in a blue sky, an aerial beach, a ladybird, a storm sky).
"""

from __future__ import annotations

import dataclasses
import os
import sys

from absl import logging

from ihc_jax.data import demo


@dataclasses.dataclass(frozen=True)
class Photo:
  """One photograph and the package that installs it.

  Attributes:
    name: the photo's name in this project.
    package: a Python package (`kind="python"`) or a Debian package.
    kind: "python" or "debian".
    path: relative to the Python package directory, or absolute (Debian).
    licence: the licence as the package documents it.
    author: the author as the package documents it.
  """
  name: str
  package: str
  kind: str
  path: str
  licence: str
  author: str = ""


_MATE = "/usr/share/backgrounds/mate/nature/"
_PLASMA = "/usr/share/wallpapers/"
_MATE_LICENCE = "GPL-2+ (debian/copyright of mate-backgrounds)"
_PLASMA_LICENCE = "LGPL-3 (the wallpaper's metadata.json)"


def _mate(name: str, author: str) -> Photo:
  return Photo(f"mate_{name.lower()}", "mate-backgrounds", "debian",
               f"{_MATE}{name}.jpg", _MATE_LICENCE, author)


def _plasma(name: str, author: str, size: str = "1920x1080",
            licence: str = _PLASMA_LICENCE) -> Photo:
  return Photo(f"plasma_{name.lower()}", "plasma-workspace-wallpapers",
               "debian", f"{_PLASMA}{name}/contents/images/{size}.jpg",
               licence, author)


DEBIAN_PHOTOS: tuple[Photo, ...] = (
    _mate("Aqua", "Charles Barbin"),
    _mate("Blinds", "Lennart Poettering, Andrea Cimitan"),
    _mate("Dune", "Marco Cogoni, Hylke Bons"),
    _mate("FreshFlower", "Jens Ansorg"),
    _mate("Garden", "Charles Barbin"),
    _mate("GreenMeadow", "Timothy Schellhase, Lapo Calamandrei"),
    _mate("LadyBird", "Charles Barbin"),
    _mate("RainDrops", "\"blackcombwhistler07\""),
    _mate("Storm", "Sergey Nazarov"),
    _mate("TwoWings", "Charles Barbin, Hylke Bons"),
    _mate("Wood", "Jean-François Fortin Tam"),
    _mate("YellowFlower", "Charles Barbin"),
    _plasma("BytheWater", "Maciej Wiklo"),
    _plasma("ColdRipple", "Risto Saukonpää"),
    _plasma("ColorfulCups", "Dmitri Popov", size="2560x1600"),
    _plasma("DarkestHour", "Risto Saukonpää"),
    _plasma("EveningGlow", "Ian Hex"),
    _plasma("FallenLeaf", "Martin Klapetek"),
    _plasma("Grey", "Sigi Sagi"),
    _plasma("Kite", "Risto Saukonpää"),
    _plasma("OneStandsOut", "Risto Saukonpää"),
    _plasma("Path", "Risto Saukonpää"),
    _plasma("Volna", "Nikita Babin", size="5120x2880",
            licence="CC-BY-SA-4.0 (the wallpaper's metadata.json)"),
    _plasma("summer_1am", "Risto Saukonpää"),
)

PHOTOS: tuple[Photo, ...] = tuple(sorted(
    tuple(Photo(image.name, image.package, "python", image.path,
                image.licence) for image in demo.DEMO_IMAGES)
    + DEBIAN_PHOTOS, key=lambda photo: photo.name))

PHOTO_NAMES: tuple[str, ...] = tuple(photo.name for photo in PHOTOS)
EVAL_NAMES: tuple[str, ...] = tuple(sorted(demo.EVAL_NAMES + (
    "mate_ladybird", "mate_storm", "plasma_eveningglow", "plasma_kite",
    "plasma_path", "plasma_volna")))
TRAIN_NAMES: tuple[str, ...] = tuple(
    name for name in PHOTO_NAMES if name not in EVAL_NAMES)
SPLITS = demo.SPLITS
DEBIAN_PACKAGES: tuple[str, ...] = tuple(sorted(
    {photo.package for photo in DEBIAN_PHOTOS}))


def photo_path(name: str) -> str:
  """The file of one photograph.

  Raises:
    KeyError: unknown name.
    FileNotFoundError: its package or file is not installed (the message
      names the package to install).
  """
  entries = {photo.name: photo for photo in PHOTOS}
  if name not in entries:
    raise KeyError(f"unknown photo {name!r}; known: {PHOTO_NAMES}")
  photo = entries[name]
  if photo.kind == "python":
    return demo.demo_image_path(name)
  if not os.path.isfile(photo.path):
    raise FileNotFoundError(
        f"photo {name!r} ships with the Debian package {photo.package!r}, "
        f"not installed here ({photo.path} is missing): apt-get install "
        f"{photo.package}")
  return photo.path


def available_names(split: str = "all") -> tuple[str, ...]:
  """Names of the photographs of a split that are installed here (sorted).

  A photo whose package is missing is left out with one warning per
  package.
  """
  if split not in SPLITS:
    raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
  names = {"all": PHOTO_NAMES, "train": TRAIN_NAMES, "eval": EVAL_NAMES}[split]
  found, missing = [], {}
  for name in names:
    try:
      photo_path(name)
    except FileNotFoundError:
      package = next(p.package for p in PHOTOS if p.name == name)
      missing.setdefault(package, []).append(name)
      continue
    found.append(name)
  for package, left_out in sorted(missing.items()):
    logging.warning("Photos left out (package %s not installed): %s",
                    package, ", ".join(left_out))
  return tuple(sorted(found))


def photo_files(split: str = "all") -> list[tuple[str, str]]:
  """(name, file path) of the installed photographs of a split."""
  return [(name, photo_path(name)) for name in available_names(split)]


def install_command(missing_only: bool = True) -> str:
  """The `apt-get install` line for the Debian packages ('' if none)."""
  packages = [p for p in DEBIAN_PACKAGES
              if not missing_only or any(
                  not os.path.isfile(photo.path) for photo in DEBIAN_PHOTOS
                  if photo.package == p)]
  if not packages:
    return ""
  return "apt-get install -y --no-install-recommends " + " ".join(packages)


def main(argv: list[str] | None = None) -> int:
  """Lists the photographs, their split and whether they are installed."""
  del argv
  for photo in PHOTOS:
    split = "eval" if photo.name in EVAL_NAMES else "train"
    try:
      where = photo_path(photo.name)
    except FileNotFoundError:
      where = f"MISSING (package {photo.package})"
    print(f"{photo.name:24s} {split:5s} {where}")
  command = install_command()
  installed = len(available_names("all"))
  print(f"{installed} of {len(PHOTOS)} photos installed "
        f"({len(available_names('eval'))} held out).")
  if command:
    print(f"To install the missing ones: {command}")
  return 0 if not command else 1


if __name__ == "__main__":
  sys.exit(main(sys.argv))
