"""Stage 3: colour encoder E, colorization network G and discriminator D.

The IHN (stage 1) and H (stage 2) are frozen, restored from the workdirs named
in `config.frozen.ihn` / `config.frozen.histogram`. Every step runs the three
schemes of the paper (§2.2) on one batch:

* recovery: z_rec ~ E(I), I_rec = G(IHN(h), edge, z_rec), target I;
* reference: z_ref ~ E(I_ref), I_ref~ = G(IHN(h), edge, z_ref), target the
  pseudo ground truth I_example (`batch['example']` when the data provides
  it, else the built-in exemplar transfer `ihc_jax.exemplar`);
* random: z_r1, z_r2 ~ N(0, I), two random colorizations;

plus the C->IHN task: G(h, canny(h), z_rec) must produce the per-channel
colour halftone of I on the same screen lattice as h
(`halftone.synthesize_with_color`), so that the IHN can invert it channel by
channel in the fusion stage. All G calls share one batched forward pass.
Edges (Canny of the IHN gray, and of the halftone) carry no gradient.

E+G and D have separate optimizers, updated in the same jitted step; D sees
the G outputs of that step with stop-gradient. Loss weights are
`config.loss.<term>`, bound to the terms by name (`TERMS`); the defaults
follow the loss-balance study in docs/training.md.

The module reads top to bottom: config, networks, data, losses, steps,
`make_stage`, `train_and_evaluate`. It is one file (about 560 lines, over
the project's 500) on purpose: it is the one stage whose eleven terms and
three schemes a researcher changes together, and each function stays on
one screen.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from ihc_jax import colorspace as color_space
from ihc_jax import losses
from ihc_jax import metrics
from ihc_jax import models
from ihc_jax.data import color_jitter
from ihc_jax.models import generator as generator_lib
from ihc_jax.models import histogram as histogram_lib
from ihc_jax.trainers import baselines
from ihc_jax.trainers import checkpoints as checkpoints_lib
from ihc_jax.trainers import config_schema as config_schema_lib
from ihc_jax.trainers import loop as loop_lib
from ihc_jax.trainers import train_state as train_state_lib
from ihc_jax.trainers import defaults
from ihc_jax.trainers import inputs
from ihc_jax.trainers import linen_utils

TRAINED = ("encoder", "generator", "discriminator")
GENERATOR_INITS = ("gray", "random")
FROZEN = ("ihn", "histogram")
# Every term the step computes; `config.loss` must weight exactly these.
TERMS = ("recovery_l1", "reference_mse", "halftone_task", "structure",
         "style", "latent", "kl", "adversarial", "self_similarity",
         "histogram", "mode_seeking")
VGG_TERMS = ("structure", "style")


# ----------------------------------------------------------------------------
# Config.


def default_config() -> ml_collections.ConfigDict:
  """Paper-scale colour-stage config (256x256, official widths)."""
  config = defaults.base_config("color")
  config.num_train_steps = 200_000
  model = models.default_model_config()
  config.model = ml_collections.ConfigDict({
      name: model[name] for name in ("encoder", "generator", "discriminator",
                                     "vgg19")})
  config.noise_variant = "official"
  # Paper: style and structure losses on relu4_1.
  config.perceptual.layer = "relu4_1"
  # BicycleGAN defaults: Adam 2e-4, beta1 0.5, constant then linear decay.
  config.optim = ml_collections.ConfigDict({
      "encoder": defaults.optim_config(schedule="linear_decay"),
      "generator": defaults.optim_config(schedule="linear_decay"),
      "discriminator": defaults.optim_config(schedule="linear_decay"),
  })
  config.adversarial_mode = "lsgan"  # BicycleGAN default
  # Term -> weight (0 disables a term). The paper gives no weights; these
  # follow the loss-balance study of docs/training.md (magnitudes and
  # leave-one-out ablations on held-out photos).
  config.loss = ml_collections.ConfigDict(dict(
      recovery_l1=10.0,     # L_rec |I_rec - I|: BicycleGAN lambda_L1
      reference_mse=10.0,   # L_rec ||I_ref~ - I_example||^2
      # C->IHN: |G(h, z_rec) - colour halftone of I|. At 10 it was the
      # largest term (2-3x the recovery L1) and switching it off raised the
      # recovery PSNR by 0.8 dB (loss study): 1 keeps it in balance.
      halftone_task=1.0,
      structure=1.0,        # L_struct edge L1 + relu4_1 MSE on I_rand
      style=10.0,           # L_style Gram relu4_1
      latent=0.5,           # L_latent: BicycleGAN lambda_z
      kl=0.01,              # L_KL: BicycleGAN lambda_kl
      adversarial=1.0,      # L_adv: BicycleGAN lambda_GAN
      self_similarity=1.0,  # L_sim
      histogram=1.0,        # L_hist BCE of H histograms
      mode_seeking=0.1,     # L_ms, bounded hinge form (below)
  ))
  # L_ms: d_g "pixel" (MSGAN: mean |G(z1) - G(z2)|) or "gram" (the paper's
  # Gram distance of VGG relu4_1 features); form "hinge" (bounded,
  # max(0, 1 - ratio / tau)) or "msgan" (1 / (ratio + 1e-5), unbounded).
  config.mode_seeking = ml_collections.ConfigDict(dict(
      distance="pixel", form="hinge", tau=0.05))
  config.frozen = ml_collections.ConfigDict({
      "ihn": "REQUIRED: workdir of the trained ihn stage",
      "histogram": "REQUIRED: workdir of the trained hist stage",
  })
  config.init_from = ml_collections.ConfigDict(
      {name: "" for name in TRAINED})
  # G's start: "gray" (G(x, edge, z) starts as the gray x in every channel,
  # `models.generator.gray_init`; G has no full-resolution skip and from a
  # random start a short run ends below the gray itself) or "random" (the
  # framework's default initialisation). `init_from.generator` overrides it.
  config.generator_init = "gray"
  # Colour augmentation of the photos and references of every train step
  # (`ihc_jax.data.color_jitter`); off, as in the paper.
  config.augment = color_jitter.default_config()
  # Built-in exemplar transfer (used when the data has no `example`).
  config.exemplar = ml_collections.ConfigDict(dict(
      num_samples=200, window=5, luminance_weight=0.5, chunk_pixels=16384))
  return config


def _vgg_terms(config: ml_collections.ConfigDict) -> tuple[str, ...]:
  if config.mode_seeking.distance == "gram":
    return VGG_TERMS + ("mode_seeking",)
  return VGG_TERMS


def validate(config: ml_collections.ConfigDict) -> None:
  """Checks `config` against `default_config()` (keys, types, choices, paths,
  loss terms)."""
  config_schema_lib.validate_config(
      config, default_config(),
      choices=dict(defaults.CHOICES, generator_init=GENERATOR_INITS,
                   **{"mode_seeking.distance": ("pixel", "gram"),
                      "mode_seeking.form": losses.mode_seeking.FORMS,
                      "model.generator.luma": generator_lib.LUMA_MODES}),
      required=defaults.required_keys(config, _vgg_terms(config)))
  losses.check_loss_weights(config.loss, TERMS, stage="color")
  color_jitter.check(config.augment)


# ----------------------------------------------------------------------------
# Networks.


@dataclasses.dataclass(frozen=True)
class Networks:
  """The Linen modules of the stage (trained: E, G, D; frozen: IHN, H)."""
  encoder: nn.Module
  generator: nn.Module
  discriminator: nn.Module
  ihn: nn.Module
  histogram: nn.Module


def build_networks(config: ml_collections.ConfigDict,
                   frozen_sections: dict[str, ml_collections.ConfigDict]
                   ) -> Networks:
  """Modules from `config.model` and the frozen stages' model sections."""
  return Networks(
      encoder=linen_utils.build("encoder", config.model),
      generator=linen_utils.build("generator", config.model),
      discriminator=linen_utils.build("discriminator", config.model),
      ihn=models.build("ihn", frozen_sections["ihn"]),
      histogram=models.build("histogram", frozen_sections["histogram"]))


