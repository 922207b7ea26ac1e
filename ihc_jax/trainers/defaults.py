"""Config sections shared by every stage's default config.

Each trainer's `default_config()` starts from `base_config(stage)` and adds its
`model`, `optim`, `loss`, `frozen` and `init_from` sections. The default
config of a stage is the schema `validate_config` checks a run's config
against: every key of a run must exist there with the same type.
"""

from __future__ import annotations

import math

import ml_collections

LOSS_WEIGHT_DOC = "loss name -> weight; 0 disables a term"
VGG_PLACEHOLDER = ("REQUIRED: path to vgg19.npz (convert once with "
                   "ihc-convert-weights vgg19), or set "
                   "perceptual.random_features=True")
ADVERSARIAL_MODES = ("lsgan", "vanilla", "hinge")
SCHEDULES = ("constant", "polynomial", "linear_decay")


def optim_config(*, learning_rate: float = 2e-4, end_learning_rate: float = 2e-6,
                 schedule: str = "constant", power: float = 0.9,
                 decay_start: float = 0.5, b1: float = 0.5, b2: float = 0.999,
                 grad_clip_norm: float = 0.0) -> ml_collections.ConfigDict:
  """The optimizer section of one network (Adam + schedule).

  Args:
    learning_rate: initial learning rate.
    end_learning_rate: final learning rate of the decaying schedules.
    schedule: 'constant', 'polynomial' (power `power`, PRL) or 'linear_decay'
      (constant for the first `decay_start` of the run, then linear; BicycleGAN).
    power: polynomial power.
    decay_start: fraction of the run before linear decay starts.
    b1: Adam beta1.
    b2: Adam beta2.
    grad_clip_norm: global-norm clipping; 0 disables it.

  Returns:
    ConfigDict with those keys.
  """
  return ml_collections.ConfigDict(dict(
      learning_rate=learning_rate, end_learning_rate=end_learning_rate,
      schedule=schedule, power=power, decay_start=decay_start, b1=b1, b2=b2,
      grad_clip_norm=grad_clip_norm))


def base_config(stage: str) -> ml_collections.ConfigDict:
  """Sections every stage has, at paper scale (256x256).

  Args:
    stage: 'ihn', 'hist', 'color' or 'fusion'.

  Returns:
    ConfigDict with trainer, seed, num_train_steps, max_consecutive_nonfinite,
    sync_every_steps, data, halftone, perceptual, eval, checkpoint and log.
  """
  from ihc_jax import halftone  # pylint: disable=g-import-not-at-top
  from ihc_jax import input_pipeline  # pylint: disable=g-import-not-at-top

  config = ml_collections.ConfigDict()
  config.trainer = stage
  config.seed = 0
  config.num_train_steps = 100_000
  # Skipped (non-finite) steps in a row before the run stops with an error.
  config.max_consecutive_nonfinite = 20
  # Steps between the host's reads of the non-finite flags and, with several
  # processes, the SIGTERM agreement (a collective); 1 = every step. Logs,
  # samples, evaluations and checkpoints read the flags first in any case.
  config.sync_every_steps = 10

  config.data = input_pipeline.default_data_config()
  config.halftone = halftone.default_halftone_config()

  config.perceptual = ml_collections.ConfigDict()
  config.perceptual.vgg19_weights = VGG_PLACEHOLDER
  # Opt-in to random VGG features (no ImageNet weights offline); warns.
  config.perceptual.random_features = False

  config.eval = ml_collections.ConfigDict()
  config.eval.every_steps = 5_000
  config.eval.num_batches = 16

  config.checkpoint = ml_collections.ConfigDict()
  config.checkpoint.every_steps = 5_000
  config.checkpoint.max_to_keep = 3

  config.log = ml_collections.ConfigDict()
  config.log.every_steps = 100
  config.log.sample_every_steps = 2_000
  config.log.sample_rows = 4
  return config


CHOICES = {
    "trainer": ("ihn", "hist", "color", "fusion", "chain"),
    "optim.*.schedule": SCHEDULES,
    "adversarial_mode": ADVERSARIAL_MODES,
    "model.vgg19.normalization": ("imagenet", "none", "caffe"),
    # = ihc_jax.models.DTYPE_NAMES (not imported here: this module stays light).
    "model.*.dtype": ("float32", "bfloat16", "float16"),
}


def uses_vgg(loss_config: ml_collections.ConfigDict,
             names: tuple[str, ...]) -> bool:
  """Whether any of the VGG-based loss terms `names` has a weight > 0."""
  return any(loss_config.get(name, 0.0) > 0 for name in names)


def vgg_path(perceptual_config: ml_collections.ConfigDict) -> str:
  """The VGG weight path, '' while it is still the placeholder."""
  path = perceptual_config.vgg19_weights
  return "" if path.startswith("REQUIRED") else path


def required_keys(config: ml_collections.ConfigDict,
                  vgg_losses: tuple[str, ...]) -> list[str]:
  """Keys that must hold a path: frozen stages, and VGG weights if used."""
  keys = [f"frozen.{name}" for name in config.get("frozen", {}).keys()]
  if uses_vgg(config.loss, vgg_losses) and not config.perceptual.random_features:
    keys.append("perceptual.vgg19_weights")
  return keys


