"""On GPU and TPU the networks are plain XLA: exported for `cuda` and for
`tpu` on this CPU-only machine (`jax.export`), every network's forward pass
and every stage's train step contain no custom call, and the same compute
operations (convolutions, matmuls, reductions, reduce-windows,
select-and-scatters, loops; shapes and attributes included) with the CPU
fast paths on or off, and the same convolutions as the same network built
from `flax.linen.Conv` (a method interceptor swaps every `layers.Conv2d`
and `layers.UpsampleConv2d` for `nn.Conv` on the same parameters; its bias
is added in another shape, so the bias gradients' reductions differ),
forward and backward. Every CPU
fast form changes at least one of those operations, and exported for `cpu`
the check fails (`test_the_check_sees_the_cpu_forms`). Tiny networks,
random weights.

The element-wise rest is not compared: with the fast paths on,
`jax.lax.platform_dependent` leaves a one-branch `stablehlo.case` on a
constant around each reference op (XLA inlines it), and in a train step
the reference fills residual slots of the CPU branch with zeros (dead
code; `ihc_jax.kernels._dispatch`).
"""

import collections
import importlib
import re

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ihc_jax import kernels
from ihc_jax import models
from ihc_jax.models import layers
from ihc_jax.trainers import train_state as train_state_lib
from ihc_jax.trainers import defaults
from ihc_jax.bench import train as bench_train
from conftest import load_test_config

PLATFORMS = ("cuda", "tpu")
# 128 px: the U-Nets' outer up steps see 64 px maps, where the CPU path
# fuses them (`kernels.cpu.upsample_conv.FUSED_MIN_SIZE`).
SIZE = 128


def _plain_conv(next_fun, args, kwargs, context):
  """Runs `layers.Conv2d` / `layers.UpsampleConv2d` as `flax.linen.Conv`."""
  module = context.module
  if context.method_name != "__call__" or not isinstance(
      module, (layers.Conv2d, layers.UpsampleConv2d)):
    return next_fun(*args, **kwargs)
  x, = args
  params = {"kernel": module.get_variable("params", "kernel")}
  use_bias = getattr(module, "use_bias", True)
  if use_bias:
    params["bias"] = module.get_variable("params", "bias")
  k = params["kernel"].shape[0]
  if isinstance(module, layers.UpsampleConv2d):
    x = kernels.reference.reflect_pad(kernels.reference.upsample_bilinear_2x(x), 1)
    stride, padding = 1, 0
  elif module.padding_mode == "reflect":
    x = kernels.reference.reflect_pad(x, module.padding) if module.padding else x
    stride, padding = 1, 0
  else:
    stride, padding = module.stride, module.padding
  conv = nn.Conv(params["kernel"].shape[-1], (k, k), strides=stride,
                 padding=((padding, padding), (padding, padding)), use_bias=use_bias,
                 dtype=x.dtype)
  return conv.apply({"params": params}, x)


def _export(f, platform, *args):
  # A new function each time: jit's trace cache does not see the interceptor.
  return jax.export.export(jax.jit(lambda *a: f(*a)), platforms=(platform,))(
      *args).mlir_module()


_COMPUTE = re.compile(r"stablehlo\.(convolution|dot_general|reduce|reduce_window|"
                      r"select_and_scatter|while|custom_call)\b")


def _operations(module_text):
  """Counter of the module's compute operations (`_COMPUTE`), SSA names and
  locations dropped, operand and result types kept."""
  ops = collections.Counter()
  for line in module_text.splitlines():
    line = line.split(" loc(")[0].strip()
    if _COMPUTE.search(line):
      ops[re.sub(r"%[\w#:]+", "%", line)] += 1
  return ops


def _check(f, *args, platforms=PLATFORMS):
  for platform in platforms:
    ours = _export(f, platform, *args)
    assert "custom_call" not in ours, platform
    with kernels.cpu_fast_paths(False):
      off = _export(f, platform, *args)
    with nn.intercept_methods(_plain_conv):
      flax_conv = _export(f, platform, *args)
    operations = _operations(ours)
    assert sum(n for op, n in operations.items() if "convolution" in op) > 0
    assert operations == _operations(off), platform
    convolutions = lambda ops: {op: n for op, n in ops.items() if "convolution" in op}
    assert convolutions(operations) == convolutions(_operations(flax_conv)), platform


def _network_inputs(name):
  rng = np.random.default_rng(0)
  image = jnp.asarray(rng.random((1, SIZE, SIZE, 3), np.float32))
  z = jnp.zeros((1, 8), jnp.float32)
  return {
      "ihn": ((image[..., :1], jnp.zeros((1, SIZE, SIZE, 8))), {"train": False}),
      "generator": ((image[..., :1], image[..., 1:2], z), {"train": False}),
      "encoder": ((image,), {}),
      "discriminator": ((image, z), {"train": False}),
      "histogram": ((image[..., :1],), {}),
      "fusion": ((image, image), {}),
      "vgg19": ((image,), {"layers": ("relu5_4",)}),
  }[name]


def _forward(name):
  model = models.build(name, models.tiny_model_config())
  args, kwargs = _network_inputs(name)
  variables = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), *args, **kwargs))
  variables = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), variables)
  return (lambda v, *a: model.apply(v, *a, **kwargs)), variables, args


@pytest.mark.parametrize("name", models.NETWORKS)
def test_network_forward_for_gpu_and_tpu_is_plain_xla(name):
  f, variables, args = _forward(name)
  _check(f, variables, *args)


@pytest.mark.parametrize("name", ["generator", "vgg19"])
def test_the_check_sees_the_cpu_forms(name):
  """For CPU the fused up steps and block pools are in the module."""
  f, variables, args = _forward(name)
  with pytest.raises(AssertionError):
    _check(f, variables, *args, platforms=("cpu",))


@pytest.mark.parametrize("stage", ("ihn", "hist", "color", "fusion"))
def test_train_step_for_gpu_and_tpu_is_plain_xla(stage, tmp_path):
  module = importlib.import_module(f"ihc_jax.trainers.{stage}")
  config = load_test_config(stage)
  if "ihn" in config.get("frozen", {}):
    bench_train.write_random_frozen(config, str(tmp_path), defaults.tiny_model(config.data.image_size))
  trainer = module.make_stage(config)
  state = train_state_lib.init_state(trainer.init_variables(jax.random.PRNGKey(0)), trainer.optimizers)
  size = config.data.image_size
  rng = np.random.default_rng(0)
  batch = {k: jnp.asarray(rng.random((2, size, size, 3), np.float32))
           for k in ("image", "reference")}
  _check(trainer.train_step, state, batch, trainer.frozen, jax.random.PRNGKey(1))