def init_variables(key: jax.Array, *, nets: Networks, size: int,
                   generator_init: str = "gray") -> dict[str, Any]:
  """Fresh variables of E, G and D for `size` x `size` images.

  `generator_init="gray"` starts G at the gray in three channels
  (`models.generator.gray_init`), "random" at the default initialisation.
  """
  if generator_init not in GENERATOR_INITS:
    raise ValueError(f"generator_init must be one of {GENERATOR_INITS}, "
                     f"got {generator_init!r}")
  keys = jax.random.split(key, 3)
  image = jnp.zeros((1, size, size, 3), jnp.float32)
  gray = jnp.zeros((1, size, size, 1), jnp.float32)
  z = jnp.zeros((1, nets.generator.nz), jnp.float32)
  g_vars = linen_utils.init_variables(nets.generator, keys[1], gray, gray, z,
                                      train=False)
  if generator_init == "gray":
    g_vars = dict(g_vars, params=generator_lib.gray_init(g_vars["params"]))
  return {
      "encoder": linen_utils.init_variables(nets.encoder, keys[0], image),
      "generator": g_vars,
      "discriminator": linen_utils.init_variables(nets.discriminator, keys[2],
                                               image, z, train=False),
  }


# ----------------------------------------------------------------------------
# Data: what every step derives from a batch with the frozen linen_utils.


