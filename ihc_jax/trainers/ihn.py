"""Stage 1: the inverse halftone network (IHN), halftone -> gray.

Every step the ground-truth gray (ITU-R 601 luma of the colour photo) is
halftoned on the device inside the jitted step with a fresh key
(`fold_in(seed key, step)`), so the IHN never sees the same halftone twice.
The smoothed noise map comes from `make_noise_map`.

Losses (paper §2.1): pixel = lambda1 ||content - gray||^2 + lambda2
|output - gray| with lambda1 = 5, lambda2 = 1 (`pixel.content_weight`,
`pixel.output_weight`; `loss.pixel` scales the whole term), plus the perceptual MSE of VGG19 pool4 features
(`loss.perceptual`; the official extractor ends at pool4, original-code.md
§3.9). Adam 2e-4 with polynomial decay (power 0.9) to 2e-6 over the run,
PRL's schedule (original-code.md §9.4).
"""

from __future__ import annotations

import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from ihc_jax import losses
from ihc_jax import metrics
from ihc_jax import models
from ihc_jax.trainers import baselines
from ihc_jax.trainers import config_schema as config_schema_lib
from ihc_jax.trainers import loop as loop_lib
from ihc_jax.trainers import train_state as train_state_lib
from ihc_jax.trainers import defaults
from ihc_jax.trainers import inputs
from ihc_jax.trainers import linen_utils

TERMS = ("pixel", "perceptual")
VGG_TERMS = ("perceptual",)


def default_config() -> ml_collections.ConfigDict:
  """Paper-scale IHN config (256x256, official widths)."""
  config = defaults.base_config("ihn")
  config.num_train_steps = 200_000
  model = models.default_model_config()
  config.model = ml_collections.ConfigDict({"ihn": model.ihn,
                                            "vgg19": model.vgg19})
  config.noise_variant = "official"
  # The official extractor ends at pool4 (original-code.md §3.9).
  config.perceptual.layer = "pool4"
  config.optim = ml_collections.ConfigDict({"ihn": defaults.optim_config(
      learning_rate=2e-4, end_learning_rate=2e-6, schedule="polynomial",
      power=0.9, b1=0.9)})
  # lambda1, lambda2 of the pixel loss (paper §2.1).
  config.pixel = ml_collections.ConfigDict(dict(content_weight=5.0,
                                                output_weight=1.0))
  config.loss = ml_collections.ConfigDict(dict(
      pixel=1.0,
      # Choice: PRL's 4e-6 on Caffe-scale [0,255] features is ~0.01 on the
      # ImageNet-normalised [0,1] input scale used here (features ~58x, MSE
      # ~3300x larger there).
      perceptual=0.01,
  ))
  config.frozen = ml_collections.ConfigDict()
  config.init_from = ml_collections.ConfigDict({"ihn": ""})
  return config


def validate(config: ml_collections.ConfigDict) -> None:
  """Checks `config` against `default_config()` (keys, types, choices, paths,
  loss terms)."""
  config_schema_lib.validate_config(config, default_config(), choices=defaults.CHOICES,
                         required=defaults.required_keys(config, VGG_TERMS))
  losses.check_loss_weights(config.loss, TERMS, stage="ihn")


def init_variables(key: jax.Array, *, ihn: nn.Module,
                   size: int) -> dict[str, Any]:
  """Fresh IHN variables for `size` x `size` inputs."""
  ones = jnp.ones((1, size, size, 1), jnp.float32)
  return {"ihn": linen_utils.init_variables(
      ihn, key, ones, jnp.zeros((1, size, size, ihn.nz)), train=False)}


def ihn_losses(params: Any, variables: dict[str, Any], halftone: jax.Array,
               noise: jax.Array, gray: jax.Array, frozen: dict[str, Any],
               rng: jax.Array, *, ihn: nn.Module,
               config: ml_collections.ConfigDict
               ) -> tuple[jax.Array, tuple[dict, Any]]:
  """Pixel (+ perceptual) objective of the IHN, weighted by `config.loss`.

  Returns:
    (total, (weighted terms, new batch_stats)).
  """
  (content, _, output), batch_stats = linen_utils.apply_train(
      ihn, variables, params, halftone, noise, rng=rng, train=True)
  terms = {"pixel": losses.pixel_loss(
      content, output, gray, content_weight=config.pixel.content_weight,
      output_weight=config.pixel.output_weight)}
  if config.loss.perceptual > 0:
    terms["perceptual"] = losses.perceptual_loss(
        frozen["vgg19"]["params"], output, gray, layer=config.perceptual.layer,
        normalization=config.model.vgg19.normalization,
        dtype=linen_utils.compute_dtype(config.model, "vgg19"))
  total, weighted = losses.weighted_total(config.loss, terms)
  return total, (weighted, batch_stats)


