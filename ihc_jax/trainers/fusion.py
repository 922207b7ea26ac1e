"""Stage 4: the fusion network F on the outputs of both cascade paths.

With the IHN (stage 1) and E, G (stage 3) frozen, every step builds the two
colorizations of a halftone h exactly as the official inference does
(`ihc_jax.cascade.two_paths`, original-code.md §4), for the three colour
codes inference feeds F:

* recovery: z ~ E(I); the target is the ground truth I;
* reference: z ~ E(I_ref), and random: z ~ N(0, I). No ground truth exists
  for these; only the luminance of I (ITU-R 601) is known. The target is
  that luminance under a chroma chosen by `pseudo_target`
  (`colorspace.replace_luma`):
  - "own" (default): F's own chroma, without gradient. The loss then sees
    only F's luminance error on these schemes, and F learns which path's
    colours to trust from the recovery scheme alone, where the truth is
    known.
  - "forward": the chroma of the IHN->C result, the path whose colours the
    paper calls vivid. It pulls F toward that path's colours whether or not
    they are the better ones (docs/training.md, "F's targets").

F(forward, inverse) is trained with an L1 loss and a VGG perceptual loss
against those targets; an adversarial loss (a fresh D on images) is
optional (`loss.adversarial > 0`).

The module reads top to bottom: config, networks, data, losses, steps,
`make_stage`, `train_and_evaluate`.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from ihc_jax import cascade
from ihc_jax import colorspace as color_space
from ihc_jax import losses
from ihc_jax import metrics
from ihc_jax import models
from ihc_jax.models import fusion as fusion_lib
from ihc_jax.trainers import baselines
from ihc_jax.trainers import checkpoints as checkpoints_lib
from ihc_jax.trainers import config_schema as config_schema_lib
from ihc_jax.trainers import loop as loop_lib
from ihc_jax.trainers import train_state as train_state_lib
from ihc_jax.trainers import defaults
from ihc_jax.trainers import inputs
from ihc_jax.trainers import linen_utils

FROZEN = ("ihn", "encoder", "generator")
TERMS = ("l1", "perceptual", "adversarial")
FUSION_INITS = ("forward", "average", "random")
# F(a, b) = w a + (1 - w) b at step 0 (`models.fusion.blend_init`).
_FORWARD_WEIGHT = {"forward": 1.0, "average": 0.5}
PSEUDO_TARGETS = ("own", "forward")
VGG_TERMS = ("perceptual",)
SCHEMES = ("recovery", "reference", "random")


# ----------------------------------------------------------------------------
# Config.


def default_config() -> ml_collections.ConfigDict:
  """Paper-scale fusion-stage config (256x256, official widths)."""
  config = defaults.base_config("fusion")
  config.num_train_steps = 50_000
  model = models.default_model_config()
  config.model = ml_collections.ConfigDict({
      name: model[name] for name in ("fusion", "discriminator", "vgg19")})
  config.model.discriminator.nz = 0  # F's D sees images only
  config.noise_variant = "official"
  config.perceptual.layer = "relu4_1"
  config.optim = ml_collections.ConfigDict({
      "fusion": defaults.optim_config(schedule="linear_decay"),
      "discriminator": defaults.optim_config(schedule="linear_decay"),
  })
  config.adversarial_mode = "lsgan"
  config.loss = ml_collections.ConfigDict(dict(
      l1=10.0,           # |F - target|, choice (BicycleGAN's lambda_L1)
      perceptual=0.05,   # ||phi(F) - phi(target)||^2 at relu4_1, choice
      adversarial=0.0,   # optional; > 0 trains a fresh D
  ))
  config.frozen = ml_collections.ConfigDict({
      "ihn": "REQUIRED: workdir of the trained ihn stage",
      "encoder": "REQUIRED: workdir of the trained color stage",
      "generator": "REQUIRED: workdir of the trained color stage",
  })
  config.init_from = ml_collections.ConfigDict(
      {"fusion": "", "discriminator": ""})
  # F's starting point (`models.fusion.blend_init`; F has no global skip and
  # from a random start a short run ends below its better input):
  # "forward" (F(a, b) = a, the IHN->C result, the better input on average:
  # docs/training.md, "F's start"), "average" ((a + b) / 2) or "random"
  # (the framework's default initialisation).
  config.fusion_init = "forward"
  # Chroma of the reference and random schemes' targets (module docstring):
  # "own" (F's own, no gradient: a luminance-only loss) or "forward".
  config.pseudo_target = "own"
  return config


def validate(config: ml_collections.ConfigDict) -> None:
  """Checks `config` against `default_config()` (keys, types, choices, paths,
  loss terms)."""
  config_schema_lib.validate_config(config, default_config(),
                         choices=dict(defaults.CHOICES,
                                      fusion_init=FUSION_INITS,
                                      pseudo_target=PSEUDO_TARGETS),
                         required=defaults.required_keys(config, VGG_TERMS))
  losses.check_loss_weights(config.loss, TERMS, stage="fusion")


# ----------------------------------------------------------------------------
# Networks.


@dataclasses.dataclass(frozen=True)
class Networks:
  """The Linen modules (trained: F, D; frozen: IHN, E, G)."""
  fusion: nn.Module
  discriminator: nn.Module
  ihn: nn.Module
  encoder: nn.Module
  generator: nn.Module


def build_networks(config: ml_collections.ConfigDict,
                   frozen_sections: dict[str, ml_collections.ConfigDict]
                   ) -> Networks:
  """Modules from `config.model` and the frozen stages' model sections."""
  return Networks(
      fusion=linen_utils.build("fusion", config.model),
      discriminator=linen_utils.build("discriminator", config.model),
      **{name: models.build(name, frozen_sections[name]) for name in FROZEN})