def prepare(batch: dict[str, jax.Array], frozen: dict[str, Any],
            rng: jax.Array, *, nets: Networks,
            config: ml_collections.ConfigDict) -> dict[str, jax.Array]:
  """Halftone, IHN gray, edges, colour-halftone target and I_example.

  Args:
    batch: 'image' and 'reference' [B,S,S,3] in [0, 1], optional 'example'.
    frozen: frozen variables ('ihn', 'histogram', 'vgg19'?).
    rng: key for the halftone, the noise map and the exemplar transfer.
    nets: the stage's modules.
    config: the stage config.

  Returns:
    Dict of [B,S,S,C] arrays in [0, 1] (the IHN gray unclipped), no gradient.
  """
  keys = jax.random.split(rng, 2)
  image = batch["image"]
  ht, gray, noise, color_ht = inputs.halftone_inputs(
      keys[0], image, config, nets.ihn.nz, with_color=True)
  ihn_gray = linen_utils.apply_eval(nets.ihn, frozen["ihn"], ht, noise,
                                 train=False)[-1]
  if "example" in batch:
    example = batch["example"]
  else:
    from ihc_jax import exemplar  # pylint: disable=g-import-not-at-top
    example = exemplar.exemplar_transfer(gray, batch["reference"], key=keys[1],
                                         **config.exemplar.to_dict())
  data = dict(image=image, reference=batch["reference"], gray=gray,
              halftone=ht, ihn_gray=ihn_gray,
              edge_gray=models.canny_edges(jnp.clip(ihn_gray, 0.0, 1.0)),
              edge_halftone=models.canny_edges(ht), color_halftone=color_ht,
              example=example)
  return jax.lax.stop_gradient(data)


# ----------------------------------------------------------------------------
# Losses.


def _histograms(nets: Networks, frozen: dict[str, Any],
                images: jax.Array) -> jax.Array:
  return histogram_lib.channel_histograms(
      nets.histogram.apply, frozen["histogram"], jnp.clip(images, 0.0, 1.0))