def perceptual_section(config: ml_collections.ConfigDict
                       ) -> ml_collections.ConfigDict:
  """`config.perceptual` with the placeholder path replaced by ''."""
  section = ml_collections.ConfigDict(config.perceptual.to_dict())
  section.vgg19_weights = vgg_path(config.perceptual)
  return section


def shrink(config: ml_collections.ConfigDict, *, image_size: int,
           batch_size: int, num_train_steps: int,
           model: ml_collections.ConfigDict | None = None
           ) -> ml_collections.ConfigDict:
  """Shrinks a stage config in place for a CPU run (the `:runlocal` argument).

  Args:
    config: a stage config.
    image_size: crop size (a multiple of 2**num_downs of the U-Nets).
    batch_size: train and eval batch size.
    num_train_steps: length of the run; log, sample, eval and checkpoint
      intervals follow it.
    model: model sections to use (default: `tiny_model_config()` with
      U-Nets deep enough for `image_size`).

  Returns:
    `config`.
  """
  if model is None:
    model = tiny_model(image_size)
  for name in config.model.keys():
    section = ml_collections.ConfigDict(model[name].to_dict())
    if "nz" in config.model[name] and name == "discriminator":
      # A stage's D may see images only (fusion: nz = 0); keep that.
      section.nz = config.model[name].nz
    config.model[name] = section
  config.data.image_size = image_size
  config.data.batch_size = batch_size
  config.data.eval_batch_size = batch_size
  config.data.shuffle_buffer = 64
  config.num_train_steps = num_train_steps
  config.log.every_steps = max(1, num_train_steps // 10)
  config.log.sample_every_steps = max(1, num_train_steps // 2)
  config.eval.every_steps = num_train_steps
  config.eval.num_batches = 1
  config.checkpoint.every_steps = max(1, num_train_steps // 2)
  return config


def tiny_model(image_size: int) -> ml_collections.ConfigDict:
  """`tiny_model_config()` with U-Nets of at most log2(image_size) levels."""
  from ihc_jax import models  # pylint: disable=g-import-not-at-top
  model = models.tiny_model_config()
  levels = min(model.ihn.num_downs, int(math.log2(image_size)))
  model.ihn.num_downs = levels
  model.generator.num_downs = levels
  return model


def check_frozen_settings(config: ml_collections.ConfigDict,
                          network: str = "ihn") -> None:
  """The halftone and noise map of a stage must be those its frozen IHN had.

  The colour and fusion stages feed the frozen IHN halftones they synthesise
  themselves; an IHN trained on another screen, tone curve or noise map would
  be fed inputs it never saw.

  Args:
    config: a stage config with `frozen.<network>`, `halftone` and
      `noise_variant`.
    network: the frozen network trained with those settings.

  Raises:
    ValueError: naming the setting, this stage's value and the frozen
      stage's value.
  """
  from ihc_jax.trainers import checkpoints  # pylint: disable=g-import-not-at-top
  path = config.frozen[network]
  trained = checkpoints.load_stage_config(path)
  mismatches = []
  if trained.get("noise_variant") != config.noise_variant:
    mismatches.append(f"noise_variant: this stage {config.noise_variant!r}, "
                      f"frozen {trained.get('noise_variant')!r}")
  ours = config.halftone.to_dict()
  theirs = trained.get("halftone", ml_collections.ConfigDict()).to_dict()
  for key in sorted(ours):
    mine, other = ours[key], theirs.get(key)
    if isinstance(mine, (tuple, list)) and isinstance(other, (tuple, list)):
      mine, other = tuple(mine), tuple(other)
    if mine != other:
      mismatches.append(f"halftone.{key}: this stage {mine!r}, frozen {other!r}")
  if mismatches:
    raise ValueError(
        f"the frozen {network} in {path!r} was trained with other input "
        f"settings than this {config.trainer} stage uses: "
        f"{'; '.join(mismatches)}. Use the frozen stage's settings (see "
        f"{path}/config.json).")


def check_frozen_image_size(config: ml_collections.ConfigDict,
                            network: str) -> None:
  """A frozen network whose layers depend on the image size must match it.

  Raises:
    ValueError: naming the network, its training size and this stage's.
  """
  from ihc_jax.trainers import checkpoints  # pylint: disable=g-import-not-at-top
  trained = checkpoints.load_stage_config(config.frozen[network])
  if trained.data.image_size != config.data.image_size:
    raise ValueError(
        f"frozen {network} from {config.frozen[network]!r} was trained at "
        f"{trained.data.image_size}px but data.image_size is "
        f"{config.data.image_size}; its layers depend on the image size")


def frozen_vgg(config: ml_collections.ConfigDict,
               vgg_terms: tuple[str, ...]) -> dict:
  """{'vgg19': {'params': ...}} when a VGG-based term is on, else {}.

  Reads `config.perceptual.vgg19_weights` (random features only when
  `perceptual.random_features` opts in; `vgg.load_vgg19_params` warns).
  """
  if not uses_vgg(config.loss, vgg_terms):
    return {}
  from ihc_jax.models import vgg  # pylint: disable=g-import-not-at-top
  return {"vgg19": {"params": vgg.load_vgg19_params(
      perceptual_section(config), seed=config.seed)}}
