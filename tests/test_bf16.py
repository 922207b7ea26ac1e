"""bfloat16 mixed precision (`config.model.<net>.dtype`), tiny nets on the CPU.

XLA:CPU runs bfloat16, so these tests check numerics and plumbing, not
speed: every network in bfloat16 stays close to float32 on the same float32
parameters and returns float32; one bfloat16 train step of each stage is
finite and trains; bad dtype strings fail with a message; configs saved
before the option existed still build in float32; the benchmark's FLOP/s and
MFU helpers. Weights are random on purpose (numpy, nothing compiled).
"""

import functools
import importlib

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from ihc_jax import inference
from ihc_jax import models
from ihc_jax.inference import files as pipeline_files
from ihc_jax import weights
from ihc_jax.bench import flops
from ihc_jax.bench import train as bench_train
from ihc_jax.trainers import checkpoints as checkpoints_lib
from ihc_jax.trainers import mesh as mesh_lib
from ihc_jax.trainers import train_state as train_state_lib
from ihc_jax.trainers import defaults
from conftest import load_test_config

SIZE = 32
STAGES = ("ihn", "hist", "color", "fusion")
TRAINED = {"ihn": ["ihn"], "hist": ["histogram"],
           "color": ["discriminator", "encoder", "generator"],
           "fusion": ["fusion"]}

# max |bf16 - fp32| over max |fp32| of each output, on the inputs of
# `_inputs` (tiny nets at 32 px, PyTorch-default random weights). Measured
# (worst output of each network): ihn 0.0075, generator 0.0098, encoder
# 0.019 (logvar), discriminator 0.013, histogram 0.0004, fusion 0.0055,
# vgg19 0.0027. bfloat16 keeps 8 significant bits (rounding 2**-9 = 0.002 per
# op). The tolerance leaves 2.7x margin over the worst.
RELATIVE_TOLERANCE = 0.05


def _inputs(name):
  """(args, kwargs) of network `name` at SIZE px, float32, fixed seed."""
  rng = np.random.default_rng(0)
  image = jnp.asarray(rng.random((2, SIZE, SIZE, 3), np.float32))
  gray = image[..., :1]
  edge = (image[..., 1:2] > 0.5).astype(jnp.float32)
  z = jnp.asarray(rng.standard_normal((2, 8), np.float32))
  noise = jnp.asarray(rng.standard_normal((2, SIZE, SIZE, 8), np.float32))
  return {
      "ihn": ((gray, noise), {"train": False}),
      "generator": ((gray, edge, z), {"train": False}),
      "encoder": ((image,), {}),
      "discriminator": ((image, z), {"train": False}),
      "histogram": ((gray,), {}),
      "fusion": ((image, image[..., ::-1]), {}),
      "vgg19": ((image,), {"layers": ("relu2_1", "relu3_1", "relu4_1")}),
  }[name]


def _section(name, dtype=None):
  section = defaults.tiny_model(SIZE)[name].to_dict()
  if dtype is not None:
    section["dtype"] = dtype
  return section


@pytest.mark.parametrize("name", models.NETWORKS)
def test_bf16_network_is_close_to_float32(name):
  args, kwargs = _inputs(name)
  f32 = models.build(name, _section(name))
  bf16 = models.build(name, _section(name, "bfloat16"))
  assert (f32.dtype, bf16.dtype) == (jnp.float32, jnp.bfloat16)
  # Parameters (and batch statistics) stay float32 in bfloat16 networks.
  shapes = jax.eval_shape(functools.partial(bf16.init, **kwargs),
                          jax.random.PRNGKey(0), *args)
  assert {leaf.dtype for leaf in jax.tree.leaves(shapes)} == {np.dtype(np.float32)}
  variables = weights.random_variables(f32, *args, **kwargs)
  expected = jax.jit(functools.partial(f32.apply, **kwargs))(variables, *args)
  got = jax.jit(functools.partial(bf16.apply, **kwargs))(variables, *args)
  assert jax.tree.structure(got) == jax.tree.structure(expected)
  for e, g in zip(jax.tree.leaves(expected), jax.tree.leaves(got)):
    assert g.dtype == jnp.float32 and g.shape == e.shape
    e, g = np.asarray(e), np.asarray(g)
    assert np.all(np.isfinite(g))
    relative = np.max(np.abs(g - e)) / np.max(np.abs(e))
    assert 0 < relative < RELATIVE_TOLERANCE, (name, relative)


