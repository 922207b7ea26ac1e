"""Stage 2: pretrain the histogram estimator H on real colour photographs.

H maps one image channel to a softmax distribution over bins. It is trained
to regress the true (hard) histogram of every RGB channel of the training
photos with a binary cross-entropy (`loss.histogram`), then frozen for the
colour stage's histogram loss (paper §2.2; original-code.md §3.8). H's
Dense layer depends on the image size, so H must be trained at the colour
stage's `data.image_size`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections

from ihc_jax import losses
from ihc_jax import models
from ihc_jax.models import histogram
from ihc_jax.trainers import common
from ihc_jax.trainers import defaults
from ihc_jax.trainers import networks


def default_config() -> ml_collections.ConfigDict:
  """Paper-scale H config (256x256, official layer widths)."""
  config = defaults.base_config("hist")
  config.num_train_steps = 20_000
  config.model = ml_collections.ConfigDict(
      {"histogram": models.default_model_config().histogram})
  # Choice (H's training is not described): Adam 1e-4, beta1 0.9, constant.
  config.optim = ml_collections.ConfigDict({"histogram": defaults.optim_config(
      learning_rate=1e-4, schedule="constant", b1=0.9)})
  config.loss = ml_collections.ConfigDict(dict(histogram=1.0))
  config.frozen = ml_collections.ConfigDict()
  config.init_from = ml_collections.ConfigDict({"histogram": ""})
  return config


def validate(config: ml_collections.ConfigDict) -> None:
  """Checks `config` against `default_config()` (keys, types, choices)."""
  common.validate_config(config, default_config(), choices=defaults.CHOICES,
                         required=defaults.required_keys(config, ()))


def make_stage(config: ml_collections.ConfigDict) -> common.Stage:
  """Network, optimizer and jit-able steps of the H stage."""
  net = networks.build("histogram", config.model)
  bins = config.model.histogram.bins
  size = config.data.image_size

  def init_variables(key):
    return {"histogram": networks.init_variables(
        net, key, jnp.zeros((1, size, size, 1), jnp.float32))}

  optimizers = {"histogram": common.make_optimizer(config.optim.histogram,
                                                   config.num_train_steps)}

  def predict(params, images):
    return histogram.channel_histograms(net.apply, {"params": params}, images)

  def train_step(state, batch, frozen, rng):
    del frozen, rng
    images = batch["image"]
    target = losses.hard_histogram(images, bins=bins)

    def loss_fn(params):
      terms = {"histogram": losses.binary_cross_entropy(
          predict(params, images), target)}
      total, weighted = losses.weighted_total(config.loss, terms)
      return total, weighted

    (total, weighted), grads = jax.value_and_grad(loss_fn, has_aux=True)(
        state.variables["histogram"]["params"])
    state, guard = common.guarded_update(state, optimizers,
                                         {"histogram": grads}, {}, [total])
    return state, dict(weighted, loss=total, **guard)

  def eval_step(state, batch, frozen, rng):
    del frozen, rng
    images = batch["image"]
    target = losses.hard_histogram(images, bins=bins)
    pred = predict(state.variables["histogram"]["params"], images)
    return {"histogram_bce": losses.binary_cross_entropy(pred, target),
            # Total-variation distance between distributions, in [0, 1].
            "histogram_tv": 0.5 * jnp.mean(jnp.sum(jnp.abs(pred - target), -1))}

  return common.Stage(name="hist", init_variables=init_variables,
                      optimizers=optimizers, train_step=train_step,
                      frozen={}, eval_step=eval_step)


def train_and_evaluate(config: ml_collections.ConfigDict,
                       workdir: str) -> dict[str, float]:
  """Trains H in `workdir` (resuming if it holds a checkpoint).

  Returns:
    Final held-out metrics (histogram BCE and total-variation distance).
  """
  validate(config)
  return common.run_stage(config, workdir, make_stage(config),
                          init_from=dict(config.init_from))