def _generate(params: dict[str, Any], variables: dict[str, Any],
              data: dict[str, jax.Array], keys: jax.Array, *, nets: Networks
              ) -> tuple[dict[str, jax.Array], Any]:
  """E's codes and every G output of one step (train mode).

  One batched G pass gives rec, ref, rand1, rand2 (from the IHN gray) and
  the colour halftone (from the halftone). The latent term's inputs come
  from a G pass of their own on constant codes: in the shared pass,
  train-mode BatchNorm statistics would carry its gradient back to E.

  Returns:
    (outputs, G's new batch_stats); outputs has 'mu', 'logvar', 'z_rec',
    'z_ref', 'z_r1', 'z_r2', 'rec', 'ref', 'rand1', 'rand2', 'color_ht',
    'for_latent'.
  """
  image = data["image"]
  b = image.shape[0]
  nz = nets.generator.nz
  mu, logvar = nets.encoder.apply({"params": params["encoder"]},
                                  jnp.concatenate([image, data["reference"]]))
  codes = dict(z_rec=models.sample_latent(keys[0], mu[:b], logvar[:b]),
               z_ref=models.sample_latent(keys[1], mu[b:], logvar[b:]),
               z_r1=jax.random.normal(keys[2], (b, nz)),
               z_r2=jax.random.normal(keys[3], (b, nz)))
  out, g_batch_stats = linen_utils.apply_train(
      nets.generator, variables["generator"], params["generator"],
      jnp.concatenate([data["ihn_gray"]] * 4 + [data["halftone"]]),
      jnp.concatenate([data["edge_gray"]] * 4 + [data["edge_halftone"]]),
      jnp.concatenate([codes["z_rec"], codes["z_ref"], codes["z_r1"],
                       codes["z_r2"], codes["z_rec"]]),
      rng=keys[4], train=True)
  rec, ref, rand1, rand2, color_ht = jnp.split(out, 5)
  for_latent, _ = linen_utils.apply_train(
      nets.generator, variables["generator"], params["generator"],
      jnp.concatenate([data["ihn_gray"]] * 2),
      jnp.concatenate([data["edge_gray"]] * 2),
      jnp.concatenate([jax.lax.stop_gradient(codes["z_ref"]), codes["z_r1"]]),
      rng=keys[4], train=True)
  return dict(codes, mu=mu, logvar=logvar, rec=rec, ref=ref, rand1=rand1,
              rand2=rand2, color_ht=color_ht, for_latent=for_latent), \
      g_batch_stats


def _feature_terms(g: dict[str, jax.Array], data: dict[str, jax.Array],
                   frozen: dict[str, Any], active: set[str], *,
                   config: ml_collections.ConfigDict) -> dict[str, jax.Array]:
  """Structure, style and mode seeking (one VGG pass shared by them)."""
  terms = {}
  ms = config.mode_seeking
  image = data["image"]
  if active & set(_vgg_terms(config)):
    layer = config.perceptual.layer
    # G's outputs and the constant images in two VGG calls: the second has
    # no backward pass (one shared batch would carry the input gradient
    # through VGG for the images too).
    generated, constant = losses.vgg_feature_pair(
        frozen["vgg19"]["params"],
        jnp.concatenate([g["rec"], g["ref"], g["rand1"], g["rand2"]]),
        jax.lax.stop_gradient(jnp.concatenate([image, data["reference"]])),
        layer=layer, normalization=config.model.vgg19.normalization,
        dtype=linen_utils.compute_dtype(config.model, "vgg19"))
    f_rec, f_ref, f_rand1, f_rand2 = jnp.split(generated, 4)
    f_image, f_reference = jnp.split(constant, 2)
    terms["structure"] = losses.structure_loss_from_features(
        g["rand1"], image, f_rand1, f_image)
    terms["style"] = (losses.style_loss_from_features(f_rec, f_image)
                      + losses.style_loss_from_features(f_ref, f_reference))
    if ms.distance == "gram":
      terms["mode_seeking"] = losses.mode_seeking_loss_from_features(
          f_rand1, f_rand2, g["z_r1"], g["z_r2"], distance="gram",
          form=ms.form, tau=ms.tau)
  if ms.distance == "pixel":
    terms["mode_seeking"] = losses.mode_seeking_loss_from_features(
        g["rand1"], g["rand2"], g["z_r1"], g["z_r2"], distance="pixel",
        form=ms.form, tau=ms.tau)
  return terms


