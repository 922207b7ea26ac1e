"""Where the colorization pipeline's four networks come from, and go to.

`ihc_jax.inference.Pipeline` is built from either

* a folder of converted official weights (`ihn.npz`, `generator.npz`,
  `encoder.npz`, `fusion.npz`, or `.safetensors` files of the same names),
  optionally with a `pipeline.json` describing non-official sizes (what
  `write_folder` writes), read by `read_official`; or
* training checkpoints (`read_workdir`): a chained workdir with `ihn/`,
  `color/`, `fusion/`, or a stage workdir whose config names the others
  under `frozen`.

Both return the pieces of a pipeline (model config, variables, constructor
arguments) and raise `PipelineError` with one line naming what is missing.
`init_random_variables` makes random-weight variables of the same networks
for tests and benchmarks.
"""

from __future__ import annotations

import functools
import json
import os
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from ihc_jax import models
from ihc_jax import weights

NETWORKS = ("ihn", "generator", "encoder", "fusion")
OFFICIAL_FILES = {"ihn": "ihn.npz", "generator": "generator.npz",
                  "encoder": "encoder.npz", "fusion": "fusion.npz"}
# The stage of a chained training workdir that trains each network.
STAGE_OF = {"ihn": "ihn", "generator": "color", "encoder": "color",
            "fusion": "fusion"}
# Screen period of the official training data, measured on the released
# sample inputs (original-code.md §10): a clustered-dot screen of 3.0 px.
OFFICIAL_SCREEN_PERIOD = 3.0
# Optional file next to the npz files describing non-official networks.
PIPELINE_FILE = "pipeline.json"
OFFICIAL_IMAGE_SIZE = 256
# Keyword arguments of each network's init and apply at inference.
TRAIN_KWARG = {"ihn": {"train": False}, "generator": {"train": False},
               "encoder": {}, "fusion": {}}


class PipelineError(Exception):
  """A checkpoint or weight folder that cannot make a pipeline (one line)."""


def example_inputs(model_config: Any, size: int
                   ) -> dict[str, tuple[jax.ShapeDtypeStruct, ...]]:
  """Example inputs (shapes only) of each network, for init and validation."""
  def spec(*shape):
    return jax.ShapeDtypeStruct(shape, jnp.float32)
  gray, rgb = spec(1, size, size, 1), spec(1, size, size, 3)
  return {"ihn": (gray, spec(1, size, size, int(model_config.ihn.nz))),
          "generator": (gray, gray, spec(1, int(model_config.generator.nz))),
          "encoder": (rgb,), "fusion": (rgb, rgb)}


def _trained_period(config: Any) -> float | None:
  """Screen period of the training halftones from a stage config, if any."""
  for section in ("halftone", "data.halftone"):
    node = config
    for part in section.split("."):
      node = node.get(part) if hasattr(node, "get") else None
      if node is None:
        break
    if node is None:
      continue
    if node.get("method", "am") != "am":
      return None
    if node.get("period_range") is not None:
      low, high = node.period_range
      return (float(low) + float(high)) / 2.0
    if node.get("period") is not None:
      return float(node.period)
  return None


def weight_file(folder: str, network: str) -> str | None:
  """`<network>.npz` or `<network>.safetensors` in folder, if present."""
  for ext in (".npz", ".safetensors"):
    path = os.path.join(folder, network + ext)
    if os.path.isfile(path):
      return path
  return None


def _first_line(error: BaseException) -> str:
  text = str(error.args[0] if isinstance(error, KeyError) and error.args
             else error)
  return " ".join(text.split())


def _read_description(meta_path: str, model_config: Any,
                      kwargs: dict[str, Any]) -> Any:
  """Applies `pipeline.json` to (model_config, kwargs); returns the config."""
  try:
    with open(meta_path) as f:
      meta = json.load(f)
    model_config = model_config or ml_collections.ConfigDict(meta["model"])
    kwargs.setdefault("image_size", int(meta["image_size"]))
    kwargs.setdefault("trained_period", meta["screen_period"])
    kwargs.setdefault("noise_variant", meta["noise_variant"])
  except (OSError, ValueError, KeyError, TypeError) as e:
    raise PipelineError(f"{meta_path}: unreadable pipeline description "
                        f"({_first_line(e)})") from None
  return model_config