def test_bad_dtype_names_network_value_and_choices():
  with pytest.raises(ValueError, match=r"model\.generator\.dtype='fp8'.*"
                     r"'float32', 'bfloat16', 'float16'"):
    models.build("generator", _section("generator", "fp8"))
  with pytest.raises(ValueError, match=r"model\.vgg19\.dtype=16"):
    models.build("vgg19", _section("vgg19", 16))


def test_config_without_dtype_builds_float32():
  # Workdirs and pipeline.json files written before the option existed.
  for name in models.NETWORKS:
    section = _section(name)
    del section["dtype"]
    assert models.build(name, section).dtype == jnp.float32
  assert set(defaults.CHOICES["model.*.dtype"]) == set(models.DTYPE_NAMES)


def test_validation_accepts_dtype_and_rejects_unknown_values():
  hist = importlib.import_module("ihc_jax.trainers.hist")
  config = load_test_config("hist")
  config.model.histogram.dtype = "bfloat16"
  hist.validate(config)
  config.model.histogram.dtype = "fp8"
  with pytest.raises(ValueError, match=r"model\.histogram\.dtype.*'fp8'"):
    hist.validate(config)


def test_pipeline_dtype_override():
  model_config = ml_collections.ConfigDict(
      {n: _section(n) for n in inference.NETWORKS})
  overridden = inference.with_dtype(model_config, "bfloat16")
  assert all(overridden[n].dtype == "bfloat16" for n in inference.NETWORKS)
  assert model_config.ihn.dtype == "float32"  # the input is not changed
  with pytest.raises(ValueError, match="'fp8'"):
    inference.with_dtype(model_config, "fp8")
  variables = pipeline_files.init_random_variables(model_config,
                                                   image_size=SIZE)
  pipeline = inference.Pipeline(model_config, variables, image_size=SIZE,
                                dtype="bfloat16")
  assert {n.dtype for n in pipeline.networks.values()} == {jnp.bfloat16}
  pipeline = inference.Pipeline(model_config, variables, image_size=SIZE)
  assert {n.dtype for n in pipeline.networks.values()} == {jnp.float32}


def _bf16_stage_config(stage, root):
  """The test config of `stage` with every network (frozen too) in bfloat16.

  The frozen IHN's saved section has no dtype key, like a workdir written
  before the option existed: it must load, in float32. Compile time: VGG
  (its dtype passed by the trainer) runs in the fusion step only, not in
  the colour step.
  """
  config = load_test_config(stage)
  bench_train.set_dtype(config.model, "bfloat16")
  if stage == "color":
    config.loss.update(structure=0.0, style=0.0)
  if stage == "fusion":
    config.loss.perceptual = 1.0
  if "ihn" in config.get("frozen", {}):
    frozen_model = defaults.tiny_model(SIZE)
    bench_train.set_dtype(frozen_model, "bfloat16")
    del frozen_model.ihn["dtype"]
    bench_train.write_random_frozen(config, root, frozen_model)
  return config


@pytest.mark.parametrize("stage", STAGES)
def test_bf16_train_step_is_finite_and_trains(stage, tmp_path):
  module = importlib.import_module(f"ihc_jax.trainers.{stage}")
  config = _bf16_stage_config(stage, str(tmp_path))
  module.validate(config)
  trainer = module.make_stage(config)
  mesh = mesh_lib.make_mesh()
  state = mesh_lib.replicate(train_state_lib.init_state(
      trainer.init_variables(jax.random.PRNGKey(0)), trainer.optimizers), mesh)
  before = jax.device_get(state.variables)
  rng = np.random.default_rng(0)
  batch = {k: rng.random((2, SIZE, SIZE, 3), np.float32)
           for k in ("image", "reference")}
  from ihc_jax import input_pipeline  # pylint: disable=g-import-not-at-top
  batch = input_pipeline.shard_batch(batch, mesh)
  step = jax.jit(trainer.train_step, donate_argnums=(0,))
  state, metrics = step(state, batch, mesh_lib.replicate(trainer.frozen, mesh),
                        jax.random.PRNGKey(1))
  metrics = jax.device_get(metrics)
  assert all(np.isfinite(v) for v in metrics.values()), metrics
  assert metrics["nonfinite"] == 0.0
  after = jax.device_get(state.variables)
  assert sorted(after) == TRAINED[stage]
  for name in TRAINED[stage]:
    assert {leaf.dtype for leaf in jax.tree.leaves(after[name])} == {
        np.dtype(np.float32)}
    assert any(not np.array_equal(a, b) for a, b in zip(
        jax.tree.leaves(before[name]["params"]),
        jax.tree.leaves(after[name]["params"]))), name
  if "ihn" in config.get("frozen", {}):
    ihn = checkpoints_lib.load_frozen_networks(config.frozen, ["ihn"])["ihn"][0]
    assert "dtype" not in ihn


