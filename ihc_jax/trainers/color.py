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
colour halftone of I (`halftone.synthesize_color`), so the second cascade path
of the fusion stage works. All G calls share one batched forward pass. Edges
(Canny of the IHN gray, and of the halftone) carry no gradient.

E+G and D have separate optimizers, updated in the same jitted step; D sees
the G outputs of that step with stop-gradient. Loss weights are
`config.loss.<name>`; those not given by the paper are choices documented in
`default_config` and docs/training.md.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections

from ihc_jax import halftone
from ihc_jax import losses
from ihc_jax import metrics
from ihc_jax import models
from ihc_jax.models import histogram as histogram_lib
from ihc_jax.models import vgg
from ihc_jax.trainers import baselines
from ihc_jax.trainers import common
from ihc_jax.trainers import defaults
from ihc_jax.trainers import networks

TRAINED = ("encoder", "generator", "discriminator")
FROZEN = ("ihn", "histogram")
VGG_LOSSES = ("structure", "style")


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
  # Names are those of `ihc_jax.losses.LOSSES`. Weights the paper does not
  # give are choices (docs/training.md).
  config.loss = ml_collections.ConfigDict(dict(
      recovery_l1=10.0,     # L_rec |I_rec - I|: BicycleGAN lambda_L1
      reference_mse=10.0,   # L_rec ||I_ref~ - I_example||^2: choice (= L1's)
      structure=1.0,        # L_struct edge L1 + relu4_1 MSE on I_rand: choice
      style=10.0,           # L_style Gram relu4_1: choice
      latent=0.5,           # L_latent: BicycleGAN lambda_z
      kl=0.01,              # L_KL: BicycleGAN lambda_kl
      adversarial=1.0,      # L_adv: BicycleGAN lambda_GAN
      self_similarity=1.0,  # L_sim: choice
      histogram=1.0,        # L_hist BCE of H histograms: choice
      mode_seeking=0.1,     # L_ms: choice (MSGAN uses 1 with "pixel")
  ))
  # "pixel": MSGAN's mean |G(z1) - G(z2)| / mean |z1 - z2|; "gram": the
  # paper's Gram distance of VGG relu4_1 features, whose ratio is tiny (1/x
  # huge) unless the weight is tuned to it.
  config.mode_seeking_distance = "pixel"
  # G on halftone -> colour halftone (the C->IHN path), L1: choice.
  config.halftone_task_weight = 10.0
  config.frozen = ml_collections.ConfigDict({
      "ihn": "REQUIRED: workdir of the trained ihn stage",
      "histogram": "REQUIRED: workdir of the trained hist stage",
  })
  config.init_from = ml_collections.ConfigDict(
      {name: "" for name in TRAINED})
  # Built-in exemplar transfer (used when the data has no `example`).
  config.exemplar = ml_collections.ConfigDict(dict(
      num_samples=200, window=5, luminance_weight=0.5, chunk_pixels=16384))
  return config


def _vgg_losses(config: ml_collections.ConfigDict) -> tuple[str, ...]:
  if config.mode_seeking_distance == "gram":
    return VGG_LOSSES + ("mode_seeking",)
  return VGG_LOSSES


def validate(config: ml_collections.ConfigDict) -> None:
  """Checks `config` against `default_config()` (keys, types, choices, paths)."""
  common.validate_config(
      config, default_config(),
      choices=dict(defaults.CHOICES, mode_seeking_distance=("pixel", "gram")),
      required=defaults.required_keys(config, _vgg_losses(config)))


def check_frozen_sizes(config: ml_collections.ConfigDict) -> None:
  """Size-dependent frozen networks must match this stage's image size."""
  for name in ("histogram",):
    trained = common.load_stage_config(config.frozen[name])
    if trained.data.image_size != config.data.image_size:
      raise ValueError(
          f"frozen {name} from {config.frozen[name]!r} was trained at "
          f"{trained.data.image_size}px but data.image_size is "
          f"{config.data.image_size}; its layers depend on the image size")