def trained_networks(config: ml_collections.ConfigDict) -> tuple[str, ...]:
  """F, and D when the adversarial term is on."""
  return (("fusion", "discriminator") if config.loss.adversarial > 0
          else ("fusion",))


def init_variables(key: jax.Array, *, nets: Networks, size: int,
                   trained: tuple[str, ...],
                   fusion_init: str = "forward") -> dict[str, Any]:
  """Fresh variables of F (and D) for `size` x `size` images.

  `fusion_init="forward"` starts F at its IHN->C input, "average" at the
  mean of its two inputs (`models.fusion.blend_init`), "random" at the
  default initialisation.
  """
  if fusion_init not in FUSION_INITS:
    raise ValueError(f"fusion_init must be one of {FUSION_INITS}, "
                     f"got {fusion_init!r}")
  keys = jax.random.split(key)
  image = jnp.zeros((1, size, size, 3), jnp.float32)
  fusion_vars = linen_utils.init_variables(nets.fusion, keys[0], image, image)
  if fusion_init in _FORWARD_WEIGHT:
    fusion_vars = dict(fusion_vars, params=fusion_lib.blend_init(
        fusion_vars["params"], _FORWARD_WEIGHT[fusion_init]))
  out = {"fusion": fusion_vars}
  if "discriminator" in trained:
    out["discriminator"] = linen_utils.init_variables(
        nets.discriminator, keys[1], image, train=False)
  return out


# ----------------------------------------------------------------------------
# Data.


def prepare(batch: dict[str, jax.Array], frozen: dict[str, Any],
            rng: jax.Array, *, nets: Networks,
            config: ml_collections.ConfigDict,
            sample_codes: bool = True) -> dict[str, jax.Array]:
  """Both cascade paths for the three schemes, and their targets.

  Args:
    batch: 'image' and 'reference' [B,S,S,3] in [0, 1].
    frozen: frozen variables ('ihn', 'encoder', 'generator', 'vgg19'?).
    rng: key for the halftone, the noise map and the codes.
    nets: the stage's modules.
    config: the stage config.
    sample_codes: sample E's codes (training) or use their means (eval).

  Returns:
    Dict with 'image', 'gray', 'halftone', 'ihn_gray' [B,...] and,
    scheme-major ([3B, S, S, 3]: recovery, reference, random), 'forward'
    and 'inverse' (the targets follow from these and F's output:
    `targets`). No gradient.
  """
  keys = jax.random.split(rng, 4)
  image = batch["image"]
  b = image.shape[0]
  ht, gray, noise = inputs.halftone_inputs(keys[0], image, config,
                                             nets.ihn.nz)
  mu, logvar = linen_utils.apply_eval(nets.encoder, frozen["encoder"],
                                   jnp.concatenate([image, batch["reference"]]))
  z = (models.sample_latent(keys[1], mu, logvar) if sample_codes else mu)
  z_rand = jax.random.normal(keys[2], (b, mu.shape[-1]))
  codes = jnp.stack([z[:b], z[b:], z_rand], axis=1)  # [B, 3, nz]
  paths = cascade.two_paths(nets.ihn, nets.generator, frozen, ht, noise, codes)

  def scheme_major(x):  # image-major [B * 3, ...] -> scheme-major [3 * B, ...]
    return jnp.swapaxes(x.reshape((b, 3) + x.shape[1:]), 0, 1).reshape(x.shape)

  forward, inverse = scheme_major(paths["forward"]), scheme_major(
      paths["inverse"])
  return jax.lax.stop_gradient(dict(
      image=image, gray=gray, halftone=ht, ihn_gray=paths["ihn_gray"],
      forward=forward, inverse=inverse))


# ----------------------------------------------------------------------------
# Losses.


