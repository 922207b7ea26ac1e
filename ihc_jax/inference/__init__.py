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

Code: this module holds `Pipeline` (the graph, tiling and codes) and its
results; `ihc_jax.inference.files` reads and writes the networks (official
folders, training workdirs, random weights), `ihc_jax.inference.inputs`
prepares the inputs (halftone checks, resizing, the reference crop, the
screen period).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from ihc_jax import cascade
from ihc_jax import host_memory
from ihc_jax import models
from ihc_jax import tiling
from ihc_jax.inference import files as pipeline_files
from ihc_jax.inference import inputs as inference_inputs

logger = logging.getLogger(__name__)

# The package's public names, defined in `files` (pipeline_files) and
# `inputs` (inference_inputs).
NETWORKS = pipeline_files.NETWORKS
OFFICIAL_FILES = pipeline_files.OFFICIAL_FILES
STAGE_OF = pipeline_files.STAGE_OF
OFFICIAL_SCREEN_PERIOD = pipeline_files.OFFICIAL_SCREEN_PERIOD
PIPELINE_FILE = pipeline_files.PIPELINE_FILE
OFFICIAL_IMAGE_SIZE = pipeline_files.OFFICIAL_IMAGE_SIZE
PipelineError = pipeline_files.PipelineError
init_random_variables = pipeline_files.init_random_variables
resize = inference_inputs.resize
prepare_reference = inference_inputs.prepare_reference
# Looked up here at call time (tests replace it).
estimate_period = inference_inputs.estimate_period

REFERENCE_MODES = ("sample", "mean")
# Compiled graphs by (architecture, variable shapes, input signature).
_COMPILED: dict[tuple[Any, ...], Any] = {}


class _PerSignature:
  """`jax.jit(fn)`, compiled ahead of time once per argument signature.

  After each compilation the C heap's free pages go back to the OS
  (`host_memory`), so running the networks one after another does not hold
  every compilation's leftovers at once.
  """

  def __init__(self, fn: Callable[..., Any], static_argnums: tuple[int, ...] = ()):
    self._jitted = jax.jit(fn, static_argnums=static_argnums)
    self._static = frozenset(static_argnums)
    self._compiled: dict[tuple[Any, ...], Any] = {}

  def __call__(self, *args: Any) -> Any:
    static = tuple(a for i, a in enumerate(args) if i in self._static)
    dynamic = tuple(a for i, a in enumerate(args) if i not in self._static)
    leaves, tree = jax.tree.flatten(dynamic)
    signature = (static, tree, tuple(
        (np.shape(x), np.result_type(x), getattr(x, "weak_type", False))
        for x in leaves))
    compiled = self._compiled.get(signature)
    if compiled is None:
      compiled = self._jitted.lower(*args).compile()
      host_memory.release_free_heap()
      self._compiled[signature] = compiled
    return compiled(*dynamic)


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


def with_dtype(model_config: Any, dtype: str) -> ml_collections.ConfigDict:
  """A copy of the four network sections with every `dtype` set to `dtype`.

  Raises:
    ValueError: `dtype` is not one of `models.DTYPE_NAMES`.
  """
  out = ml_collections.ConfigDict(pipeline_files.config_dicts(model_config))
  for name in NETWORKS:
    models.precision.compute_dtype(name, dtype)
    out[name].dtype = dtype
  return out


def _model_size(model_config: Any) -> int:
  """2**num_downs of the U-Nets: inputs must be multiples of this."""
  return 2**max(int(model_config.ihn.num_downs),
                int(model_config.generator.num_downs))


def _encoder_step(model_config: Any) -> int:
  return 2**int(model_config.encoder.num_downsamples) * int(
      model_config.encoder.pool)