def make_stage(config: ml_collections.ConfigDict) -> common.Stage:
  """Networks, optimizers and jit-able steps of the colour stage."""
  check_frozen_sizes(config)
  loaded = common.load_frozen_networks(config.frozen, FROZEN)
  ihn = models.build("ihn", loaded["ihn"][0])
  hist_net = models.build("histogram", loaded["histogram"][0])
  encoder = networks.build("encoder", config.model)
  generator = networks.build("generator", config.model)
  discriminator = networks.build("discriminator", config.model)
  nz = config.model.generator.nz
  ihn_nz = loaded["ihn"][0].nz
  size = config.data.image_size
  weights = config.loss
  mode = config.adversarial_mode
  use_vgg = defaults.uses_vgg(weights, _vgg_losses(config))
  frozen = {name: variables for name, (_, variables) in loaded.items()}
  if use_vgg:
    frozen["vgg19"] = {"params": vgg.load_vgg19_params(
        defaults.perceptual_section(config), seed=config.seed)}

  def init_variables(key):
    keys = jax.random.split(key, 3)
    image = jnp.zeros((1, size, size, 3), jnp.float32)
    gray = jnp.zeros((1, size, size, 1), jnp.float32)
    z = jnp.zeros((1, nz), jnp.float32)
    return {
        "encoder": networks.init_variables(encoder, keys[0], image),
        "generator": networks.init_variables(generator, keys[1], gray, gray,
                                             z, train=False),
        "discriminator": networks.init_variables(discriminator, keys[2],
                                                 image, z, train=False),
    }

  optimizers = {name: common.make_optimizer(config.optim[name],
                                            config.num_train_steps)
                for name in TRAINED}

  def prepare(batch, frozen, rng):
    """Halftone, IHN gray, edges, colour-halftone target, I_example."""
    keys = jax.random.split(rng, 3)
    image = batch["image"]
    ht, gray, noise = networks.halftone_inputs(keys[0], image, config, ihn_nz)
    ihn_gray = networks.apply_eval(ihn, frozen["ihn"], ht, noise,
                                   train=False)[-1]
    ihn_gray = jax.lax.stop_gradient(ihn_gray)
    color_ht = halftone.synthesize_color(keys[1], image, config.halftone)
    if "example" in batch:
      example = batch["example"]
    else:
      from ihc_jax import exemplar  # pylint: disable=g-import-not-at-top
      example = exemplar.exemplar_transfer(gray, batch["reference"],
                                           key=keys[2],
                                           **config.exemplar.to_dict())
    return dict(image=image, reference=batch["reference"], gray=gray,
                halftone=ht, ihn_gray=ihn_gray,
                edge_gray=models.canny_edges(jnp.clip(ihn_gray, 0.0, 1.0)),
                edge_halftone=models.canny_edges(ht), color_halftone=color_ht,
                example=jax.lax.stop_gradient(example))

  def histograms(images, frozen):
    return histogram_lib.channel_histograms(
        hist_net.apply, frozen["histogram"], jnp.clip(images, 0.0, 1.0))

  def generator_losses(params, state, data, frozen, rng):
    keys = jax.random.split(rng, 6)
    b = data["image"].shape[0]
    mu, logvar = encoder.apply({"params": params["encoder"]},
                               jnp.concatenate([data["image"],
                                                data["reference"]]))
    mu_rec, mu_ref = mu[:b], mu[b:]
    logvar_rec, logvar_ref = logvar[:b], logvar[b:]
    z_rec = models.sample_latent(keys[0], mu_rec, logvar_rec)
    z_ref = models.sample_latent(keys[1], mu_ref, logvar_ref)
    z_r1 = jax.random.normal(keys[2], (b, nz))
    z_r2 = jax.random.normal(keys[3], (b, nz))
    # One batched G pass: rec, ref, rand1, rand2 from the IHN gray, and the
    # colour halftone from the halftone.
    g_in = jnp.concatenate([data["ihn_gray"]] * 4 + [data["halftone"]])
    e_in = jnp.concatenate([data["edge_gray"]] * 4 + [data["edge_halftone"]])
    z_in = jnp.concatenate([z_rec, z_ref, z_r1, z_r2, z_rec])
    out, g_batch_stats = networks.apply_train(
        generator, state.variables["generator"], params["generator"], g_in,
        e_in, z_in, rng=keys[4], train=True)
    rec, ref, rand1, rand2, color_ht = jnp.split(out, 5)

    image, reference = data["image"], data["reference"]
    terms = {
        "recovery_l1": losses.recovery_l1_loss(rec, image),
        "reference_mse": losses.reference_mse_loss(ref, data["example"]),
        "kl": losses.kl_loss(mu, logvar),
    }
    if use_vgg:
      # One VGG pass shared by the structure, style and mode-seeking terms.
      layer = config.perceptual.layer
      feats = losses.vgg_features(
          frozen["vgg19"]["params"],
          jnp.concatenate([rec, ref, rand1, rand2, image, reference]),
          layers=(layer,),
          normalization=config.model.vgg19.normalization)[layer]
      f_rec, f_ref, f_rand1, f_rand2, f_image, f_reference = jnp.split(
          feats, 6)
      f_image = jax.lax.stop_gradient(f_image)
      f_reference = jax.lax.stop_gradient(f_reference)
      terms["structure"] = losses.structure_loss_from_features(
          rand1, image, f_rand1, f_image)
      terms["style"] = (losses.style_loss_from_features(f_rec, f_image)
                        + losses.style_loss_from_features(f_ref, f_reference))
      if config.mode_seeking_distance == "gram":
        terms["mode_seeking"] = losses.mode_seeking_loss_from_features(
            f_rand1, f_rand2, z_r1, z_r2, distance="gram")
    if config.mode_seeking_distance == "pixel":
      terms["mode_seeking"] = losses.mode_seeking_loss_from_features(
          rand1, rand2, z_r1, z_r2, distance="pixel")
    mu_hat, _ = encoder.apply({"params": params["encoder"]},
                              jnp.concatenate([ref, rand1]))
    terms["latent"] = (losses.latent_loss(z_ref, mu_hat[:b])
                       + losses.latent_loss(z_r1, mu_hat[b:]))
    if weights.adversarial > 0:
      fake_logits = discriminator.apply(
          state.variables["discriminator"], jnp.concatenate([rec, rand1]),
          jnp.concatenate([z_rec, z_r1]), train=True,
          mutable=["batch_stats"])[0]
      terms["adversarial"] = losses.generator_adversarial_loss(
          fake_logits, mode=mode)
    if weights.self_similarity > 0:
      terms["self_similarity"] = losses.self_similarity_loss(
          jnp.concatenate([rec, ref, rand1]), jnp.concatenate([image] * 3))
    if weights.histogram > 0:
      hists = histograms(jnp.concatenate([rec, ref]), frozen)
      targets = jax.lax.stop_gradient(
          histograms(jnp.concatenate([image, reference]), frozen))
      terms["histogram"] = losses.histogram_loss_from_histograms(hists, targets)
    total, weighted = losses.weighted_total(weights, terms)
    # The C->IHN task is not a loss of the paper, so it is weighted here.
    weighted["halftone_task"] = config.halftone_task_weight * (
        losses.recovery_l1_loss(color_ht, data["color_halftone"]))
    total = total + weighted["halftone_task"]
    fakes = dict(images=jax.lax.stop_gradient(jnp.concatenate([rec, rand1])),
                 z=jax.lax.stop_gradient(jnp.concatenate([z_rec, z_r1])),
                 real_z=jax.lax.stop_gradient(z_rec))
    return total, (weighted, g_batch_stats, fakes)

  def discriminator_loss(params, state, data, fakes):
    variables = dict(state.variables["discriminator"], params=params)
    images = jnp.concatenate([data["image"], fakes["images"]])
    z = jnp.concatenate([fakes["real_z"], fakes["z"]])
    logits, updates = discriminator.apply(variables, images, z, train=True,
                                          mutable=["batch_stats"])
    b = data["image"].shape[0]
    real = [x[:b] for x in logits]
    # Two fake sets (I_rec, I_rand) against the same reals, averaged.
    loss = 0.5 * sum(
        losses.discriminator_adversarial_loss(
            real, [x[b * (i + 1):b * (i + 2)] for x in logits], mode=mode)
        for i in range(2))
    return loss, updates["batch_stats"]

  def train_step(state, batch, frozen, rng):
    data_key, g_key = jax.random.split(rng)
    data = prepare(batch, frozen, data_key)
    params = {name: state.variables[name]["params"]
              for name in ("encoder", "generator")}
    (g_total, (weighted, g_stats, fakes)), g_grads = jax.value_and_grad(
        generator_losses, has_aux=True)(params, state, data, frozen, g_key)
    grads = dict(g_grads)
    batch_stats = {"generator": g_stats}
    metrics_out = dict(weighted, loss=g_total)
    losses_to_check = [g_total]
    if weights.adversarial > 0:
      (d_loss, d_stats), d_grads = jax.value_and_grad(
          discriminator_loss, has_aux=True)(
              state.variables["discriminator"]["params"], state, data, fakes)
      grads["discriminator"] = d_grads
      batch_stats["discriminator"] = d_stats
      metrics_out["discriminator_loss"] = d_loss
      losses_to_check.append(d_loss)
    state, guard = common.guarded_update(state, optimizers, grads, batch_stats,
                                         losses_to_check)
    return state, dict(metrics_out, **guard)

  def colorize(state, gray, edge, z):
    return networks.apply_eval(generator, state.variables["generator"], gray,
                               edge, z, train=False)

  def eval_step(state, batch, frozen, rng):
    data = prepare(batch, frozen, rng)
    mu, _ = networks.apply_eval(encoder, state.variables["encoder"],
                                data["image"])
    rec = jnp.clip(colorize(state, data["ihn_gray"], data["edge_gray"], mu),
                   0.0, 1.0)
    baseline = jnp.repeat(baselines.descreen_blur(
        data["halftone"], period=defaults.screen_period(config),
        tone_curve=config.halftone.tone_curve), 3, axis=-1)
    return {"recovery_psnr": metrics.psnr(rec, data["image"]),
            "recovery_ssim": metrics.ssim(rec, data["image"]),
            "blur_baseline_psnr": metrics.psnr(baseline, data["image"]),
            "blur_baseline_ssim": metrics.ssim(baseline, data["image"])}

  def sample_step(state, batch, frozen, rng):
    data_key, z_key = jax.random.split(rng)
    data = prepare(batch, frozen, data_key)
    b = data["image"].shape[0]
    mu_ref, _ = networks.apply_eval(encoder, state.variables["encoder"],
                                    data["reference"])
    z_rand = jax.random.normal(z_key, (2, b, nz))
    by_reference = colorize(state, data["ihn_gray"], data["edge_gray"], mu_ref)
    random = [colorize(state, data["ihn_gray"], data["edge_gray"], z)
              for z in z_rand]
    return [data["halftone"], data["ihn_gray"], data["reference"],
            by_reference, random[0], random[1], data["image"]]

  return common.Stage(name="color", init_variables=init_variables,
                      optimizers=optimizers, train_step=train_step,
                      frozen=frozen, eval_step=eval_step,
                      sample_step=sample_step,
                      sample_titles=("halftone", "ihn gray", "reference",
                                     "by reference", "random 1", "random 2",
                                     "ground truth"))


def train_and_evaluate(config: ml_collections.ConfigDict,
                       workdir: str) -> dict[str, float]:
  """Trains E, G and D in `workdir` (resuming if it holds a checkpoint).

  Returns:
    Final held-out metrics: recovery-scheme and blur-baseline PSNR/SSIM.
  """
  validate(config)
  return common.run_stage(config, workdir, make_stage(config),
                          init_from=dict(config.init_from))