def targets(data: dict[str, jax.Array], fused: jax.Array,
            pseudo_target: str) -> jax.Array:
  """F's targets [3B, S, S, 3]: the photo for the recovery scheme; the true
  luminance under the `pseudo_target` chroma (F's own, without gradient, or
  the IHN->C result's) for the reference and random schemes."""
  if pseudo_target not in PSEUDO_TARGETS:
    raise ValueError(f"pseudo_target must be one of {PSEUDO_TARGETS}, "
                     f"got {pseudo_target!r}")
  b = data["image"].shape[0]
  chroma = (jax.lax.stop_gradient(fused[b:]) if pseudo_target == "own"
            else data["forward"][b:])
  pseudo = color_space.replace_luma(chroma, jnp.concatenate([data["gray"]] * 2))
  return jnp.concatenate([data["image"], jnp.clip(pseudo, 0.0, 1.0)])


def fusion_losses(params: Any, variables: dict[str, Any],
                  data: dict[str, jax.Array], frozen: dict[str, Any], *,
                  nets: Networks, config: ml_collections.ConfigDict
                  ) -> tuple[jax.Array, tuple[dict, jax.Array]]:
  """F's objective over the three schemes: every term of `TERMS`, weighted.

  Returns:
    (total, (weighted terms, F's outputs [3B, S, S, 3])).
  """
  fused = nets.fusion.apply({"params": params}, data["forward"],
                            data["inverse"])
  target = targets(data, fused, config.pseudo_target)
  weights = config.loss
  terms = {"l1": losses.l1_loss(fused, target)}
  if weights.perceptual > 0:
    terms["perceptual"] = losses.perceptual_loss(
        frozen["vgg19"]["params"], fused, target,
        layer=config.perceptual.layer,
        normalization=config.model.vgg19.normalization,
        dtype=linen_utils.compute_dtype(config.model, "vgg19"))
  if weights.adversarial > 0:
    logits = nets.discriminator.apply(variables["discriminator"], fused,
                                      train=True, mutable=["batch_stats"])[0]
    terms["adversarial"] = losses.generator_adversarial_loss(
        logits, mode=config.adversarial_mode)
  total, weighted = losses.weighted_total(weights, terms)
  return total, (weighted, fused)


