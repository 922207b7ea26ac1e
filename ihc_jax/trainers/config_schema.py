"""Config validation against a stage's default config, and hparams.

A stage's `default_config()` is the schema: every key of a run's config must
exist there with the same type; choices and required paths are checked too,
before any compute.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import ml_collections

REQUIRED_PREFIX = "REQUIRED"


def _check_section(config: Any, default: Any, path: str,
                   choices: Mapping[str, Sequence[Any]]) -> None:
  for key in config.keys():
    name = f"{path}{key}"
    if key not in default:
      raise ValueError(f"unknown config key {name!r}; valid keys at this level: "
                       f"{sorted(default.keys())}")
    value, expected = config[key], default[key]
    if isinstance(expected, (ml_collections.ConfigDict, dict)):
      if not isinstance(value, (ml_collections.ConfigDict, dict)):
        raise TypeError(f"config key {name!r} must be a section, got "
                        f"{type(value).__name__}")
      _check_section(value, expected, name + ".", choices)
      continue
    if expected is not None and value is not None:
      ok = isinstance(value, type(expected))
      if isinstance(expected, float) and isinstance(value, int):
        ok = not isinstance(value, bool)
      if isinstance(expected, (tuple, list)) and isinstance(value, (tuple, list)):
        ok = True
      if isinstance(expected, bool) != isinstance(value, bool):
        ok = False
      if not ok:
        raise TypeError(f"config key {name!r} must be {type(expected).__name__}, "
                        f"got {type(value).__name__} {value!r}")
    if key.endswith("every_steps") and isinstance(value, int) and value < 1:
      raise ValueError(f"config key {name!r} is {value}; an interval in "
                       f"steps must be at least 1")
    for pattern, valid in choices.items():
      if _matches(pattern, name) and value not in valid:
        raise ValueError(f"config key {name!r} is {value!r}; valid choices: "
                         f"{list(valid)}")


def _matches(pattern: str, name: str) -> bool:
  parts, names = pattern.split("."), name.split(".")
  return len(parts) == len(names) and all(
      p in ("*", n) for p, n in zip(parts, names))


def validate_config(config: ml_collections.ConfigDict,
                    default: ml_collections.ConfigDict, *,
                    choices: Mapping[str, Sequence[Any]] = (),
                    required: Iterable[str] = ()) -> None:
  """Checks a stage config against its default before any compute.

  Args:
    config: the config to run.
    default: the stage's default config (keys and types are the schema).
    choices: dotted key (`*` matches any one level) -> allowed values.
    required: dotted keys that must hold a set path: a value starting with
      "REQUIRED" (the placeholder of the default configs) or empty fails.

  Raises:
    ValueError / TypeError: naming the key and the valid keys, types or
      choices.
  """
  _check_section(config, default, "", dict(choices))
  missing = []
  for key in required:
    value = config
    for part in key.split("."):
      value = value[part]
    if not value or str(value).startswith(REQUIRED_PREFIX):
      missing.append(f"{key!r} ({value!r})")
  if missing:
    raise ValueError(f"config keys must be set: {', '.join(missing)}")


def _flatten(config: Any, prefix: str = "") -> dict[str, Any]:
  out = {}
  for key in config.keys():
    value = config[key]
    if isinstance(value, (ml_collections.ConfigDict, dict)):
      out.update(_flatten(value, f"{prefix}{key}."))
    else:
      out[f"{prefix}{key}"] = value
  return out


def hparams(config: ml_collections.ConfigDict) -> dict[str, Any]:
  """Flat {dotted key: scalar} view of a config for `write_hparams`."""
  out = {}
  for key, value in _flatten(config).items():
    if isinstance(value, (bool, int, float, str)) or value is None:
      out[key] = "None" if value is None else value
    else:
      out[key] = str(value)
  return out
