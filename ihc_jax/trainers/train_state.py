"""Train state, optimizers and the guarded (non-finite-safe) update.

`TrainState` holds per trainable network its Flax variables and optimizer
state, plus the step and the count of consecutive non-finite steps. Frozen
networks live in a separate pytree that no optimizer sees.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import flax
import jax
import jax.numpy as jnp
import ml_collections
import optax

Variables = dict[str, Any]
Metrics = dict[str, jax.Array]


class NonFiniteError(RuntimeError):
  """Raised when too many consecutive steps had a non-finite loss or gradient."""


@flax.struct.dataclass
class TrainState:
  """Everything a stage trains.

  Attributes:
    step: int32 scalar, number of updates tried so far (skipped ones count).
    variables: network name -> Flax variables {'params', 'batch_stats'?}.
    opt_states: network name -> optax state of that network's optimizer.
    nonfinite_streak: int32 scalar, consecutive skipped (non-finite) steps.
  """
  step: jax.Array
  variables: dict[str, Variables]
  opt_states: dict[str, Any]
  nonfinite_streak: jax.Array


def make_learning_rate(optim_config: ml_collections.ConfigDict,
                       num_train_steps: int) -> optax.Schedule:
  """Learning-rate schedule of one network.

  Args:
    optim_config: `learning_rate`, `end_learning_rate`, `schedule` ('constant',
      'polynomial' (power `power`) or 'linear_decay' (constant for the first
      `decay_start` fraction of the run, then linear to `end_learning_rate`,
      BicycleGAN's schedule)).
    num_train_steps: length of the run.

  Returns:
    An optax schedule.
  """
  lr = optim_config.learning_rate
  end = optim_config.end_learning_rate
  steps = max(1, num_train_steps)
  if optim_config.schedule == "constant":
    return optax.constant_schedule(lr)
  if optim_config.schedule == "polynomial":
    return optax.polynomial_schedule(lr, end, optim_config.power, steps)
  if optim_config.schedule == "linear_decay":
    start = int(steps * optim_config.decay_start)
    return optax.join_schedules(
        [optax.constant_schedule(lr),
         optax.linear_schedule(lr, end, max(1, steps - start))], [start])
  raise ValueError(f"optim schedule {optim_config.schedule!r} is not one of "
                   "'constant', 'polynomial', 'linear_decay'")


def make_optimizer(optim_config: ml_collections.ConfigDict,
                   num_train_steps: int) -> optax.GradientTransformation:
  """Adam with the configured schedule (and optional gradient clipping)."""
  tx = optax.adam(make_learning_rate(optim_config, num_train_steps),
                  b1=optim_config.b1, b2=optim_config.b2)
  if optim_config.grad_clip_norm > 0:
    tx = optax.chain(optax.clip_by_global_norm(optim_config.grad_clip_norm), tx)
  return tx


def init_state(variables: Mapping[str, Variables],
               optimizers: Mapping[str, optax.GradientTransformation]
               ) -> TrainState:
  """A step-0 state for the trainable networks `variables`."""
  variables = {name: dict(v) for name, v in variables.items()}
  return TrainState(
      step=jnp.zeros((), jnp.int32),
      variables=variables,
      opt_states={name: optimizers[name].init(variables[name]["params"])
                  for name in variables},
      nonfinite_streak=jnp.zeros((), jnp.int32))


def all_finite(tree: Any) -> jax.Array:
  """Scalar bool: every element of every floating array of `tree` is finite."""
  leaves = [jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)
            if jnp.issubdtype(jnp.asarray(x).dtype, jnp.floating)]
  if not leaves:
    return jnp.asarray(True)
  return jnp.all(jnp.stack(leaves))


# Traces `guarded_update` with the per-leaf select on CPU too (see
# `per_leaf_select`).
_SELECT_ON_CPU = False


@contextlib.contextmanager
def per_leaf_select() -> Iterator[None]:
  """Steps traced inside keep a skipped update by per-leaf selects on every
  platform (the CPU default is one conditional); for
  `python -m ihc_jax.bench compile`'s comparison. Read when a step is traced:
  a function jit has already traced keeps the form it was traced with."""
  global _SELECT_ON_CPU
  previous, _SELECT_ON_CPU = _SELECT_ON_CPU, True
  try:
    yield
  finally:
    _SELECT_ON_CPU = previous


def _keep_by_select(ok: jax.Array, new: Any, old: Any) -> Any:
  """`new` where `ok`, else `old`: one select per leaf (GPU, TPU)."""
  return jax.tree.map(lambda n, o: jnp.where(ok, n, o), new, old)


def _keep_by_cond(ok: jax.Array, new: Any, old: Any) -> Any:
  """`new` if `ok` else `old` as one conditional (CPU).

  The same values as `_keep_by_select`. XLA:CPU compiles every per-leaf
  select as a kernel of its own: for the tiny test IHN's 90 parameters and
  their Adam moments the selects took 13 of the train step's 29 s of
  compilation; at official widths (128 px, batch 1) the conditional saves
  12 s on the IHN step and 36 s on the colour step, which then run 1-2.5 %
  slower per step (the demo's colour step 4 % faster). CPU runs are short
  ones (tests, the demo, a laptop), where compiling dominates.
  benchmarks/RESULTS.md, "Compile time on CPU".
  """
  return jax.lax.cond(ok, lambda: new, lambda: old)


def guarded_update(state: TrainState,
                   optimizers: Mapping[str, optax.GradientTransformation],
                   grads: Mapping[str, Any],
                   new_batch_stats: Mapping[str, Any],
                   losses: Sequence[jax.Array]) -> tuple[TrainState, Metrics]:
  """Applies one optimizer step per network, or none when anything is not finite.

  Runs inside a jitted train step. A step whose losses, gradients or updated
  parameters contain NaN/Inf keeps the previous state (networks, batch
  statistics, optimizer states) and only increments `step` and
  `nonfinite_streak`.

  Args:
    state: the state before the step.
    optimizers: network name -> optax transformation (static).
    grads: network name -> gradient pytree of its params.
    new_batch_stats: network name -> updated batch statistics (networks
      without BatchNorm may be absent).
    losses: scalars that must be finite (e.g. the E+G loss and the D loss).

  Returns:
    (new state, {'nonfinite': 1.0 if the update was skipped else 0.0}).
  """
  with jax.named_scope("update"):
    return _guarded_update(state, optimizers, grads, new_batch_stats, losses)


def _guarded_update(state: TrainState,
                    optimizers: Mapping[str, optax.GradientTransformation],
                    grads: Mapping[str, Any], new_batch_stats: Mapping[str, Any],
                    losses: Sequence[jax.Array]) -> tuple[TrainState, Metrics]:
  """`guarded_update` outside its named scope (so profiles group its ops)."""
  new_variables = dict(state.variables)
  new_opt_states = dict(state.opt_states)
  for name, grad in grads.items():
    params = state.variables[name]["params"]
    updates, new_opt_states[name] = optimizers[name].update(
        grad, state.opt_states[name], params)
    variables = dict(state.variables[name])
    variables["params"] = optax.apply_updates(params, updates)
    if name in new_batch_stats:
      variables["batch_stats"] = new_batch_stats[name]
    new_variables[name] = variables
  ok = jnp.logical_and(all_finite(list(losses)), all_finite(dict(grads)))
  ok = jnp.logical_and(ok, all_finite(new_variables))
  variables, opt_states = jax.lax.platform_dependent(
      ok, (new_variables, new_opt_states), (state.variables, state.opt_states),
      cpu=_keep_by_select if _SELECT_ON_CPU else _keep_by_cond,
      default=_keep_by_select)
  new_state = TrainState(
      step=state.step + 1,
      variables=variables,
      opt_states=opt_states,
      nonfinite_streak=jnp.where(ok, 0, state.nonfinite_streak + 1))
  return new_state, {"nonfinite": 1.0 - ok.astype(jnp.float32)}