def read_official(folder: str, model_config: Any | None,
                  kwargs: dict[str, Any]
                  ) -> tuple[Any, dict[str, Any], dict[str, Any]]:
  """The networks of a folder of converted official weights.

  Args:
    folder: holds ihn.npz, generator.npz, encoder.npz, fusion.npz (or
      .safetensors files of the same names), maybe `pipeline.json`.
    model_config: network sizes; `pipeline.json`'s, else the official sizes.
    kwargs: constructor arguments; those `pipeline.json` sets are added
      unless given.

  Returns:
    (model config, network name -> variables, constructor arguments).
  """
  missing = [f"{f} ({n})" for n, f in OFFICIAL_FILES.items()
             if not weight_file(folder, n)]
  if missing:
    raise PipelineError(
        f"{folder}: missing {', '.join(missing)}; convert the official "
        f"weights with ihc-convert-weights")
  kwargs = dict(kwargs)
  meta_path = os.path.join(folder, PIPELINE_FILE)
  if os.path.exists(meta_path):
    model_config = _read_description(meta_path, model_config, kwargs)
  model_config = model_config or models.default_model_config()
  # E's linear layers depend on its input size, the training tile size.
  examples = example_inputs(
      model_config, kwargs.get("image_size", OFFICIAL_IMAGE_SIZE))
  variables = {}
  for name in NETWORKS:
    file = weight_file(folder, name)
    try:
      variables[name] = weights.load_and_validate(
          file, models.build(name, model_config[name]), *examples[name],
          **TRAIN_KWARG[name])
    except (OSError, ValueError, KeyError) as e:
      raise PipelineError(f"{file}: {_first_line(e)}") from None
  kwargs.setdefault("source", folder)
  return model_config, variables, kwargs


def _candidate_dirs(workdir: str, name: str) -> list[str]:
  """Where network `name` may be: its stage's folder, the workdir itself,
  and the stage workdirs their configs list under `frozen`."""
  from ihc_jax.trainers import checkpoints  # pylint: disable=g-import-not-at-top
  dirs = [os.path.join(workdir, STAGE_OF[name]), workdir]
  for d in list(dirs):
    try:
      frozen = checkpoints.load_stage_config(d).get("frozen") or {}
    except (FileNotFoundError, ValueError):
      continue
    if frozen.get(name):
      dirs.append(str(frozen[name]))
  return dirs


def _find_networks(workdir: str, step: int | None
                   ) -> dict[str, tuple[Any, Any, str]]:
  """name -> (variables, stage config, folder) of every network found."""
  from ihc_jax.trainers import checkpoints  # pylint: disable=g-import-not-at-top
  found: dict[str, tuple[Any, Any, str]] = {}
  seen_stages = []
  configs = {}
  for name in NETWORKS:
    for d in _candidate_dirs(workdir, name):
      if not os.path.isdir(os.path.join(d, "checkpoints")):
        continue
      try:
        _, stage, names = checkpoints.checkpoint_networks(d, step)
      except (FileNotFoundError, ValueError):
        continue
      seen_stages.append(f"{stage} ({', '.join(names)})")
      if name not in names:
        continue
      try:
        variables = checkpoints.restore_network_variables(d, name, step)
        config = configs.get(d) or checkpoints.load_stage_config(d)
      except (FileNotFoundError, KeyError, ValueError) as e:
        raise PipelineError(f"{d}: {_first_line(e)}") from None
      configs[d] = config
      found[name] = (variables, config, d)
      break
  missing = [n for n in NETWORKS if n not in found]
  if missing:
    have = ("; checkpoints found: " + ", ".join(dict.fromkeys(seen_stages))
            if seen_stages else "; no checkpoint found")
    raise PipelineError(
        f"{workdir}: no trained {', '.join(missing)} network(s){have}; "
        f"colorization needs ihn, generator, encoder and fusion (a chained "
        f"workdir with ihn/, color/, fusion/ or a folder of converted "
        f"official weights)")
  return found