def test_flops_per_step_reads_every_form():
  assert flops.flops_per_step({"flops": 2e9, "bytes accessed": 1.0}) == 2e9
  assert flops.flops_per_step([{"flops": 3.0}, {"flops": 3.0}]) == 3.0
  assert flops.flops_per_step([]) is None
  assert flops.flops_per_step(None) is None
  assert flops.flops_per_step({"bytes accessed": 1.0}) is None
  assert flops.flops_per_step({"flops": -1.0}) is None


def test_mfu_on_known_and_unknown_devices():
  # 98.9 TFLOP/s achieved on an H100 SXM (989 TFLOP/s bf16 dense) is 10 %.
  assert flops.mfu(98.9e12, "NVIDIA H100 80GB HBM3", "bfloat16") == (
      pytest.approx(0.1))
  assert flops.mfu(6.7e12, "NVIDIA H200", "float32") == pytest.approx(0.1)
  assert flops.mfu(31.2e12, "NVIDIA A100-SXM4-40GB", "bfloat16") == (
      pytest.approx(0.1))
  assert flops.mfu(75.6e12, "NVIDIA H100 PCIe", "float16") == (
      pytest.approx(0.1))
  assert flops.mfu(19.7e12, "TPU v5 lite", "bfloat16") == pytest.approx(0.1)
  assert flops.mfu(45.9e12, "TPU v5p", "bfloat16") == pytest.approx(0.1)
  assert flops.mfu(27.5e12, "TPU v4", "bfloat16") == pytest.approx(0.1)
  assert flops.mfu(1e12, "TPU v4", "float32") is None
  assert flops.mfu(1e9, "cpu", "bfloat16") is None
  assert flops.mfu(float("nan"), "NVIDIA H200", "bfloat16") is None


class _Analysed:
  """Stands in for a lowered or compiled step: only its cost analysis."""

  def __init__(self, analysis):
    self.analysis = analysis

  def cost_analysis(self):
    if isinstance(self.analysis, Exception):
      raise self.analysis
    return self.analysis


def test_step_flops_prefers_the_lowered_count():
  assert flops.step_flops(_Analysed({"flops": 5.0}), _Analysed({"flops": 1.0})) == 5.0
  assert flops.step_flops(_Analysed(None), _Analysed({"flops": 1.0})) == 1.0
  assert flops.step_flops(_Analysed(NotImplementedError()),
                          _Analysed([{"flops": 2.0}])) == 2.0
  assert flops.step_flops(_Analysed(None), _Analysed(None)) is None


def test_step_flops_counts_a_convolution():
  # 2 * outputs * taps * in-channels (VALID: XLA leaves out the taps that
  # fall on padding): the lowered HLO's count, whatever the backend later
  # does with the convolution.
  x = jnp.ones((2, 16, 16, 8))
  w = jnp.ones((3, 3, 8, 4))
  conv = jax.jit(lambda x, w: jax.lax.conv_general_dilated(
      x, w, (1, 1), "VALID", dimension_numbers=("NHWC", "HWIO", "NHWC")))
  lowered = conv.lower(x, w)
  expected = 2 * (2 * 14 * 14 * 4) * (3 * 3 * 8)
  assert flops.step_flops(lowered, lowered.compile()) == pytest.approx(expected, rel=0.01)


def test_bench_train_runs_in_bf16(capsys):
  bench_train.main(["--stage", "hist", "--steps", "1", "--batch", "2",
                    "--dtype", "bfloat16"])
  out = capsys.readouterr().out
  assert "compute dtype bfloat16" in out
  assert "peak FLOP/s unknown for this device, no MFU" in out
  assert "hist " in out and "GFLOP/s achieved" in out
