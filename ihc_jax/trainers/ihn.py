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


import jax
import jax.numpy as jnp
import ml_collections

from ihc_jax import losses
from ihc_jax import metrics
from ihc_jax import models
from ihc_jax.models import vgg
from ihc_jax.trainers import baselines
from ihc_jax.trainers import common
from ihc_jax.trainers import defaults
from ihc_jax.trainers import networks

VGG_LOSSES = ("perceptual",)


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
  """Checks `config` against `default_config()` (keys, types, choices, paths)."""
  common.validate_config(config, default_config(), choices=defaults.CHOICES,
                         required=defaults.required_keys(config, VGG_LOSSES))


def make_stage(config: ml_collections.ConfigDict) -> common.Stage:
  """Networks, optimizers and jit-able steps of the IHN stage."""
  ihn = networks.build("ihn", config.model)
  nz = config.model.ihn.nz
  size = config.data.image_size
  use_vgg = config.loss.perceptual > 0
  frozen = {}
  if use_vgg:
    frozen["vgg19"] = {"params": vgg.load_vgg19_params(
        defaults.perceptual_section(config), seed=config.seed)}

  def init_variables(key):
    ones = jnp.ones((1, size, size, 1), jnp.float32)
    return {"ihn": networks.init_variables(
        ihn, key, ones, jnp.zeros((1, size, size, nz)), train=False)}

  optimizers = {"ihn": common.make_optimizer(config.optim.ihn,
                                             config.num_train_steps)}

  def inputs(batch, rng):
    return networks.halftone_inputs(rng, batch["image"], config, nz)

  def train_step(state, batch, frozen, rng):
    data_key, dropout_key = jax.random.split(rng)
    ht, gray, noise = inputs(batch, data_key)
    variables = state.variables["ihn"]

    def loss_fn(params):
      (content, _, output), batch_stats = networks.apply_train(
          ihn, variables, params, ht, noise, rng=dropout_key, train=True)
      terms = {"pixel": losses.pixel_loss(
          content, output, gray, content_weight=config.pixel.content_weight,
          output_weight=config.pixel.output_weight)}
      if use_vgg:
        terms["perceptual"] = losses.perceptual_loss(
            frozen["vgg19"]["params"], output, gray,
            layer=config.perceptual.layer,
            normalization=config.model.vgg19.normalization)
      total, weighted = losses.weighted_total(config.loss, terms)
      return total, (weighted, batch_stats)

    (total, (weighted, batch_stats)), grads = jax.value_and_grad(
        loss_fn, has_aux=True)(variables["params"])
    state, guard = common.guarded_update(
        state, optimizers, {"ihn": grads}, {"ihn": batch_stats}, [total])
    return state, dict(weighted, loss=total, **guard)

  def predict(state, ht, noise):
    return networks.apply_eval(ihn, state.variables["ihn"], ht, noise,
                               train=False)

  def eval_step(state, batch, frozen, rng):
    del frozen
    ht, gray, noise = inputs(batch, rng)
    output = jnp.clip(predict(state, ht, noise)[-1], 0.0, 1.0)
    baseline = baselines.descreen_blur(
        ht, period=defaults.screen_period(config), tone_curve=config.halftone.tone_curve)
    return {"ihn_psnr": metrics.psnr(output, gray),
            "ihn_ssim": metrics.ssim(output, gray),
            "blur_baseline_psnr": metrics.psnr(baseline, gray),
            "blur_baseline_ssim": metrics.ssim(baseline, gray)}

  def sample_step(state, batch, frozen, rng):
    del frozen
    ht, gray, noise = inputs(batch, rng)
    content, _, output = predict(state, ht, noise)
    return [ht, content, output, gray]

  return common.Stage(name="ihn", init_variables=init_variables,
                      optimizers=optimizers, train_step=train_step,
                      frozen=frozen, eval_step=eval_step,
                      sample_step=sample_step,
                      sample_titles=("halftone", "content", "ihn",
                                     "ground truth"))


def train_and_evaluate(config: ml_collections.ConfigDict,
                       workdir: str) -> dict[str, float]:
  """Trains the IHN stage in `workdir` (resuming if it holds a checkpoint).

  Returns:
    Final held-out metrics: IHN and Gaussian-blur-baseline PSNR/SSIM.
  """
  validate(config)
  return common.run_stage(config, workdir, make_stage(config),
                          init_from=dict(config.init_from))
