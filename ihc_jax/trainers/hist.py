"""Stage 2: pretrain the histogram estimator H on real colour photographs.

H maps one image channel to a softmax distribution over bins. It is trained
to regress the true (hard) histogram of every RGB channel of the training
photos with a binary cross-entropy (`loss.histogram`), then frozen for the
colour stage's histogram loss (paper §2.2; original-code.md §3.8). H's
Dense layer depends on the image size, so H must be trained at the colour
stage's `data.image_size`.
"""

from __future__ import annotations

import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from ihc_jax import losses
from ihc_jax import models
from ihc_jax.models import histogram
from ihc_jax.trainers import config_schema as config_schema_lib
from ihc_jax.trainers import loop as loop_lib
from ihc_jax.trainers import train_state as train_state_lib
from ihc_jax.trainers import defaults
from ihc_jax.trainers import linen_utils

TERMS = ("histogram",)


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
  """Checks `config` against `default_config()` (keys, types, choices, loss
  terms)."""
  config_schema_lib.validate_config(config, default_config(), choices=defaults.CHOICES,
                         required=defaults.required_keys(config, ()))
  losses.check_loss_weights(config.loss, TERMS, stage="hist")


def init_variables(key: jax.Array, *, net: nn.Module,
                   size: int) -> dict[str, Any]:
  """Fresh H variables for `size` x `size` single-channel inputs."""
  return {"histogram": linen_utils.init_variables(
      net, key, jnp.zeros((1, size, size, 1), jnp.float32))}


def predict(net: nn.Module, params: Any, images: jax.Array) -> jax.Array:
  """H on every channel: [B, H, W, C] -> [B, C, bins]."""
  return histogram.channel_histograms(net.apply, {"params": params}, images)


def train_step(state: train_state_lib.TrainState, batch: dict[str, jax.Array],
               frozen: dict[str, Any], rng: jax.Array, *, net: nn.Module,
               config: ml_collections.ConfigDict, optimizers: dict[str, Any]
               ) -> tuple[train_state_lib.TrainState, dict[str, jax.Array]]:
  """One H update towards the true per-channel histograms of the batch."""
  del frozen, rng
  images = batch["image"]
  target = losses.hard_histogram(images, bins=net.bins)

  def loss_fn(params):
    terms = {"histogram": losses.binary_cross_entropy(
        predict(net, params, images), target)}
    return losses.weighted_total(config.loss, terms)

  (total, weighted), grads = jax.value_and_grad(loss_fn, has_aux=True)(
      state.variables["histogram"]["params"])
  state, guard = train_state_lib.guarded_update(state, optimizers,
                                       {"histogram": grads}, {}, [total])
  return state, dict(weighted, loss=total, **guard)


def eval_step(state: train_state_lib.TrainState, batch: dict[str, jax.Array],
              frozen: dict[str, Any], rng: jax.Array, *, net: nn.Module
              ) -> dict[str, jax.Array]:
  """Per-example [B] histogram BCE and total-variation distance (in [0, 1])."""
  del frozen, rng
  images = batch["image"]
  target = losses.hard_histogram(images, bins=net.bins)
  pred = predict(net, state.variables["histogram"]["params"], images)
  return {"histogram_bce": losses.binary_cross_entropy(pred, target,
                                                      reduction="none"),
          "histogram_tv": 0.5 * jnp.mean(jnp.sum(jnp.abs(pred - target), -1),
                                         axis=1)}


def make_stage(config: ml_collections.ConfigDict) -> loop_lib.Stage:
  """Network, optimizer and jit-able steps of the H stage."""
  net = linen_utils.build("histogram", config.model)
  optimizers = {"histogram": train_state_lib.make_optimizer(config.optim.histogram,
                                                   config.num_train_steps)}
  return loop_lib.Stage(
      name="hist",
      init_variables=functools.partial(init_variables, net=net,
                                       size=config.data.image_size),
      optimizers=optimizers,
      train_step=functools.partial(train_step, net=net, config=config,
                                   optimizers=optimizers),
      frozen={},
      eval_step=functools.partial(eval_step, net=net))


def train_and_evaluate(config: ml_collections.ConfigDict,
                       workdir: str) -> dict[str, float]:
  """Trains H in `workdir` (resuming if it holds a checkpoint).

  Returns:
    Final held-out metrics (histogram BCE and total-variation distance).
  """
  validate(config)
  return loop_lib.run_stage(config, workdir, make_stage(config),
                          init_from=dict(config.init_from))
