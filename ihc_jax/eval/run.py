"""The paper's evaluation of a trained pipeline: PSNR/SSIM, Diversity, FID.

    python -m ihc_jax.eval --config=configs/fusion.py \
        --workdir=/runs/chain \
        --lpips_weights=weights/lpips_vgg.npz \
        --inception_weights=weights/inception_fid.npz

`--config` is the training config (its `data` section names the held-out
split, its `halftone` section how test halftones are made); `--workdir` is
anything `ihc_jax.inference.Pipeline.load` reads (a chained training workdir
or a folder of converted official weights). Results go to
`<output_dir or workdir>/eval_results.{md,json}`.

Per held-out image I (gray g, halftone h = synthesize(g)) the pipeline makes
the three colorization schemes of the paper:

* recovery: the code of I itself (E(I)) -> PSNR / SSIM against I;
* reference: `num_references` codes of other colour references;
* random: `num_random` codes z ~ N(0, I) -> Diversity, the mean LPIPS over
  pairs of random colorizations of the same input (paper: 1900 pairs);

and FID (plus KID) compares the colorizations of all three schemes with the
real images (paper: 330 test images x 9 = 2970 results; the defaults here,
1 + 4 + 4 per image, give the same count). Rows: the full pipeline (F), the
IHN->C and C->IHN paths alone (from the same runs), and "IHN + exemplar
transfer", the IHN gray colorized by `ihc_jax.exemplar.exemplar_transfer`,
which needs no trained colorizer (its random scheme uses random references).
The IHN gray is also scored against the true gray. Outputs are clipped to
[0, 1] before scoring, as when saved.

A metric whose network weights are missing is reported as missing (with the
file and the converter command) and the others still run.

Single process: this evaluation runs in ONE process (on that process's
devices); it reads the whole held-out split itself (padding masked out, so
every image counts once) and refuses to start under several JAX processes
(`jax.process_count() > 1`). PSNR/SSIM are per-image means, independent of
the batch size. The multi-process evaluation during training is
`ihc_jax.trainers.loop.evaluate`.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from ihc_jax import colorspace
from ihc_jax.eval import inception as inception_lib
from ihc_jax.eval import lpips as lpips_lib
from ihc_jax.eval import report
from ihc_jax.eval import scoring
from ihc_jax.eval import weights_io

logger = logging.getLogger(__name__)

# Public names of this module that live in the scoring and report modules.
ROWS = scoring.ROWS
RESULTS_JSON = report.RESULTS_JSON
RESULTS_MD = report.RESULTS_MD
results_markdown = report.results_markdown
write_results = report.write_results


def default_settings() -> ml_collections.ConfigDict:
  """Evaluation settings and their defaults (read from `config.eval`).

  Returns:
    ConfigDict with fields:
      num_images: held-out images to use; -1 -> all of the eval split.
      batch_size: images per pipeline call; 0 -> data.eval_batch_size.
      num_random: random codes per image (>= 2 for Diversity).
      num_references: reference codes per image (other images' references).
      diversity_pairs: LPIPS pairs averaged for Diversity (paper: 1900).
      seed: seeds halftones, codes and reference choice.
      lpips_weights / lpips_net / inception_weights: metric weight files.
      inception_batch_size: images per Inception forward pass.
      kid_subsets / kid_subset_size: KID settings (size clipped to the data).
      exemplar_samples: `num_samples` of the exemplar-transfer baseline.
  """
  settings = ml_collections.ConfigDict()
  settings.num_images = -1
  settings.batch_size = 0
  settings.num_random = 4
  settings.num_references = 4
  settings.diversity_pairs = 1900
  settings.seed = 0
  settings.lpips_weights = ""
  settings.lpips_net = "vgg"
  settings.inception_weights = ""
  settings.inception_batch_size = 50
  settings.kid_subsets = 100
  settings.kid_subset_size = 1000
  settings.exemplar_samples = 200
  return settings


def stage_config_of(config: Any) -> Any:
  """The config whose `data` and `eval` sections describe the evaluation.

  A chained config (`trainer='chain'`, e.g. configs/demo.py) has no `data`
  section of its own: its last stage (the fusion stage) is evaluated, on that
  stage's held-out split.
  """
  if config is not None and "stages" in config and "data" not in config:
    order = list(config.get("stage_order", config.stages.keys()))
    return config.stages[order[-1]]
  return config


def settings_from_config(config: Any, **overrides: Any
                         ) -> ml_collections.ConfigDict:
  """Defaults, updated by the matching fields of `config.eval`, then overrides.

  Args:
    config: the training config (its `eval` section may hold any field of
      `default_settings`), or None.
    **overrides: values that win over the config (None values are ignored).

  Returns:
    The settings ConfigDict.
  """
  settings = default_settings()
  section = config.get("eval", {}) if config is not None else {}
  for key in settings.keys():
    if key in section and section[key] is not None:
      settings[key] = section[key]
  for key, value in overrides.items():
    if value is not None:
      settings[key] = value
  if settings.num_random < 0 or settings.num_references < 0:
    raise ValueError("eval.num_random and eval.num_references must be >= 0")
  return settings


def load_metric_networks(settings: ml_collections.ConfigDict
                         ) -> tuple[Any, Any, dict[str, str]]:
  """Loads LPIPS and Inception; a missing file is recorded, not fatal.

  Args:
    settings: from `settings_from_config`.

  Returns:
    (lpips (net, variables) or None, inception variables or None,
     missing: metric name -> message naming the file and the converter).
  """
  missing = {}
  lpips_net = None
  inception = None
  try:
    lpips_net = lpips_lib.load_lpips(settings)
  except weights_io.MissingWeightsError as e:
    missing["Diversity (LPIPS)"] = str(e)
  try:
    inception = inception_lib.load_inception(settings)
  except weights_io.MissingWeightsError as e:
    missing["FID/KID (InceptionV3)"] = str(e)
  return lpips_net, inception, missing


def load_eval_images(config: Any, num_images: int
                     ) -> tuple[np.ndarray, np.ndarray]:
  """The held-out images and their references from `config.data`.

  Args:
    config: training config with a `data` section.
    num_images: how many; -1 -> all.

  Returns:
    (images [N,S,S,3], references [N,S,S,3]) float32 in [0, 1].
  """
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  tf.config.set_visible_devices([], "GPU")
  from ihc_jax import input_pipeline  # pylint: disable=g-import-not-at-top
  _, eval_ds = input_pipeline.create_datasets(
      config.data, seed=int(config.get("seed", 0)), process_index=0,
      process_count=1)
  images, references = [], []
  count = 0
  for batch in eval_ds.as_numpy_iterator():
    real = batch["mask"] > 0 if "mask" in batch else slice(None)
    images.append(batch["image"][real])
    references.append(batch["reference"][real])
    count += len(images[-1])
    if 0 <= num_images <= count:
      break
  if not images:
    raise ValueError("the eval split of config.data is empty")
  images = np.concatenate(images)
  references = np.concatenate(references)
  if num_images >= 0:
    images, references = images[:num_images], references[:num_images]
  return images.astype(np.float32), references.astype(np.float32)


def _check_single_process() -> None:
  if jax.process_count() > 1:
    raise RuntimeError(
        f"ihc_jax.eval runs in a single process; this is process "
        f"{jax.process_index()} of {jax.process_count()}. Run it once, "
        "without JAX_NUM_PROCESSES / jax.distributed.initialize.")


def _exemplar_baseline(settings: ml_collections.ConfigDict) -> Callable[
    [np.ndarray, np.ndarray, jax.Array], Any]:
  """Exemplar transfer with `settings.exemplar_samples` samples, jitted:
  it runs once per image (`_per_image_baseline`), compiled once per shape."""
  from ihc_jax import exemplar  # pylint: disable=g-import-not-at-top

  @jax.jit
  def baseline(gray, refs, key):
    return exemplar.exemplar_transfer(
        gray, refs, num_samples=int(settings.exemplar_samples), key=key)
  return baseline


def _held_out_images(config: Any, settings: ml_collections.ConfigDict,
                     images: np.ndarray | None,
                     references: np.ndarray | None
                     ) -> tuple[np.ndarray, np.ndarray]:
  """The images to score and the references of the reference scheme."""
  if images is None:
    images, loaded_refs = load_eval_images(config, int(settings.num_images))
    references = loaded_refs if references is None else references
  images = np.asarray(images, np.float32)
  if images.ndim != 4 or images.shape[-1] != 3 or len(images) == 0:
    raise ValueError(f"images must be [N, H, W, 3] with N >= 1, got shape "
                     f"{images.shape}")
  if settings.num_images >= 0:
    images = images[:settings.num_images]
  if references is None:
    references = np.roll(images, 1, axis=0)
  return images, np.asarray(references, np.float32)


def _batch_size(config: Any, settings: ml_collections.ConfigDict) -> int:
  batch_size = int(settings.batch_size)
  if batch_size <= 0:
    data = config.get("data", {}) if config is not None else {}
    batch_size = int(data.get("eval_batch_size", 8))
  return batch_size


class _Keys:
  """Every random choice of one image, from (settings.seed, what, image index).

  An image's halftone, codes, references and baseline draws depend on its
  index in the held-out set only, not on the batch it is scored in.
  """

  HALFTONE, PIPELINE, EXEMPLAR, RANDOM_REF = range(4)

  def __init__(self, seed: int):
    self.seed = int(seed)

  def ints(self, what: int, ids: np.ndarray, k: int = 0) -> list[int]:
    """One 31-bit seed per image."""
    return [int(np.random.SeedSequence([self.seed, what, k, int(i)])
                .generate_state(1)[0] & 0x7FFFFFFF) for i in ids]

  def key(self, what: int, image_id: int, k: int = 0) -> jax.Array:
    return jax.random.PRNGKey(self.ints(what, [image_id], k)[0])


def _per_image_baseline(baseline: Callable, keys: _Keys, ids: np.ndarray,
                        ihn_gray: np.ndarray, refs: np.ndarray,
                        k: int) -> np.ndarray:
  """The baseline on each image alone, with that image's key."""
  return np.concatenate([
      scoring.clip(baseline(ihn_gray[j:j + 1], refs[j:j + 1],
                            keys.key(_Keys.EXEMPLAR, i, k)))
      for j, i in enumerate(ids)])


def _score_random_scheme(scorer: scoring.Scorer, result: Any,
                         baseline: Callable, ihn_gray: np.ndarray,
                         references: np.ndarray, ids: np.ndarray,
                         keys: _Keys) -> None:
  """Random codes (random references for the baseline)."""
  inter = result.intermediates
  budget = scorer.pairs_left
  randoms = [f"rand{k + 1}" for k in range(int(scorer.settings.num_random))]
  scorer.random("full", [scoring.clip(result.samples[:, k])
                         for k in range(len(randoms))], budget)
  scorer.random("ihn_c", [scoring.clip(inter[f"{c}_forward"]) for c in randoms],
                budget)
  scorer.random("c_ihn", [scoring.clip(inter[f"{c}_inverse"]) for c in randoms],
                budget)
  random_refs = []
  for k in range(len(randoms)):
    picks = references[[
        np.random.default_rng(s).integers(0, len(references))
        for s in keys.ints(_Keys.RANDOM_REF, ids, k)]]
    random_refs.append(_per_image_baseline(baseline, keys, ids, ihn_gray,
                                           picks, 1 + k))
  scorer.random("ihn_exemplar", random_refs, budget)
  scorer.pairs_left -= min(budget, len(ids) * math.comb(len(randoms), 2))


def _score_reference_scheme(scorer: scoring.Scorer, pipeline: Any,
                            baseline: Callable, ht: np.ndarray,
                            ihn_gray: np.ndarray, references: np.ndarray,
                            ids: np.ndarray, keys: _Keys) -> None:
  """Other images' references as codes."""
  for k in range(int(scorer.settings.num_references)):
    refs = references[(ids + 1 + k) % len(references)]
    res = pipeline.colorize(ht, refs, num_samples=0,
                            seed=keys.ints(_Keys.PIPELINE, ids, 1 + k),
                            return_intermediates=True)
    scorer.generated("full", scoring.clip(res.reference))
    scorer.generated("ihn_c", scoring.clip(res.intermediates["ref_forward"]))
    scorer.generated("c_ihn", scoring.clip(res.intermediates["ref_inverse"]))
    scorer.generated("ihn_exemplar", _per_image_baseline(
        baseline, keys, ids, ihn_gray, refs, 100 + k))


def _halftones(keys: _Keys, ids: np.ndarray, gray: np.ndarray,
               halftone_config: Any) -> np.ndarray:
  """Each image's halftone on its own screen (`_Keys.HALFTONE`)."""
  from ihc_jax import halftone  # pylint: disable=g-import-not-at-top
  image_keys = jnp.stack([keys.key(_Keys.HALFTONE, i) for i in ids])
  return np.asarray(jax.vmap(
      lambda key, g: halftone.synthesize(key, g[None], halftone_config)[0])(
          image_keys, jnp.asarray(gray)))


def _score_batch(scorer: scoring.Scorer, pipeline: Any, baseline: Callable,
                 halftone_config: Any, truth: np.ndarray,
                 references: np.ndarray, ids: np.ndarray, keys: _Keys
                 ) -> None:
  """Scores the three schemes on one batch of images (split indices `ids`)."""
  settings = scorer.settings
  gray = np.asarray(colorspace.rgb_to_gray(truth))
  ht = _halftones(keys, ids, gray, halftone_config)
  result = pipeline.colorize(ht, truth, num_samples=int(settings.num_random),
                             seed=keys.ints(_Keys.PIPELINE, ids),
                             return_intermediates=True)
  inter = result.intermediates
  ihn_gray = scoring.clip(inter["ihn_gray"])
  scorer.gray(ihn_gray, gray)
  scorer.real(truth)
  # Recovery scheme.
  scorer.recovery("full", scoring.clip(result.reference), truth)
  scorer.recovery("ihn_c", scoring.clip(inter["ref_forward"]), truth)
  scorer.recovery("c_ihn", scoring.clip(inter["ref_inverse"]), truth)
  scorer.recovery("ihn_exemplar", _per_image_baseline(
      baseline, keys, ids, ihn_gray, truth, 0), truth)
  _score_random_scheme(scorer, result, baseline, ihn_gray, references, ids,
                       keys)
  _score_reference_scheme(scorer, pipeline, baseline, ht, ihn_gray,
                          references, ids, keys)


def evaluate(config: Any, workdir: str, *, pipeline: Any = None,
             images: np.ndarray | None = None,
             references: np.ndarray | None = None,
             output_dir: str | None = None,
             baseline: Callable[[np.ndarray, np.ndarray, jax.Array],
                                Any] | None = None,
             **overrides: Any) -> dict[str, Any]:
  """Evaluates a trained pipeline and writes eval_results.{md,json}.

  Args:
    config: the training config (sections data, halftone, eval).
    workdir: what `Pipeline.load` reads; also the default output folder.
    pipeline: an already loaded pipeline (anything with the `colorize` of
      `ihc_jax.inference.Pipeline`); None -> `Pipeline.load(workdir)`.
    images: held-out images [N,S,S,3] in [0, 1]; None -> from config.data.
    references: colour references [M,h,w,3] for the reference scheme; None ->
      the eval split's references (with `images` given: the images, shifted).
    output_dir: where to write the results; None -> `workdir`.
    baseline: the simple colorizer of the last row, `(ihn_gray [B,H,W,1],
      references [B,h,w,3], key) -> [B,H,W,3]`; None -> exemplar transfer
      with `exemplar_samples` samples.
    **overrides: settings (see `default_settings`) that win over config.eval.

  Returns:
    The results dict that is written to eval_results.json.
  """
  _check_single_process()
  config = stage_config_of(config)
  settings = settings_from_config(config, **overrides)
  if baseline is None:
    baseline = _exemplar_baseline(settings)
  if pipeline is None:
    from ihc_jax import inference  # pylint: disable=g-import-not-at-top
    pipeline = inference.Pipeline.load(workdir)
  images, references = _held_out_images(config, settings, images, references)
  lpips_net, inception, missing = load_metric_networks(settings)
  if settings.num_random < 2:
    missing.setdefault("Diversity (LPIPS)",
                       "Diversity needs eval.num_random >= 2")

  n = len(images)
  batch_size = _batch_size(config, settings)
  scorer = scoring.Scorer(settings, lpips_net, inception)
  keys = _Keys(settings.seed)
  halftone_config = config.get("halftone") if config is not None else None
  for start in range(0, n, batch_size):
    truth = images[start:start + batch_size]
    _score_batch(scorer, pipeline, baseline, halftone_config, truth,
                 references, np.arange(start, start + len(truth)), keys)
    logger.info("evaluated %d / %d images", start + len(truth), n)
  results = scoring.results(scorer, workdir, n, missing)
  write_results(results, output_dir or os.fspath(workdir))
  return results


def main(argv: Sequence[str]) -> None:
  """Command-line entry point (flags are defined only when run as a script)."""
  from absl import flags  # pylint: disable=g-import-not-at-top
  from absl import app  # pylint: disable=g-import-not-at-top
  if len(argv) > 1:
    raise app.UsageError(f"Too many command-line arguments: {argv[1:]}")
  from ihc_jax import inference  # pylint: disable=g-import-not-at-top
  values = flags.FLAGS
  try:
    results = evaluate(
        values.config, values.workdir, output_dir=values.output_dir,
        lpips_weights=values.lpips_weights, lpips_net=values.lpips_net,
        inception_weights=values.inception_weights,
        num_images=values.num_images)
  except (inference.PipelineError, FileNotFoundError) as e:
    # One line for what the user must fix, no traceback.
    raise SystemExit(f"evaluate: {e}") from None
  print(results_markdown(results))


def _define_flags() -> None:
  from absl import flags  # pylint: disable=g-import-not-at-top
  from ml_collections import config_flags  # pylint: disable=g-import-not-at-top
  config_flags.DEFINE_config_file(
      "config", None, "The training config (data, halftone and eval sections).")
  flags.DEFINE_string("workdir", None, "Trained pipeline: a chained workdir "
                      "or a folder of converted official weights.")
  flags.DEFINE_string("output_dir", None, "Where eval_results.{md,json} go "
                      "(default: --workdir).")
  flags.DEFINE_string("lpips_weights", None, "LPIPS .npz (overrides "
                      "config.eval.lpips_weights).")
  flags.DEFINE_enum("lpips_net", None, ["vgg", "alex"], "LPIPS backbone.")
  flags.DEFINE_string("inception_weights", None, "FID Inception .npz "
                      "(overrides config.eval.inception_weights).")
  flags.DEFINE_integer("num_images", None, "Held-out images (-1: all).")
  flags.mark_flags_as_required(["config", "workdir"])


def console_main() -> None:
  """Entry point for a console script (`ihc-evaluate`)."""
  from absl import app  # pylint: disable=g-import-not-at-top
  _define_flags()
  app.run(main)


if __name__ == "__main__":
  console_main()