def _critic_terms(params: dict[str, Any], variables: dict[str, Any],
                  g: dict[str, jax.Array], data: dict[str, jax.Array],
                  frozen: dict[str, Any], active: set[str], *,
                  nets: Networks, config: ml_collections.ConfigDict
                  ) -> dict[str, jax.Array]:
  """Latent regression, adversarial, self-similarity and histogram terms."""
  image, b = data["image"], data["image"].shape[0]
  # Latent regression updates G only (as BicycleGAN): E is applied with
  # frozen parameters to outputs of constant codes (`_generate`), so E
  # cannot satisfy the term by shrinking both sides.
  with jax.named_scope("latent"):
    mu_hat, _ = nets.encoder.apply(
        {"params": jax.lax.stop_gradient(params["encoder"])}, g["for_latent"])
    terms = {"latent": (
        losses.latent_loss(jax.lax.stop_gradient(g["z_ref"]), mu_hat[:b])
        + losses.latent_loss(g["z_r1"], mu_hat[b:]))}
  if "adversarial" in active:
    with jax.named_scope("adversarial"):
      fake_logits = nets.discriminator.apply(
          variables["discriminator"], jnp.concatenate([g["rec"], g["rand1"]]),
          jnp.concatenate([g["z_rec"], g["z_r1"]]), train=True,
          mutable=["batch_stats"])[0]
      terms["adversarial"] = losses.generator_adversarial_loss(
          fake_logits, mode=config.adversarial_mode)
  if "self_similarity" in active:
    with jax.named_scope("self_similarity"):
      terms["self_similarity"] = losses.self_similarity_loss(
          jnp.concatenate([g["rec"], g["ref"], g["rand1"]]),
          jnp.concatenate([image] * 3))
  if "histogram" in active:
    with jax.named_scope("histogram"):
      hists = _histograms(nets, frozen, jnp.concatenate([g["rec"], g["ref"]]))
      targets = jax.lax.stop_gradient(_histograms(
          nets, frozen, jnp.concatenate([image, data["reference"]])))
      terms["histogram"] = losses.histogram_loss_from_histograms(hists, targets)
  return terms


def generator_losses(params: dict[str, Any], variables: dict[str, Any],
                     data: dict[str, jax.Array], frozen: dict[str, Any],
                     rng: jax.Array, loss_weights: dict[str, Any] | None = None,
                     *, nets: Networks, config: ml_collections.ConfigDict
                     ) -> tuple[jax.Array, tuple[dict, Any, dict]]:
  """The E+G objective of one step: every term of `TERMS`, weighted.

  Args:
    params: {'encoder': ..., 'generator': ...} (differentiated).
    variables: all trained variables (G's batch_stats, D's variables).
    data: the output of `prepare`.
    frozen: frozen variables.
    rng: key for the codes and dropout.
    loss_weights: term -> weight (may be traced) overriding the values of
      `config.loss`; which terms are computed still follows `config.loss`
      (weight > 0), so one compiled step serves any weights (the loss study).
    nets: the stage's modules.
    config: the stage config (`loss`, `mode_seeking`, `perceptual`, ...).

  Returns:
    (total, (weighted terms, G's new batch_stats, fakes for D)).
  """
  active = {name for name in TERMS if config.loss[name] > 0}
  weights = dict(config.loss) if loss_weights is None else dict(loss_weights)
  g, g_batch_stats = _generate(params, variables, data,
                               jax.random.split(rng, 5), nets=nets)
  terms = {
      "recovery_l1": losses.recovery_l1_loss(g["rec"], data["image"]),
      "reference_mse": losses.reference_mse_loss(g["ref"], data["example"]),
      "halftone_task": losses.halftone_task_loss(g["color_ht"],
                                                 data["color_halftone"]),
      "kl": losses.kl_loss(g["mu"], g["logvar"]),
  }
  with jax.named_scope("vgg_terms"):
    terms.update(_feature_terms(g, data, frozen, active, config=config))
  terms.update(_critic_terms(params, variables, g, data, frozen, active,
                             nets=nets, config=config))
  terms = {name: value for name, value in terms.items() if name in active}
  total, weighted = losses.weighted_total(
      {name: weights[name] for name in active}, terms)
  fakes = jax.lax.stop_gradient(dict(
      images=jnp.concatenate([g["rec"], g["rand1"]]),
      z=jnp.concatenate([g["z_rec"], g["z_r1"]]), real_z=g["z_rec"]))
  return total, (weighted, g_batch_stats, fakes)