def discriminator_loss(params: Any, variables: dict[str, Any],
                       images: jax.Array, fused: jax.Array, *, nets: Networks,
                       config: ml_collections.ConfigDict
                       ) -> tuple[jax.Array, Any]:
  """D's loss: real photographs against F's outputs (of every scheme)."""
  d_variables = dict(variables["discriminator"], params=params)
  # One real image per fake: the photos repeat once per scheme.
  images = jnp.concatenate([images] * (fused.shape[0] // images.shape[0]))
  b = images.shape[0]
  logits, updates = nets.discriminator.apply(
      d_variables, jnp.concatenate([images, jax.lax.stop_gradient(fused)]),
      train=True, mutable=["batch_stats"])
  loss = losses.discriminator_adversarial_loss(
      [x[:b] for x in logits], [x[b:] for x in logits],
      mode=config.adversarial_mode)
  return loss, updates["batch_stats"]


# ----------------------------------------------------------------------------
# Steps.


def train_step(state: train_state_lib.TrainState, batch: dict[str, jax.Array],
               frozen: dict[str, Any], rng: jax.Array, *, nets: Networks,
               config: ml_collections.ConfigDict,
               optimizers: dict[str, Any]
               ) -> tuple[train_state_lib.TrainState, dict[str, jax.Array]]:
  """One update of F (and D); returns every weighted term as a metric."""
  data = prepare(batch, frozen, rng, nets=nets, config=config)
  (total, (weighted, fused)), grads = jax.value_and_grad(
      fusion_losses, has_aux=True)(state.variables["fusion"]["params"],
                                   state.variables, data, frozen, nets=nets,
                                   config=config)
  grads = {"fusion": grads}
  batch_stats = {}
  out = dict(weighted, loss=total)
  checked = [total]
  if config.loss.adversarial > 0:
    (d_loss, d_stats), d_grads = jax.value_and_grad(
        discriminator_loss, has_aux=True)(
            state.variables["discriminator"]["params"], state.variables,
            data["image"], fused, nets=nets, config=config)
    grads["discriminator"] = d_grads
    batch_stats["discriminator"] = d_stats
    out["discriminator_loss"] = d_loss
    checked.append(d_loss)
  state, guard = train_state_lib.guarded_update(state, optimizers, grads, batch_stats,
                                       checked)
  return state, dict(out, **guard)


def fuse(state: train_state_lib.TrainState, nets: Networks,
         data: dict[str, jax.Array]) -> jax.Array:
  """F in inference mode on the prepared paths."""
  return linen_utils.apply_eval(nets.fusion, state.variables["fusion"],
                             data["forward"], data["inverse"])


def eval_step(state: train_state_lib.TrainState, batch: dict[str, jax.Array],
              frozen: dict[str, Any], rng: jax.Array, *, nets: Networks,
              config: ml_collections.ConfigDict) -> dict[str, jax.Array]:
  """Per-example held-out metrics: F against its two inputs and baselines.

  The recovery scheme (z = mu of E(I)) is scored against the ground truth;
  `best_input_psnr` is the better of the two paths per image. For the
  random scheme the luminance of F's output is scored against the true gray.

  Returns:
    name -> [B] float32.
  """
  data = prepare(batch, frozen, rng, nets=nets, config=config,
                 sample_codes=False)
  image = data["image"]
  b = image.shape[0]
  clip = lambda x: jnp.clip(x, 0.0, 1.0)
  fused = clip(fuse(state, nets, data))
  forward, inverse = clip(data["forward"]), clip(data["inverse"])
  per_example = dict(reduction="none")
  out = {}
  for name, pred in (("fusion", fused[:b]), ("ihn_to_c", forward[:b]),
                     ("c_to_ihn", inverse[:b])):
    out[f"{name}_psnr"] = metrics.psnr(pred, image, **per_example)
    out[f"{name}_ssim"] = metrics.ssim(pred, image, **per_example)
  out["best_input_psnr"] = jnp.maximum(out["ihn_to_c_psnr"],
                                       out["c_to_ihn_psnr"])
  gray3 = color_space.gray_to_rgb(clip(data["ihn_gray"]))
  blur = color_space.gray_to_rgb(baselines.blur_baseline(
      data["halftone"], config.halftone))
  for name, pred in (("gray3", gray3), ("blur_baseline", blur)):
    out[f"{name}_psnr"] = metrics.psnr(pred, image, **per_example)
    out[f"{name}_ssim"] = metrics.ssim(pred, image, **per_example)
  random_luma = lambda x: color_space.rgb_to_gray(x[2 * b:])
  out["random_fusion_luma_psnr"] = metrics.psnr(random_luma(fused),
                                                data["gray"], **per_example)
  out["random_ihn_to_c_luma_psnr"] = metrics.psnr(random_luma(forward),
                                                  data["gray"], **per_example)
  return out


def sample_step(state: train_state_lib.TrainState, batch: dict[str, jax.Array],
                frozen: dict[str, Any], rng: jax.Array, *, nets: Networks,
                config: ml_collections.ConfigDict) -> list[jax.Array]:
  """The columns of the sample grid (`SAMPLE_TITLES`)."""
  data = prepare(batch, frozen, rng, nets=nets, config=config,
                 sample_codes=False)
  b = data["image"].shape[0]
  fused = fuse(state, nets, data)
  return [data["halftone"], data["ihn_gray"], data["forward"][:b],
          data["inverse"][:b], fused[:b], fused[b:2 * b], fused[2 * b:],
          data["image"]]


SAMPLE_TITLES = ("halftone", "ihn gray", "IHN->C", "C->IHN", "fused",
                 "fused by reference", "fused random", "ground truth")


# ----------------------------------------------------------------------------
# Stage.


def make_stage(config: ml_collections.ConfigDict) -> loop_lib.Stage:
  """Networks, optimizers and jit-able steps of the fusion stage."""
  defaults.check_frozen_settings(config, "ihn")
  loaded = checkpoints_lib.load_frozen_networks(config.frozen, FROZEN)
  nets = build_networks(config, {name: section
                                 for name, (section, _) in loaded.items()})
  frozen = {name: variables for name, (_, variables) in loaded.items()}
  frozen.update(defaults.frozen_vgg(config, VGG_TERMS))
  trained = trained_networks(config)
  optimizers = {name: train_state_lib.make_optimizer(config.optim[name],
                                            config.num_train_steps)
                for name in trained}
  bound = dict(nets=nets, config=config)
  return loop_lib.Stage(
      name="fusion",
      init_variables=functools.partial(
          init_variables, nets=nets, size=config.data.image_size,
          trained=trained, fusion_init=config.fusion_init),
      optimizers=optimizers,
      train_step=functools.partial(train_step, optimizers=optimizers, **bound),
      frozen=frozen,
      eval_step=functools.partial(eval_step, **bound),
      sample_step=functools.partial(sample_step, **bound),
      sample_titles=SAMPLE_TITLES)


def train_and_evaluate(config: ml_collections.ConfigDict,
                       workdir: str) -> dict[str, float]:
  """Trains F in `workdir` (resuming if it holds a checkpoint).

  Returns:
    Final held-out metrics (see `eval_step`).
  """
  validate(config)
  return loop_lib.run_stage(config, workdir, make_stage(config),
                          init_from=dict(config.init_from))
