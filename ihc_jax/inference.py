"""Colorize halftone prints: the inference pipeline of the official test script.

`Pipeline.load(path)` reads the four networks the pipeline needs (IHN, the
colorization generator G, the colour encoder E and the fusion network F) from
either a chained training workdir (sub-folders `ihn/`, `color/`, `fusion/`
written by `ihc_jax.trainers`, or any stage workdir whose config names the
others under `frozen`) or a folder of converted official weights
(`ihn.npz`, `generator.npz`, `encoder.npz`, `fusion.npz`).

`Pipeline.colorize` follows original-code.md §4 (the official test.py):

1. all networks in eval mode (BatchNorm running statistics, no dropout);
2. z_ref is *sampled* from E's (mu, logvar) of the reference (resized so its
   shorter side is E's size, then centre-cropped, as the official loader
   does), like the official test; `reference_mode="mean"` uses mu instead;
   random codes are N(0, I);
3. one noise map per tile, reused for every IHN call of that tile;
4. IHN->C: g = IHN(h, noise), e = Canny(g), c_fwd = G(g, e, z);
5. C->IHN: e_h = Canny(h), c_ht = G(h, e_h, z), c_inv = IHN per colour
   channel of c_ht with the same noise;
6. fused = F(c_fwd, c_inv); g and the edge maps are shared by all codes.

No clamping between stages, as in the official code, except that Canny sees
its input clipped to [0, 1] (the official float->uint8 cast wraps instead).
Results are returned unclipped on the [0, 1] scale; `image_io.write_image`
clips when saving.

Inputs of any size are processed in tiles of the training size with
overlapped, blended borders (`ihc_jax.tiling`); the compiled function is
cached per tile shape and number of codes, so a folder of same-size scans
compiles once.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import os
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from PIL import Image

from ihc_jax import cascade
from ihc_jax import models
from ihc_jax import tiling
from ihc_jax import weights

logger = logging.getLogger(__name__)

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
REFERENCE_MODES = ("sample", "mean")
# Compiled graphs by (architecture, variable shapes, input signature).
_COMPILED: dict[tuple[Any, ...], Any] = {}


class PipelineError(Exception):
  """A checkpoint or weight folder that cannot make a pipeline (one line)."""


@dataclasses.dataclass
class Colorization:
  """Results of `Pipeline.colorize`, all float32 on the [0, 1] scale, unclipped.

  Attributes:
    reference: [B, H, W, 3] fused result for the reference code, or None.
    samples: [B, S, H, W, 3] fused results for the S random codes.
    intermediates: empty unless requested; then 'ihn_gray' [B,H,W,1],
      'edges_gray' and 'edges_halftone' [B,H,W,1] (Canny on the IHN gray and
      on the halftone), and per code name c ('ref', 'rand1', ...):
      f'{c}_forward' (IHN->C colour), f'{c}_color_halftone' (G on the
      halftone), f'{c}_inverse' (its per-channel IHN inversion), each
      [B,H,W,3].
    codes: the code names in order: 'ref' first if a reference was given,
      then 'rand1'...'randS'.
    latents: [B, K, nz] the codes z in the order of `codes`.
  """
  reference: np.ndarray | None
  samples: np.ndarray
  intermediates: dict[str, np.ndarray]
  codes: list[str]
  latents: np.ndarray


def _model_size(model_config: Any) -> int:
  """2**num_downs of the U-Nets: inputs must be multiples of this."""
  return 2**max(int(model_config.ihn.num_downs),
                int(model_config.generator.num_downs))


def _encoder_step(model_config: Any) -> int:
  return 2**int(model_config.encoder.num_downsamples) * int(
      model_config.encoder.pool)


def resize(image: np.ndarray, height: int, width: int) -> np.ndarray:
  """Antialiased bilinear resize of float [H, W, C] (Pillow, per channel)."""
  image = np.asarray(image, np.float32)
  if image.shape[:2] == (height, width):
    return image
  channels = [
      np.asarray(Image.fromarray(np.ascontiguousarray(image[..., c]), "F")
                 .resize((width, height), Image.Resampling.BILINEAR))
      for c in range(image.shape[-1])]
  return np.stack(channels, axis=-1)


def prepare_reference(reference: np.ndarray, size: int) -> np.ndarray:
  """Shorter side to `size` (bilinear), then centre crop to size x size.

  The official loader does the same (Resize(256) + CenterCrop(256)).

  Args:
    reference: [H, W, 3] float RGB in [0, 1].
    size: E's input size.

  Returns:
    [size, size, 3] float32.
  """
  reference = np.asarray(reference, np.float32)
  if reference.ndim != 3 or reference.shape[-1] != 3:
    raise ValueError(f"reference must be [H, W, 3] RGB, got shape "
                     f"{reference.shape}")
  h, w = reference.shape[:2]
  scale = size / min(h, w)
  nh, nw = max(size, round(h * scale)), max(size, round(w * scale))
  resized = resize(reference, nh, nw)
  top, left = (nh - size) // 2, (nw - size) // 2
  return resized[top:top + size, left:left + size]


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


def _weight_file(folder: str, network: str) -> str | None:
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


class Pipeline:
  """The IHN + G + E + F colorization pipeline, jitted per input shape.

  Attributes:
    model_config: sections ihn, generator, encoder, fusion.
    trained_period: halftone screen period (px) the networks were trained on,
      or None when unknown (then `screen_period` cannot rescale).
    image_size: the training tile size (E's input size too).
    source: where the networks came from (for messages).
  """

  def __init__(self, model_config: Any, variables: Mapping[str, Any], *,
               trained_period: float | None = OFFICIAL_SCREEN_PERIOD,
               image_size: int = OFFICIAL_IMAGE_SIZE,
               noise_variant: str = "official", overlap: int | None = None,
               tile_batch: int = 2, source: str = ""):
    """Builds the networks.

    Args:
      model_config: a model config with sections ihn, generator, encoder,
        fusion (as `ihc_jax.models.default_model_config()`).
      variables: network name -> Flax variables ({'params', 'batch_stats'}).
      trained_period: screen period of the training halftones in px.
      image_size: training tile size; a multiple of 2**num_downs and of E's
        downsampling step.
      noise_variant: IHN noise map variant ('official' for official weights).
      overlap: tile overlap in px (default image_size // 4).
      tile_batch: tiles per network call; bounds memory.
      source: description of where the weights came from.
    """
    missing = [n for n in NETWORKS if n not in variables]
    if missing:
      raise PipelineError(f"{source or 'variables'}: missing network(s) "
                          f"{', '.join(missing)}")
    self.model_config = model_config
    self.variables = jax.device_put({n: variables[n] for n in NETWORKS})
    self.networks = {n: models.build(n, model_config[n]) for n in NETWORKS}
    self.trained_period = trained_period
    self.multiple = _model_size(model_config)
    if image_size % self.multiple or image_size % _encoder_step(model_config):
      raise ValueError(
          f"image_size={image_size} must be a multiple of {self.multiple} "
          f"(U-Net) and {_encoder_step(model_config)} (encoder)")
    self.image_size = image_size
    self.noise_variant = noise_variant
    self.overlap = image_size // 4 if overlap is None else overlap
    self.tile_batch = tile_batch
    self.source = source
    self._signatures: set[tuple[Any, ...]] = set()
    self._architecture = json.dumps(
        {n: (model_config[n].to_dict() if hasattr(model_config[n], "to_dict")
             else dict(model_config[n])) for n in NETWORKS} | {
                 "noise_variant": noise_variant}, sort_keys=True, default=str)

  # -- loading ---------------------------------------------------------------

  @classmethod
  def load(cls, path: str | os.PathLike, **kwargs: Any) -> "Pipeline":
    """From a training workdir or a folder of converted official weights.

    Args:
      path: a folder holding `ihn.npz` ... (official), or a training workdir.
      **kwargs: passed to the constructor (tile_batch, overlap, ...).

    Raises:
      PipelineError: with one line naming what is missing.
    """
    path = os.fspath(path)
    if not os.path.isdir(path):
      raise PipelineError(f"{path}: checkpoint folder does not exist"
                          if not os.path.exists(path) else
                          f"{path}: checkpoint must be a folder")
    if any(_weight_file(path, n) for n in NETWORKS) or os.path.exists(
        os.path.join(path, PIPELINE_FILE)):
      return cls.from_official(path, **kwargs)
    return cls.from_workdir(path, **kwargs)

  @classmethod
  def from_official(cls, folder: str | os.PathLike,
                    model_config: Any | None = None,
                    **kwargs: Any) -> "Pipeline":
    """From converted official weights (`ihc-convert-weights` output).

    The official networks were trained on 256 px tiles of 3.0 px screens.
    A `pipeline.json` in the folder (written by `Pipeline.save`) overrides
    the official sizes: {"model": {network: section}, "image_size": int,
    "screen_period": float or null, "noise_variant": str}.

    Args:
      folder: holds ihn.npz, generator.npz, encoder.npz, fusion.npz (or
        .safetensors files of the same names).
      model_config: network sizes; the official sizes by default.
      **kwargs: passed to the constructor.
    """
    folder = os.fspath(folder)
    missing = [f"{f} ({n})" for n, f in OFFICIAL_FILES.items()
               if not _weight_file(folder, n)]
    if missing:
      raise PipelineError(
          f"{folder}: missing {', '.join(missing)}; convert the official "
          f"weights with ihc-convert-weights")
    meta_path = os.path.join(folder, PIPELINE_FILE)
    if os.path.exists(meta_path):
      try:
        with open(meta_path) as f:
          meta = json.load(f)
        model_config = model_config or ml_collections.ConfigDict(
            meta["model"])
        kwargs.setdefault("image_size", int(meta["image_size"]))
        kwargs.setdefault("trained_period", meta["screen_period"])
        kwargs.setdefault("noise_variant", meta["noise_variant"])
      except (OSError, ValueError, KeyError, TypeError) as e:
        raise PipelineError(f"{meta_path}: unreadable pipeline description "
                            f"({_first_line(e)})") from None
    model_config = model_config or models.default_model_config()
    # E's linear layers depend on its input size, the training tile size.
    examples = _example_inputs(
        model_config, kwargs.get("image_size", OFFICIAL_IMAGE_SIZE))
    variables = {}
    for name in NETWORKS:
      file = _weight_file(folder, name)
      try:
        variables[name] = weights.load_and_validate(
            file, models.build(name, model_config[name]), *examples[name],
            **_TRAIN_KWARG[name])
      except (OSError, ValueError, KeyError) as e:
        raise PipelineError(f"{file}: {_first_line(e)}") from None
    kwargs.setdefault("source", folder)
    return cls(model_config, variables, **kwargs)

  @classmethod
  def from_workdir(cls, workdir: str | os.PathLike, *,
                   step: int | None = None, **kwargs: Any) -> "Pipeline":
    """From training checkpoints.

    Each network is looked up in `<workdir>/<its stage>/`, then in `workdir`
    itself, then in the stage workdirs its config lists under `frozen`. The
    architecture of each network comes from the config it was trained with;
    the screen period and tile size from the fusion (else colour) stage.

    Args:
      workdir: a chained workdir (ihn/, color/, fusion/) or a stage workdir.
      step: checkpoint step (latest by default; applies to every stage).
      **kwargs: passed to the constructor.
    """
    from ihc_jax.trainers import common  # pylint: disable=g-import-not-at-top
    workdir = os.fspath(workdir)
    found: dict[str, tuple[Any, Any, str]] = {}
    seen_stages = []

    def candidates(name: str) -> list[str]:
      dirs = [os.path.join(workdir, STAGE_OF[name]), workdir]
      for d in list(dirs):
        try:
          frozen = common.load_stage_config(d).get("frozen") or {}
        except (FileNotFoundError, ValueError):
          continue
        if frozen.get(name):
          dirs.append(str(frozen[name]))
      return dirs

    configs = {}
    for name in NETWORKS:
      for d in candidates(name):
        if not os.path.isdir(os.path.join(d, "checkpoints")):
          continue
        try:
          _, stage, names = common.checkpoint_networks(d, step)
        except (FileNotFoundError, ValueError):
          continue
        seen_stages.append(f"{stage} ({', '.join(names)})")
        if name not in names:
          continue
        try:
          variables = common.restore_network_variables(d, name, step)
          config = configs.get(d) or common.load_stage_config(d)
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
    kwargs.setdefault("source", workdir)
    kwargs.setdefault("noise_variant", noise)
    return cls(model_config, {n: v[0] for n, v in found.items()},
               trained_period=period, image_size=image_size, **kwargs)

  def save(self, folder: str | os.PathLike) -> None:
    """Writes the four networks as npz plus `pipeline.json` into `folder`.

    `Pipeline.load(folder)` reads them back; no training code is needed.
    """
    folder = os.fspath(folder)
    for name, file in OFFICIAL_FILES.items():
      weights.save_variables(os.path.join(folder, file),
                             jax.device_get(self.variables[name]))
    meta = {"model": {n: self.model_config[n].to_dict()
                      if hasattr(self.model_config[n], "to_dict")
                      else dict(self.model_config[n]) for n in NETWORKS},
            "image_size": self.image_size,
            "screen_period": self.trained_period,
            "noise_variant": self.noise_variant}
    with open(os.path.join(folder, PIPELINE_FILE), "w") as f:
      json.dump(meta, f, indent=2, sort_keys=True)

  # -- codes ----------------------------------------------------------------

  def _encode_fn(self, variables: Any, reference: jax.Array
                 ) -> tuple[jax.Array, jax.Array]:
    return self.networks["encoder"].apply(variables, reference)

  def encode_reference(self, reference: np.ndarray
                       ) -> tuple[np.ndarray, np.ndarray]:
    """(mu, logvar) [B, nz] of E for references [B, H, W, 3] of any size."""
    reference = np.asarray(reference, np.float32)
    if reference.ndim == 3:
      reference = reference[None]
    prepared = np.stack([prepare_reference(r, self.image_size)
                         for r in reference])
    signature = (self._architecture, "encoder", prepared.shape)
    if signature not in _COMPILED:
      _COMPILED[signature] = jax.jit(self._encode_fn).lower(
          self.variables["encoder"], prepared).compile()
    mu, logvar = _COMPILED[signature](self.variables["encoder"], prepared)
    return np.asarray(mu), np.asarray(logvar)

  # -- the network graph ------------------------------------------------------

  def _tile_fn(self, variables: Any, halftone: jax.Array, z: jax.Array,
               noise_keys: jax.Array, intermediates: bool
               ) -> dict[str, jax.Array]:
    """The official graph on [N, h, w, 1] tiles with K codes z [N, K, nz]."""
    ihn, gen, fusion = (self.networks[n] for n in ("ihn", "generator",
                                                   "fusion"))
    n, h, w, _ = halftone.shape
    k = z.shape[1]
    nz_ihn = int(self.model_config.ihn.nz)
    noise = jax.vmap(lambda key: models.make_noise_map(
        key, 1, h, w, channels=nz_ihn, variant=self.noise_variant)[0])(
            noise_keys)
    paths = cascade.two_paths(ihn, gen, variables, halftone, noise, z)
    fused = fusion.apply(variables["fusion"], paths["forward"],
                         paths["inverse"])

    def by_code(x):  # [N * K, h, w, 3] -> [N, h, w, K * 3]
      return jnp.moveaxis(x.reshape(n, k, h, w, 3), 1, 3).reshape(
          n, h, w, k * 3)

    out = {"fused": by_code(fused)}
    if intermediates:
      out.update(ihn_gray=paths["ihn_gray"], edges_gray=paths["edges_gray"],
                 edges_halftone=paths["edges_halftone"],
                 forward=by_code(paths["forward"]),
                 color_halftone=by_code(paths["color_halftone"]),
                 inverse=by_code(paths["inverse"]))
    return out

  def _compiled_fn(self, tiles: np.ndarray, z: np.ndarray,
                   keys: np.ndarray, intermediates: bool) -> Any:
    """The compiled graph for this input signature, compiled at most once.

    The cache is shared by pipelines with the same architecture (e.g. one
    per CLI run or test), since variables are arguments, not constants.
    """
    shapes = jax.tree_util.tree_map(lambda x: (x.shape, str(x.dtype)),
                                    self.variables)
    signature = (self._architecture, str(shapes), tiles.shape, z.shape,
                 intermediates)
    self._signatures.add(signature)
    if signature not in _COMPILED:
      logger.info("compiling the pipeline for tiles %s with %d code(s)",
                  tiles.shape[1:3], z.shape[1])
      jitted = jax.jit(self._tile_fn, static_argnames="intermediates")
      _COMPILED[signature] = jitted.lower(
          self.variables, tiles, z, keys,
          intermediates=intermediates).compile()
    return _COMPILED[signature]

  @property
  def num_compiled(self) -> int:
    """How many input signatures this pipeline has needed so far."""
    return len(self._signatures)

  # -- public API --------------------------------------------------------------

  def colorize(self, halftone: np.ndarray, reference: np.ndarray | None = None,
               *, num_samples: int = 2, seed: int = 0,
               reference_mode: str = "sample",
               return_intermediates: bool = False,
               screen_period: float | str | None = None) -> Colorization:
    """Colorizes halftone prints.

    Args:
      halftone: [H, W] or [B, H, W, 1] float in [0, 1]; any size at least
        16 px on a side.
      reference: optional exemplar, [H, W, 3] (shared by the batch) or
        [B, H, W, 3] RGB in [0, 1], any size (resized for E).
      num_samples: number of random codes (>= 0).
      seed: seeds the noise map, the random codes and z_ref's sampling.
      reference_mode: 'sample' (z = mu + sigma * eps, as the official test)
        or 'mean' (z = mu, deterministic).
      return_intermediates: also return every intermediate map.
      screen_period: None (use the scan as is), 'auto' (estimate each
        image's period) or the period in px; the scan is rescaled so its dot
        pitch matches `trained_period`, and results are resized back.

    Returns:
      A `Colorization` with results of the input's size.
    """
    halftone = np.asarray(halftone, np.float32)
    if halftone.ndim == 2:
      halftone = halftone[None, ..., None]
    if halftone.ndim != 4 or halftone.shape[-1] != 1:
      raise ValueError(f"halftone must be [H, W] or [B, H, W, 1], got shape "
                       f"{halftone.shape}")
    if min(halftone.shape[1:3]) < 16:
      raise ValueError(f"halftone is {halftone.shape[2]}x{halftone.shape[1]} "
                       f"px; the minimum is 16x16")
    if not np.all(np.isfinite(halftone)):
      raise ValueError("halftone contains NaN or inf")
    if reference_mode not in REFERENCE_MODES:
      raise ValueError(f"reference_mode must be one of {REFERENCE_MODES}, got "
                       f"{reference_mode!r}")
    if num_samples < 0 or (num_samples == 0 and reference is None):
      raise ValueError("nothing to do: give a reference and/or num_samples "
                       f">= 1 (got num_samples={num_samples})")
    batch, height, width, _ = halftone.shape
    scale = self._screen_scale(halftone, screen_period)
    if scale != 1.0:
      new_h = max(16, round(height * scale))
      new_w = max(16, round(width * scale))
      logger.info("rescaling the scan by %.3f to %dx%d px to match the "
                  "trained screen period", scale, new_w, new_h)
      halftone = np.stack([resize(h, new_h, new_w) for h in halftone])

    key = jax.random.PRNGKey(seed)
    noise_key, ref_key, rand_key = jax.random.split(key, 3)
    nz = int(self.model_config.generator.nz)
    codes, z_parts = [], []
    if reference is not None:
      reference = np.asarray(reference, np.float32)
      if reference.ndim == 3:
        reference = reference[None]
      if reference.ndim != 4 or reference.shape[0] not in (1, batch):
        raise ValueError(f"reference must be [H, W, 3] or [{batch}, H, W, 3], "
                         f"got shape {reference.shape}")
      mu, logvar = self.encode_reference(reference)
      if reference_mode == "sample":
        z_ref = np.asarray(models.sample_latent(ref_key, jnp.asarray(mu),
                                                jnp.asarray(logvar)))
      else:
        z_ref = mu
      z_parts.append(np.broadcast_to(z_ref, (batch, nz))[:, None])
      codes.append("ref")
    if num_samples:
      z_rand = np.stack([np.asarray(jax.random.normal(
          jax.random.fold_in(rand_key, b), (num_samples, nz)))
                         for b in range(batch)])
      z_parts.append(z_rand)
      codes += [f"rand{i + 1}" for i in range(num_samples)]
    z_all = np.concatenate(z_parts, axis=1).astype(np.float32)
    num_codes = z_all.shape[1]
    calls = [0]

    def fn(tiles: np.ndarray, index: np.ndarray) -> dict[str, np.ndarray]:
      keys = np.asarray(jax.vmap(lambda i: jax.random.fold_in(noise_key, i))(
          jnp.arange(len(tiles)) + calls[0] * len(tiles)))
      calls[0] += 1
      z = z_all[index]
      compiled = self._compiled_fn(tiles, z, keys, return_intermediates)
      out = compiled(self.variables, tiles, z, keys)
      return {k: np.asarray(v) for k, v in out.items()}

    out = tiling.tiled_apply(fn, halftone, tile=self.image_size,
                             overlap=self.overlap, multiple=self.multiple,
                             tile_batch=self.tile_batch)
    if scale != 1.0:
      out = {k: np.stack([resize(v, height, width) for v in value])
             for k, value in out.items()}

    def split(x: np.ndarray) -> np.ndarray:  # [B,H,W,K*3] -> [B,K,H,W,3]
      return np.moveaxis(x.reshape(batch, height, width, num_codes, 3), 3, 1)

    fused = split(out["fused"])
    first = 1 if reference is not None else 0
    intermediates = {}
    if return_intermediates:
      for name in ("ihn_gray", "edges_gray", "edges_halftone"):
        intermediates[name] = out[name]
      for name in ("forward", "color_halftone", "inverse"):
        per_code = split(out[name])
        for i, code in enumerate(codes):
          intermediates[f"{code}_{name}"] = per_code[:, i]
    return Colorization(reference=fused[:, 0] if first else None,
                        samples=fused[:, first:], intermediates=intermediates,
                        codes=codes, latents=z_all)

  def _screen_scale(self, halftone: np.ndarray,
                    screen_period: float | str | None) -> float:
    """Scale factor that maps the scan's screen period to the trained one."""
    if screen_period is None:
      return 1.0
    if self.trained_period is None:
      raise ValueError(f"{self.source}: the networks' training screen period "
                       f"is unknown, so screen_period cannot be used")
    if screen_period == "auto":
      period = estimate_period(halftone)
    else:
      try:
        period = float(screen_period)
      except (TypeError, ValueError):
        raise ValueError(f"screen_period must be None, 'auto' or a number of "
                         f"px, got {screen_period!r}") from None
      if not 1.0 <= period <= 64.0:
        raise ValueError(f"screen_period must be between 1 and 64 px, got "
                         f"{period}")
    return self.trained_period / period


def estimate_period(halftone: np.ndarray, *, crop: int = 1024) -> float:
  """Screen period (px) of halftones [B, H, W, 1] from a central crop.

  Uses `ihc_jax.halftone.estimate_screen` on at most `crop` x `crop` px from
  the centre of each image (the period is the same everywhere on a print,
  and a crop keeps the FFT cheap on big scans) and returns the median.
  """
  from ihc_jax import halftone as halftone_lib  # pylint: disable=g-import-not-at-top
  periods = []
  for image in np.asarray(halftone):
    h, w = image.shape[:2]
    top, left = max(0, (h - crop) // 2), max(0, (w - crop) // 2)
    period, angle = halftone_lib.estimate_screen(
        image[top:top + crop, left:left + crop, 0])
    logger.info("estimated screen: period %.2f px, angle %.1f deg", period,
                angle)
    periods.append(period)
  return float(np.median(periods))


def _example_inputs(model_config: Any, size: int
                    ) -> dict[str, tuple[jax.ShapeDtypeStruct, ...]]:
  """Example inputs (shapes only) of each network, for init and validation."""
  def spec(*shape):
    return jax.ShapeDtypeStruct(shape, jnp.float32)
  gray, rgb = spec(1, size, size, 1), spec(1, size, size, 3)
  return {"ihn": (gray, spec(1, size, size, int(model_config.ihn.nz))),
          "generator": (gray, gray, spec(1, int(model_config.generator.nz))),
          "encoder": (rgb,), "fusion": (rgb, rgb)}


_TRAIN_KWARG = {"ihn": {"train": False}, "generator": {"train": False},
                "encoder": {}, "fusion": {}}


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
  examples = _example_inputs(model_config, image_size)
  rng = np.random.default_rng(seed)
  variables = {}
  for name in NETWORKS:
    network = models.build(name, model_config[name])
    shapes = jax.eval_shape(
        functools.partial(network.init, **_TRAIN_KWARG[name]),
        jax.random.PRNGKey(0), *examples[name])
    variables[name] = weights.random_variables_like(shapes, seed=rng,
                                                    init="lecun_normal")
  return variables


def list_outputs(stem: str, result: Colorization, index: int = 0,
                 *, ext: str = ".png") -> list[tuple[str, np.ndarray]]:
  """Output file names and images for image `index` of a result.

  Names: `<stem>_ref`, `<stem>_rand{k}` (k from 1) and, for intermediates,
  `<stem>_<intermediate name>`.
  """
  files = []
  if result.reference is not None:
    files.append((f"{stem}_ref{ext}", result.reference[index]))
  random_codes = [c for c in result.codes if c != "ref"]
  for i, code in enumerate(random_codes):
    files.append((f"{stem}_{code}{ext}", result.samples[index, i]))
  for name, value in result.intermediates.items():
    files.append((f"{stem}_{name}{ext}", value[index]))
  return files


__all__ = ["Colorization", "Pipeline", "PipelineError", "estimate_period",
           "init_random_variables", "list_outputs", "prepare_reference",
           "resize"]