def discriminator_loss(params: Any, variables: dict[str, Any],
                       data: dict[str, jax.Array], fakes: dict[str, jax.Array],
                       *, nets: Networks, config: ml_collections.ConfigDict
                       ) -> tuple[jax.Array, Any]:
  """D's loss on (I, z_rec) as real and the two fake sets (I_rec, I_rand).

  Returns:
    (loss, D's new batch_stats).
  """
  d_variables = dict(variables["discriminator"], params=params)
  images = jnp.concatenate([data["image"], fakes["images"]])
  z = jnp.concatenate([fakes["real_z"], fakes["z"]])
  logits, updates = nets.discriminator.apply(
      d_variables, images, z, train=True, mutable=["batch_stats"])
  b = data["image"].shape[0]
  real = [x[:b] for x in logits]
  loss = 0.5 * sum(
      losses.discriminator_adversarial_loss(
          real, [x[b * (i + 1):b * (i + 2)] for x in logits],
          mode=config.adversarial_mode)
      for i in range(2))
  return loss, updates["batch_stats"]


# ----------------------------------------------------------------------------
# Steps.


def train_step(state: train_state_lib.TrainState, batch: dict[str, jax.Array],
               frozen: dict[str, Any], rng: jax.Array,
               loss_weights: dict[str, Any] | None = None, *, nets: Networks,
               config: ml_collections.ConfigDict,
               optimizers: dict[str, Any]
               ) -> tuple[train_state_lib.TrainState, dict[str, jax.Array]]:
  """One update of E+G and D; returns every weighted term as a metric.

  `loss_weights` (optional, may be traced) overrides the values of
  `config.loss`, see `generator_losses`.
  """
  data_key, g_key = jax.random.split(rng)
  with jax.named_scope("prepare"):
    if color_jitter.is_active(config.augment):
      keys = jax.random.split(jax.random.fold_in(rng, 1), 2)
      batch = dict(batch, **{
          name: color_jitter.jitter_from_config(k, batch[name], config.augment)
          for name, k in zip(("image", "reference"), keys)})
    data = prepare(batch, frozen, data_key, nets=nets, config=config)
  params = {name: state.variables[name]["params"]
            for name in ("encoder", "generator")}
  (g_total, (weighted, g_stats, fakes)), g_grads = jax.value_and_grad(
      generator_losses, has_aux=True)(params, state.variables, data, frozen,
                                      g_key, loss_weights, nets=nets,
                                      config=config)
  grads = dict(g_grads)
  batch_stats = {"generator": g_stats}
  out = dict(weighted, loss=g_total)
  checked = [g_total]
  if config.loss.adversarial > 0:
    with jax.named_scope("discriminator_loss"):
      (d_loss, d_stats), d_grads = jax.value_and_grad(
          discriminator_loss, has_aux=True)(
              state.variables["discriminator"]["params"], state.variables,
              data, fakes, nets=nets, config=config)
    grads["discriminator"] = d_grads
    batch_stats["discriminator"] = d_stats
    out["discriminator_loss"] = d_loss
    checked.append(d_loss)
  state, guard = train_state_lib.guarded_update(state, optimizers, grads, batch_stats,
                                       checked)
  return state, dict(out, **guard)


def colorize(state: train_state_lib.TrainState, nets: Networks, gray: jax.Array,
             edge: jax.Array, z: jax.Array) -> jax.Array:
  """G in inference mode: [B,S,S,1] gray, edge and [B,nz] code -> RGB."""
  return linen_utils.apply_eval(nets.generator, state.variables["generator"],
                             gray, edge, z, train=False)