def train_step(state: train_state_lib.TrainState, batch: dict[str, jax.Array],
               frozen: dict[str, Any], rng: jax.Array, *, ihn: nn.Module,
               config: ml_collections.ConfigDict, optimizers: dict[str, Any]
               ) -> tuple[train_state_lib.TrainState, dict[str, jax.Array]]:
  """One IHN update on a fresh halftone of every image of `batch`."""
  data_key, dropout_key = jax.random.split(rng)
  ht, gray, noise = inputs.halftone_inputs(data_key, batch["image"], config,
                                             ihn.nz)
  variables = state.variables["ihn"]
  (total, (weighted, batch_stats)), grads = jax.value_and_grad(
      ihn_losses, has_aux=True)(variables["params"], variables, ht, noise,
                                gray, frozen, dropout_key, ihn=ihn,
                                config=config)
  state, guard = train_state_lib.guarded_update(
      state, optimizers, {"ihn": grads}, {"ihn": batch_stats}, [total])
  return state, dict(weighted, loss=total, **guard)


def eval_step(state: train_state_lib.TrainState, batch: dict[str, jax.Array],
              frozen: dict[str, Any], rng: jax.Array, *, ihn: nn.Module,
              config: ml_collections.ConfigDict) -> dict[str, jax.Array]:
  """Per-example [B] PSNR/SSIM of the IHN and of the blur baseline."""
  del frozen
  ht, gray, noise = inputs.halftone_inputs(rng, batch["image"], config,
                                             ihn.nz)
  output = jnp.clip(linen_utils.apply_eval(ihn, state.variables["ihn"], ht,
                                        noise, train=False)[-1], 0.0, 1.0)
  baseline = baselines.blur_baseline(ht, config.halftone)
  per_example = dict(reduction="none")
  return {"ihn_psnr": metrics.psnr(output, gray, **per_example),
          "ihn_ssim": metrics.ssim(output, gray, **per_example),
          "blur_baseline_psnr": metrics.psnr(baseline, gray, **per_example),
          "blur_baseline_ssim": metrics.ssim(baseline, gray, **per_example)}


def sample_step(state: train_state_lib.TrainState, batch: dict[str, jax.Array],
                frozen: dict[str, Any], rng: jax.Array, *, ihn: nn.Module,
                config: ml_collections.ConfigDict) -> list[jax.Array]:
  """Grid columns: halftone, content map, IHN output, ground truth."""
  del frozen
  ht, gray, noise = inputs.halftone_inputs(rng, batch["image"], config,
                                             ihn.nz)
  content, _, output = linen_utils.apply_eval(ihn, state.variables["ihn"], ht,
                                           noise, train=False)
  return [ht, content, output, gray]


def make_stage(config: ml_collections.ConfigDict) -> loop_lib.Stage:
  """Network, optimizer and jit-able steps of the IHN stage."""
  ihn = linen_utils.build("ihn", config.model)
  frozen = defaults.frozen_vgg(config, VGG_TERMS)
  optimizers = {"ihn": train_state_lib.make_optimizer(config.optim.ihn,
                                             config.num_train_steps)}
  bound = dict(ihn=ihn, config=config)
  return loop_lib.Stage(
      name="ihn",
      init_variables=functools.partial(init_variables, ihn=ihn,
                                       size=config.data.image_size),
      optimizers=optimizers,
      train_step=functools.partial(train_step, optimizers=optimizers, **bound),
      frozen=frozen,
      eval_step=functools.partial(eval_step, **bound),
      sample_step=functools.partial(sample_step, **bound),
      sample_titles=("halftone", "content", "ihn", "ground truth"))


def train_and_evaluate(config: ml_collections.ConfigDict,
                       workdir: str) -> dict[str, float]:
  """Trains the IHN stage in `workdir` (resuming if it holds a checkpoint).

  Returns:
    Final held-out metrics: IHN and Gaussian-blur-baseline PSNR/SSIM.
  """
  validate(config)
  return loop_lib.run_stage(config, workdir, make_stage(config),
                          init_from=dict(config.init_from))