def _image_keys(seed: int | Sequence[int], batch: int
                ) -> tuple[jax.Array, jax.Array, jax.Array]:
  """Per-image (noise, reference, random-code) keys, each [B, 2]."""
  if isinstance(seed, (int, np.integer)) and not isinstance(seed, bool):
    root = jax.random.PRNGKey(int(seed))
    keys = jax.vmap(jax.random.fold_in, in_axes=(None, 0))(
        root, jnp.arange(batch, dtype=jnp.uint32))
  else:
    seeds = np.asarray(seed)
    if (seeds.shape != (batch,) or seeds.dtype.kind not in "iu"):
      raise ValueError(f"seed must be an int or {batch} ints (one per image), "
                       f"got {seed!r}")
    keys = jax.vmap(jax.random.PRNGKey)(jnp.asarray(seeds))
  split = jax.vmap(lambda k: jax.random.split(k, 3))(keys)  # [B, 3, 2]
  return split[:, 0], split[:, 1], split[:, 2]

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
               tile_batch: int = 2, sequential: bool = True, source: str = "",
               dtype: str | None = None):
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
      sequential: run each network as its own compiled function, G once per
        colour code and the IHN once per colour channel, as the official
        test.py does (`cascade.paths(sequential=True)`): the peak memory of
        one network call and its compilation instead of the whole graph's.
        False compiles the whole graph with every code and channel batched
        (same values up to float rounding; more parallel work per call, for
        accelerators).
      source: description of where the weights came from.
      dtype: compute dtype of all four networks ("float32", "bfloat16" or
        "float16"), overriding the `dtype` of their sections; None keeps
        the sections' own (float32 where a section has none). Weights stay
        float32 and results are float32.
    """
    missing = [n for n in NETWORKS if n not in variables]
    if missing:
      raise PipelineError(f"{source or 'variables'}: missing network(s) "
                          f"{', '.join(missing)}")
    if dtype is not None:
      model_config = with_dtype(model_config, dtype)
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
    self.sequential = sequential
    self.source = source
    self._signatures: set[tuple[Any, ...]] = set()
    self._architecture = json.dumps(
        pipeline_files.config_dicts(model_config) | {
            "noise_variant": noise_variant, "sequential": sequential},
        sort_keys=True, default=str)

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
    if any(pipeline_files.weight_file(path, n) for n in NETWORKS) or (
        os.path.exists(os.path.join(path, PIPELINE_FILE))):
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
    model_config, variables, kwargs = pipeline_files.read_official(
        os.fspath(folder), model_config, kwargs)
    return cls(model_config, variables, **kwargs)

  @classmethod
  def from_workdir(cls, workdir: str | os.PathLike, *,
                   step: int | None = None, **kwargs: Any) -> "Pipeline":
    """From training checkpoints (see `pipeline_files.read_workdir`).

    Args:
      workdir: a chained workdir (ihn/, color/, fusion/) or a stage workdir.
      step: checkpoint step (latest by default; applies to every stage).
      **kwargs: passed to the constructor.
    """
    model_config, variables, trained, kwargs = pipeline_files.read_workdir(
        os.fspath(workdir), step, kwargs)
    return cls(model_config, variables, **trained, **kwargs)

  def save(self, folder: str | os.PathLike) -> None:
    """Writes the four networks as npz plus `pipeline.json` into `folder`.

    `Pipeline.load(folder)` reads them back; no training code is needed.
    """
    pipeline_files.write_folder(
        os.fspath(folder), self.model_config, self.variables,
        image_size=self.image_size, trained_period=self.trained_period,
        noise_variant=self.noise_variant)

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
    key = (self._architecture, "encoder")
    if key not in _COMPILED:
      _COMPILED[key] = _PerSignature(self._encode_fn)
    mu, logvar = _COMPILED[key](self.variables["encoder"], prepared)
    return np.asarray(mu), np.asarray(logvar)

  # -- the network graph ------------------------------------------------------

  def _network_fns(self) -> dict[str, Callable[..., jax.Array]]:
    """Each network as a function of (its variables, inputs), and the
    noise maps and Canny edges: the pieces of the graph."""
    ihn, gen, fusion = (self.networks[n] for n in ("ihn", "generator",
                                                   "fusion"))
    nz_ihn = int(self.model_config.ihn.nz)
    variant = self.noise_variant

    def noise(keys, h, w):
      return jax.vmap(lambda key: models.make_noise_map(
          key, 1, h, w, channels=nz_ihn, variant=variant)[0])(keys)

    return dict(
        ihn=lambda v, x, n: ihn.apply(v, x, n, train=False)[-1],
        generator=lambda v, x, e, c: gen.apply(v, x, e, c, train=False),
        fusion=fusion.apply, edges=models.canny_edges, noise=noise)

  def _jitted_fns(self) -> dict[str, Callable[..., jax.Array]]:
    """`_network_fns`, each compiled on its own (once per input shape, and
    shared by pipelines of the same architecture)."""
    key = (self._architecture, "pieces")
    if key not in _COMPILED:
      _COMPILED[key] = {
          name: _PerSignature(fn, static_argnums=(1, 2) if name == "noise" else ())
          for name, fn in self._network_fns().items()}
    return _COMPILED[key]

  def _tile_fn(self, variables: Any, halftone: jax.Array, z: jax.Array,
               noise_keys: jax.Array, intermediates: bool, *,
               fns: dict[str, Callable[..., jax.Array]] | None = None
               ) -> dict[str, jax.Array]:
    """The official graph on [N, h, w, 1] tiles with K codes z [N, K, nz].

    With `fns=None` this is one graph for `jit` (every code and colour
    channel batched). With the compiled pieces (`_jitted_fns`) it runs
    outside `jit`, one code and one colour channel at a time
    (`cascade.paths(sequential=True)`): the same values up to float
    rounding, with the memory of one network call.
    """
    sequential = fns is not None
    fns = fns or self._network_fns()
    n, h, w, _ = halftone.shape
    k = z.shape[1]
    noise = fns["noise"](noise_keys, h, w)
    paths = cascade.paths(
        functools.partial(fns["ihn"], variables["ihn"]),
        functools.partial(fns["generator"], variables["generator"]),
        fns["edges"], halftone, noise, z, sequential=sequential)
    fuse = functools.partial(fns["fusion"], variables["fusion"])
    if sequential:
      fused = jnp.concatenate([
          fuse(paths["forward"][i:i + 1], paths["inverse"][i:i + 1])
          for i in range(n * k)])
    else:
      fused = fuse(paths["forward"], paths["inverse"])

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
    """The compiled graph for this input signature, compiled at most once
    (or, `sequential`, the graph over the separately compiled networks).

    The cache is shared by pipelines with the same architecture (e.g. one
    per CLI run or test), since variables are arguments, not constants.
    """
    shapes = jax.tree_util.tree_map(lambda x: (x.shape, str(x.dtype)),
                                    self.variables)
    signature = (self._architecture, str(shapes), tiles.shape, z.shape,
                 intermediates)
    self._signatures.add(signature)
    if self.sequential:
      return functools.partial(self._tile_fn, intermediates=intermediates,
                               fns=self._jitted_fns())
    if signature not in _COMPILED:
      logger.info("compiling the pipeline for tiles %s with %d code(s)",
                  tiles.shape[1:3], z.shape[1])
      jitted = jax.jit(self._tile_fn, static_argnames="intermediates")
      _COMPILED[signature] = jitted.lower(
          self.variables, tiles, z, keys,
          intermediates=intermediates).compile()
      host_memory.release_free_heap()
    return _COMPILED[signature]

  @property
  def num_compiled(self) -> int:
    """How many input signatures this pipeline has needed so far."""
    return len(self._signatures)

  # -- public API --------------------------------------------------------------

  def colorize(self, halftone: np.ndarray, reference: np.ndarray | None = None,
               *, num_samples: int = 2, seed: int | Sequence[int] = 0,
               reference_mode: str = "sample",
               return_intermediates: bool = False,
               screen_period: float | str | None = None) -> Colorization:
    """Colorizes halftone prints.

    Args:
      halftone: [H, W] or [B, H, W, 1] float in [0, 1]; any size at least
        16 px on a side.
      reference: optional exemplar, [H, W, 3] (shared by the batch) or
        [B, H, W, 3] RGB in [0, 1], any size (resized for E). A shared
        reference gives every image the same z_ref.
      num_samples: number of random codes (>= 0).
      seed: seeds the noise map, the random codes and z_ref's sampling:
        one int for the batch (image b gets `fold_in(PRNGKey(seed), b)`) or
        one int per image (image b gets `PRNGKey(seed[b])`, so that its
        result does not depend on the batch it came in).
      reference_mode: 'sample' (z = mu + sigma * eps, as the official test)
        or 'mean' (z = mu, deterministic).
      return_intermediates: also return every intermediate map.
      screen_period: None (use the scan as is), 'auto' (estimate each
        image's period) or the period in px; the scan is rescaled so its dot
        pitch matches `trained_period`, and results are resized back.

    Returns:
      A `Colorization` with results of the input's size.
    """
    halftone = inference_inputs.halftone_batch(halftone)
    if reference_mode not in REFERENCE_MODES:
      raise ValueError(f"reference_mode must be one of {REFERENCE_MODES}, got "
                       f"{reference_mode!r}")
    if num_samples < 0 or (num_samples == 0 and reference is None):
      raise ValueError("nothing to do: give a reference and/or num_samples "
                       f">= 1 (got num_samples={num_samples})")
    batch, height, width, _ = halftone.shape
    scale = self._screen_scale(halftone, screen_period)
    halftone = inference_inputs.rescale_scan(halftone, scale)
    noise_keys, ref_keys, rand_keys = _image_keys(seed, batch)
    codes, z_all = self._codes(reference, batch, num_samples, reference_mode,
                               ref_keys, rand_keys)
    out = self._run_tiles(halftone, z_all, noise_keys, return_intermediates)
    if scale != 1.0:
      out = {k: np.stack([resize(v, height, width) for v in value])
             for k, value in out.items()}
    return _colorization(out, codes, z_all, (batch, height, width),
                         has_reference=reference is not None,
                         intermediates=return_intermediates)

  def _codes(self, reference: np.ndarray | None, batch: int,
             num_samples: int, reference_mode: str, ref_keys: jax.Array,
             rand_keys: jax.Array) -> tuple[list[str], np.ndarray]:
    """Code names ('ref', 'rand1', ...) and codes z [B, K, nz] float32
    (image b's from its own keys `ref_keys[b]`, `rand_keys[b]`)."""
    nz = int(self.model_config.generator.nz)
    codes, z_parts = [], []
    if reference is not None:
      reference = inference_inputs.reference_batch(reference, batch)
      mu, logvar = self.encode_reference(reference)
      shared = np.shape(mu)[0] == 1
      if reference_mode == "sample" and shared:
        # One reference for the batch: one code for all (the first key).
        z_ref = np.asarray(models.sample_latent(
            ref_keys[0], jnp.asarray(mu), jnp.asarray(logvar)))
      elif reference_mode == "sample":
        z_ref = np.asarray(jax.vmap(models.sample_latent)(
            ref_keys, jnp.asarray(mu), jnp.asarray(logvar)))
      else:
        z_ref = mu
      z_parts.append(np.broadcast_to(z_ref, (batch, nz))[:, None])
      codes.append("ref")
    if num_samples:
      z_rand = np.asarray(jax.vmap(
          lambda k: jax.random.normal(k, (num_samples, nz)))(rand_keys))
      z_parts.append(z_rand)
      codes += [f"rand{i + 1}" for i in range(num_samples)]
    return codes, np.concatenate(z_parts, axis=1).astype(np.float32)

  def _run_tiles(self, halftone: np.ndarray, z_all: np.ndarray,
                 noise_keys: jax.Array, intermediates: bool
                 ) -> dict[str, np.ndarray]:
    """The graph over overlapping tiles of `halftone`, blended back.

    Tile t of image b (in `tiling`'s order within the image) has the noise
    key `fold_in(noise_keys[b], t)`, whatever the other images are.
    """
    tiles_done = np.zeros(len(halftone), np.int64)

    def fn(tiles: np.ndarray, index: np.ndarray) -> dict[str, np.ndarray]:
      number = np.empty(len(index), np.int64)
      for i, b in enumerate(np.asarray(index)):
        number[i] = tiles_done[b]
        tiles_done[b] += 1
      keys = np.asarray(jax.vmap(jax.random.fold_in)(
          noise_keys[np.asarray(index)], jnp.asarray(number, jnp.uint32)))
      z = z_all[index]
      compiled = self._compiled_fn(tiles, z, keys, intermediates)
      out = compiled(self.variables, tiles, z, keys)
      return {k: np.asarray(v) for k, v in out.items()}

    return tiling.tiled_apply(fn, halftone, tile=self.image_size,
                              overlap=self.overlap, multiple=self.multiple,
                              tile_batch=self.tile_batch)

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


def _colorization(out: dict[str, np.ndarray], codes: list[str],
                  z_all: np.ndarray, shape: tuple[int, int, int], *,
                  has_reference: bool, intermediates: bool) -> Colorization:
  """Splits the per-code channels of the graph's outputs into a result."""
  batch, height, width = shape
  num_codes = z_all.shape[1]

  def split(x: np.ndarray) -> np.ndarray:  # [B,H,W,K*3] -> [B,K,H,W,3]
    return np.moveaxis(x.reshape(batch, height, width, num_codes, 3), 3, 1)

  fused = split(out["fused"])
  first = 1 if has_reference else 0
  maps = {}
  if intermediates:
    for name in ("ihn_gray", "edges_gray", "edges_halftone"):
      maps[name] = out[name]
    for name in ("forward", "color_halftone", "inverse"):
      per_code = split(out[name])
      for i, code in enumerate(codes):
        maps[f"{code}_{name}"] = per_code[:, i]
  return Colorization(reference=fused[:, 0] if first else None,
                      samples=fused[:, first:], intermediates=maps,
                      codes=codes, latents=z_all)


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