def _schemes(state: train_state_lib.TrainState, batch: dict[str, jax.Array],
             frozen: dict[str, Any], rng: jax.Array, *, nets: Networks,
             config: ml_collections.ConfigDict
             ) -> tuple[dict[str, jax.Array], list[jax.Array]]:
  """Prepared data and G's recovery (z = mu of E(I)), reference (z = mu of
  E(I_ref)) and two random results, unclipped, in inference mode."""
  data_key, z_key = jax.random.split(rng)
  data = prepare(batch, frozen, data_key, nets=nets, config=config)
  b = data["image"].shape[0]
  mu, _ = linen_utils.apply_eval(nets.encoder, state.variables["encoder"],
                                 jnp.concatenate([data["image"],
                                                  data["reference"]]))
  z = jnp.concatenate([mu, jax.random.normal(z_key, (2 * b, mu.shape[-1]))])
  out = colorize(state, nets, jnp.concatenate([data["ihn_gray"]] * 4),
                 jnp.concatenate([data["edge_gray"]] * 4), z)
  return data, jnp.split(out, 4)


# `random_washed`: of WASH_CODES random codes per photo, the fraction whose
# result is saturated (Lab C* > 60) over more than WASH_AREA of its pixels.
# A wash comes from the code, not the photo (one code washes most photos),
# so two samples per photo cannot see it; sixteen can.
WASH_CODES = 16
WASH_AREA = 0.3


def _washed_fraction(state: train_state_lib.TrainState, nets: Networks,
                     data: dict[str, jax.Array], rng: jax.Array) -> jax.Array:
  """[B] fraction of WASH_CODES random codes that wash each photo."""
  b, nz = data["image"].shape[0], nets.generator.nz
  z = jax.random.normal(rng, (WASH_CODES * b, nz))
  out = colorize(state, nets, jnp.tile(data["ihn_gray"], (WASH_CODES, 1, 1, 1)),
                 jnp.tile(data["edge_gray"], (WASH_CODES, 1, 1, 1)), z)
  saturated = metrics.saturated_fraction(out, reduction="none")
  return jnp.mean((saturated.reshape(WASH_CODES, b) > WASH_AREA).astype(
      jnp.float32), axis=0)


def eval_step(state: train_state_lib.TrainState, batch: dict[str, jax.Array],
              frozen: dict[str, Any], rng: jax.Array, *, nets: Networks,
              config: ml_collections.ConfigDict) -> dict[str, jax.Array]:
  """Per-example held-out metrics of the three schemes and the baselines.

  Returns:
    name -> [B] float32: recovery PSNR/SSIM (z = mu of E(I)) beside the IHN
    gray in three channels, the blur baseline and the untrained exemplar
    transfer of the photo itself onto the IHN gray (`self_transfer_psnr`); the reference result's and
    the gray's chroma distance to the reference (`metrics.chroma_distance`);
    the random samples' difference, luma SSIM to the IHN gray, luma PSNR to
    the true gray beside the IHN gray's, and saturated fraction beside the
    ground truth's; the fraction of random codes that
    wash the photo (`random_washed`, WASH_CODES codes).
  """
  rng, wash_key = jax.random.split(rng)
  data, outputs = _schemes(state, batch, frozen, rng, nets=nets,
                           config=config)
  image, reference = data["image"], data["reference"]
  rec, ref, rand1, rand2 = (jnp.clip(x, 0.0, 1.0) for x in outputs)
  gray3 = color_space.gray_to_rgb(jnp.clip(data["ihn_gray"], 0.0, 1.0))
  blur = color_space.gray_to_rgb(baselines.blur_baseline(
      data["halftone"], config.halftone))
  ihn_gray = jnp.clip(data["ihn_gray"], 0.0, 1.0)
  per_example = dict(reduction="none")
  from ihc_jax import exemplar  # pylint: disable=g-import-not-at-top
  # The untrained answer with the recovery scheme's information: the photo
  # itself transferred onto the IHN gray (Welsh et al., a fixed key).
  self_transfer = exemplar.exemplar_transfer(
      ihn_gray, image, **config.exemplar.to_dict())
  return {
      "recovery_psnr": metrics.psnr(rec, image, **per_example),
      "self_transfer_psnr": metrics.psnr(self_transfer, image,
                                         **per_example),
      "recovery_ssim": metrics.ssim(rec, image, **per_example),
      "gray3_psnr": metrics.psnr(gray3, image, **per_example),
      "gray3_ssim": metrics.ssim(gray3, image, **per_example),
      "blur_baseline_psnr": metrics.psnr(blur, image, **per_example),
      "blur_baseline_ssim": metrics.ssim(blur, image, **per_example),
      "reference_chroma_dist": metrics.chroma_distance(ref, reference,
                                                       **per_example),
      "gray_chroma_dist": metrics.chroma_distance(gray3, reference,
                                                  **per_example),
      "random_difference": jnp.mean(jnp.abs(rand1 - rand2), axis=(1, 2, 3)),
      "random_luma_ssim": metrics.ssim(
          color_space.rgb_to_gray(rand1), ihn_gray, **per_example),
      # A random sample's luma and the IHN gray, each against the true gray.
      "random_luma_psnr": metrics.psnr(color_space.rgb_to_gray(rand1),
                                       data["gray"], **per_example),
      "ihn_gray_psnr": metrics.psnr(ihn_gray, data["gray"], **per_example),
      "random_saturated": metrics.saturated_fraction(rand1, **per_example),
      "truth_saturated": metrics.saturated_fraction(image, **per_example),
      "random_washed": _washed_fraction(state, nets, data, wash_key),
  }