def read_workdir(workdir: str, step: int | None, kwargs: dict[str, Any]
                 ) -> tuple[Any, dict[str, Any], dict[str, Any],
                            dict[str, Any]]:
  """The networks of training checkpoints.

  Each network is looked up in `<workdir>/<its stage>/`, then in `workdir`
  itself, then in the stage workdirs its config lists under `frozen`. The
  architecture of each network comes from the config it was trained with;
  the screen period and tile size from the fusion (else colour) stage.

  Args:
    workdir: a chained workdir (ihn/, color/, fusion/) or a stage workdir.
    step: checkpoint step (latest by default; applies to every stage).
    kwargs: constructor arguments; source and noise_variant are added
      unless given.

  Returns:
    (model config, network name -> variables, the trained_period and
    image_size arguments, the other constructor arguments).
  """
  found = _find_networks(workdir, step)
  model_config = ml_collections.ConfigDict()
  for name, (_, config, _) in found.items():
    model_config[name] = ml_collections.ConfigDict(config.model[name])
  main_config = found["fusion"][1]
  period = (_trained_period(main_config)
            or _trained_period(found["generator"][1])
            or _trained_period(found["ihn"][1]))
  image_size = int(main_config.get("data", {}).get(
      "image_size", OFFICIAL_IMAGE_SIZE))
  # The noise map is an IHN input: use the variant the IHN was trained on.
  noise = (found["ihn"][1].get("noise_variant")
           or main_config.get("noise_variant") or "official")
  kwargs = dict(kwargs)
  kwargs.setdefault("source", workdir)
  kwargs.setdefault("noise_variant", noise)
  trained = {"trained_period": period, "image_size": image_size}
  return model_config, {n: v[0] for n, v in found.items()}, trained, kwargs


def config_dicts(model_config: Any) -> dict[str, dict[str, Any]]:
  """The network sections of a model config as plain dicts."""
  return {n: model_config[n].to_dict() if hasattr(model_config[n], "to_dict")
          else dict(model_config[n]) for n in NETWORKS}


def write_folder(folder: str, model_config: Any, variables: Any, *,
                 image_size: int, trained_period: float | None,
                 noise_variant: str) -> None:
  """Writes the four networks as npz plus `pipeline.json` into `folder`."""
  for name, file in OFFICIAL_FILES.items():
    weights.save_variables(os.path.join(folder, file),
                           jax.device_get(variables[name]))
  meta = {"model": config_dicts(model_config),
          "image_size": image_size,
          "screen_period": trained_period,
          "noise_variant": noise_variant}
  with open(os.path.join(folder, PIPELINE_FILE), "w") as f:
    json.dump(meta, f, indent=2, sort_keys=True)


def init_random_variables(model_config: Any, *, seed: int = 0,
                          image_size: int = OFFICIAL_IMAGE_SIZE
                          ) -> dict[str, Any]:
  """Random-weight variables of the four networks (tests and benchmarks).

  `weights.random_variables_like(..., init="lecun_normal")` of each
  network's `jax.eval_shape` (nothing is compiled, which keeps this fast for
  official-size networks), drawn from one generator in `NETWORKS` order:
  kernels N(0, 1 / fan_in), biases 0, BatchNorm scales 1 with running mean
  0 and variance 1.

  Args:
    model_config: sections ihn, generator, encoder, fusion.
    seed: seed of the numpy generator.
    image_size: the pipeline's tile size; E's linear layers depend on it.

  Returns:
    name -> Flax variables (numpy arrays).
  """
  examples = example_inputs(model_config, image_size)
  rng = np.random.default_rng(seed)
  variables = {}
  for name in NETWORKS:
    network = models.build(name, model_config[name])
    shapes = jax.eval_shape(
        functools.partial(network.init, **TRAIN_KWARG[name]),
        jax.random.PRNGKey(0), *examples[name])
    variables[name] = weights.random_variables_like(shapes, seed=rng,
                                                    init="lecun_normal")
  return variables
