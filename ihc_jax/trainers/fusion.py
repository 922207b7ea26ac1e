"""Stage 4: the fusion network F on the outputs of both cascade paths.

With the IHN (stage 1) and E, G (stage 3) frozen, every step builds the two
colorizations of a halftone h exactly as the official inference does
(original-code.md §4):

* IHN->C: g = IHN(h, noise), c_forward = G(g, canny(g), z);
* C->IHN: c_ht = G(h, canny(h), z), c_inverse = IHN applied to each colour
  channel of c_ht with the same noise map;

with z = E(I) (the recovery code, so the ground truth I is the target), and
trains F(c_forward, c_inverse) with an L1 reconstruction loss and a VGG
perceptual loss against I; an adversarial loss (a fresh D) is optional
(`loss.adversarial > 0`).
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

FROZEN = ("ihn", "encoder", "generator")
VGG_LOSSES = ("perceptual",)


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
      recovery_l1=10.0,  # |F - I|, choice (BicycleGAN's lambda_L1)
      perceptual=0.05,   # ||phi(F) - phi(I)||^2 at relu4_1, choice
      adversarial=0.0,   # optional; > 0 trains a fresh D
  ))
  config.frozen = ml_collections.ConfigDict({
      "ihn": "REQUIRED: workdir of the trained ihn stage",
      "encoder": "REQUIRED: workdir of the trained color stage",
      "generator": "REQUIRED: workdir of the trained color stage",
  })
  config.init_from = ml_collections.ConfigDict(
      {"fusion": "", "discriminator": ""})
  return config


def validate(config: ml_collections.ConfigDict) -> None:
  """Checks `config` against `default_config()` (keys, types, choices, paths)."""
  common.validate_config(config, default_config(), choices=defaults.CHOICES,
                         required=defaults.required_keys(config, VGG_LOSSES))


def cascade(nets: dict, frozen: dict, image: jax.Array, ht: jax.Array,
            noise: jax.Array, z: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
  """Both cascade paths with frozen networks (no gradient).

  Args:
    nets: 'ihn' and 'generator' Linen modules.
    frozen: their variables.
    image: unused shape reference [B,H,W,3].
    ht: [B,H,W,1] halftone in [0,1].
    noise: [B,H,W,nz] IHN noise map, shared by every IHN call.
    z: [B,nz] colour code.

  Returns:
    (IHN gray [B,H,W,1], c_forward [B,H,W,3], c_inverse [B,H,W,3]).
  """
  del image
  ihn, generator = nets["ihn"], nets["generator"]
  gray = networks.apply_eval(ihn, frozen["ihn"], ht, noise, train=False)[-1]
  edge_gray = models.canny_edges(jnp.clip(gray, 0.0, 1.0))
  edge_ht = models.canny_edges(ht)
  b = ht.shape[0]
  both = networks.apply_eval(
      generator, frozen["generator"], jnp.concatenate([gray, ht]),
      jnp.concatenate([edge_gray, edge_ht]), jnp.concatenate([z, z]),
      train=False)
  c_forward, c_ht = both[:b], both[b:]
  # IHN on each colour channel (batched as 3B one-channel images).
  channels = jnp.concatenate([c_ht[..., i:i + 1] for i in range(3)])
  inverse = networks.apply_eval(ihn, frozen["ihn"], channels,
                                jnp.concatenate([noise] * 3), train=False)[-1]
  c_inverse = jnp.concatenate(jnp.split(inverse, 3), axis=-1)
  return jax.lax.stop_gradient((gray, c_forward, c_inverse))


def make_stage(config: ml_collections.ConfigDict) -> common.Stage:
  """Networks, optimizers and jit-able steps of the fusion stage."""
  loaded = common.load_frozen_networks(config.frozen, FROZEN)
  nets = {name: models.build(name, section)
          for name, (section, _) in loaded.items()}
  fusion_net = networks.build("fusion", config.model)
  discriminator = networks.build("discriminator", config.model)
  ihn_nz = loaded["ihn"][0].nz
  size = config.data.image_size
  weights = config.loss
  use_gan = weights.adversarial > 0
  use_vgg = defaults.uses_vgg(weights, VGG_LOSSES)
  frozen = {name: variables for name, (_, variables) in loaded.items()}
  if use_vgg:
    frozen["vgg19"] = {"params": vgg.load_vgg19_params(
        defaults.perceptual_section(config), seed=config.seed)}
  trained = ("fusion", "discriminator") if use_gan else ("fusion",)

  def init_variables(key):
    keys = jax.random.split(key)
    image = jnp.zeros((1, size, size, 3), jnp.float32)
    out = {"fusion": networks.init_variables(fusion_net, keys[0], image, image)}
    if use_gan:
      out["discriminator"] = networks.init_variables(
          discriminator, keys[1], image, train=False)
    return out

  optimizers = {name: common.make_optimizer(config.optim[name],
                                            config.num_train_steps)
                for name in trained}

  def prepare(batch, frozen, rng):
    keys = jax.random.split(rng)
    image = batch["image"]
    ht, _, noise = networks.halftone_inputs(keys[0], image, config, ihn_nz)
    mu, logvar = networks.apply_eval(nets["encoder"], frozen["encoder"], image)
    z = models.sample_latent(keys[1], mu, logvar)
    ihn_gray, c_forward, c_inverse = cascade(nets, frozen, image, ht, noise, z)
    return dict(image=image, halftone=ht, ihn_gray=ihn_gray,
                c_forward=c_forward, c_inverse=c_inverse, mu=mu)

  def train_step(state, batch, frozen, rng):
    data = prepare(batch, frozen, rng)

    def loss_fn(params):
      fused = fusion_net.apply({"params": params}, data["c_forward"],
                               data["c_inverse"])
      terms = {"recovery_l1": losses.recovery_l1_loss(fused, data["image"])}
      if use_vgg:
        terms["perceptual"] = losses.perceptual_loss(
            frozen["vgg19"]["params"], fused, data["image"],
            layer=config.perceptual.layer,
            normalization=config.model.vgg19.normalization)
      if use_gan:
        logits = discriminator.apply(state.variables["discriminator"], fused,
                                     train=True, mutable=["batch_stats"])[0]
        terms["adversarial"] = losses.generator_adversarial_loss(
            logits, mode=config.adversarial_mode)
      total, weighted = losses.weighted_total(weights, terms)
      return total, (weighted, fused)

    (total, (weighted, fused)), grads = jax.value_and_grad(
        loss_fn, has_aux=True)(state.variables["fusion"]["params"])
    grads = {"fusion": grads}
    batch_stats = {}
    out = dict(weighted, loss=total)
    checked = [total]
    if use_gan:
      def d_loss_fn(params):
        variables = dict(state.variables["discriminator"], params=params)
        b = data["image"].shape[0]
        logits, updates = discriminator.apply(
            variables, jnp.concatenate([data["image"],
                                        jax.lax.stop_gradient(fused)]),
            train=True, mutable=["batch_stats"])
        loss = losses.discriminator_adversarial_loss(
            [x[:b] for x in logits], [x[b:] for x in logits],
            mode=config.adversarial_mode)
        return loss, updates["batch_stats"]
      (d_loss, d_stats), d_grads = jax.value_and_grad(d_loss_fn, has_aux=True)(
          state.variables["discriminator"]["params"])
      grads["discriminator"] = d_grads
      batch_stats["discriminator"] = d_stats
      out["discriminator_loss"] = d_loss
      checked.append(d_loss)
    state, guard = common.guarded_update(state, optimizers, grads, batch_stats,
                                         checked)
    return state, dict(out, **guard)

  def fuse(state, data):
    return networks.apply_eval(fusion_net, state.variables["fusion"],
                               data["c_forward"], data["c_inverse"])

  def eval_step(state, batch, frozen, rng):
    data = prepare(batch, frozen, rng)
    image = data["image"]
    out = {}
    for name, pred in (("fusion", fuse(state, data)),
                       ("ihn_to_c", data["c_forward"]),
                       ("c_to_ihn", data["c_inverse"])):
      pred = jnp.clip(pred, 0.0, 1.0)
      out[f"{name}_psnr"] = metrics.psnr(pred, image)
      out[f"{name}_ssim"] = metrics.ssim(pred, image)
    baseline = jnp.repeat(baselines.descreen_blur(
        data["halftone"], period=defaults.screen_period(config),
        tone_curve=config.halftone.tone_curve), 3, axis=-1)
    out["blur_baseline_psnr"] = metrics.psnr(baseline, image)
    out["blur_baseline_ssim"] = metrics.ssim(baseline, image)
    return out

  def sample_step(state, batch, frozen, rng):
    data = prepare(batch, frozen, rng)
    return [data["halftone"], data["ihn_gray"], data["c_forward"],
            data["c_inverse"], fuse(state, data), data["image"]]

  return common.Stage(name="fusion", init_variables=init_variables,
                      optimizers=optimizers, train_step=train_step,
                      frozen=frozen, eval_step=eval_step,
                      sample_step=sample_step,
                      sample_titles=("halftone", "ihn gray", "IHN->C",
                                     "C->IHN", "fused", "ground truth"))


def train_and_evaluate(config: ml_collections.ConfigDict,
                       workdir: str) -> dict[str, float]:
  """Trains F in `workdir` (resuming if it holds a checkpoint).

  Returns:
    Final held-out PSNR/SSIM of the fused output, of both cascade paths and
    of the blur baseline.
  """
  validate(config)
  return common.run_stage(config, workdir, make_stage(config),
                          init_from=dict(config.init_from))