def sample_step(state: train_state_lib.TrainState, batch: dict[str, jax.Array],
                frozen: dict[str, Any], rng: jax.Array, *, nets: Networks,
                config: ml_collections.ConfigDict) -> list[jax.Array]:
  """The columns of the sample grid (`SAMPLE_TITLES`)."""
  data, (rec, ref, rand1, rand2) = _schemes(state, batch, frozen, rng,
                                            nets=nets, config=config)
  return [data["halftone"], data["ihn_gray"], rec, data["reference"], ref,
          rand1, rand2, data["image"]]


SAMPLE_TITLES = ("halftone", "ihn gray", "recovery", "reference",
                 "by reference", "random 1", "random 2", "ground truth")


# ----------------------------------------------------------------------------
# Stage.


def make_stage(config: ml_collections.ConfigDict) -> loop_lib.Stage:
  """Networks, optimizers and jit-able steps of the colour stage."""
  defaults.check_frozen_settings(config, "ihn")
  defaults.check_frozen_image_size(config, "histogram")
  loaded = checkpoints_lib.load_frozen_networks(config.frozen, FROZEN)
  nets = build_networks(config, {name: section
                                 for name, (section, _) in loaded.items()})
  frozen = {name: variables for name, (_, variables) in loaded.items()}
  frozen.update(defaults.frozen_vgg(config, _vgg_terms(config)))
  optimizers = {name: train_state_lib.make_optimizer(config.optim[name],
                                            config.num_train_steps)
                for name in TRAINED}
  bound = dict(nets=nets, config=config)
  return loop_lib.Stage(
      name="color",
      init_variables=functools.partial(
          init_variables, nets=nets, size=config.data.image_size,
          generator_init=config.generator_init),
      optimizers=optimizers,
      train_step=functools.partial(train_step, optimizers=optimizers, **bound),
      frozen=frozen,
      eval_step=functools.partial(eval_step, **bound),
      sample_step=functools.partial(sample_step, **bound),
      sample_titles=SAMPLE_TITLES)


def train_and_evaluate(config: ml_collections.ConfigDict,
                       workdir: str) -> dict[str, float]:
  """Trains E, G and D in `workdir` (resuming if it holds a checkpoint).

  Returns:
    Final held-out metrics (see `eval_step`).
  """
  validate(config)
  return loop_lib.run_stage(config, workdir, make_stage(config),
                          init_from=dict(config.init_from))
