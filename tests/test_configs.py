"""Tests of configs/*.py and of config validation (no training compute)."""

import importlib.util
import os

import ml_collections
import pytest

from ihc_jax.trainers import chain
from ihc_jax.trainers import color
from ihc_jax.trainers import checkpoints as checkpoints_lib
from ihc_jax.trainers import fusion
from ihc_jax.trainers import hist
from ihc_jax.trainers import ihn

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TRAINERS = {"ihn": ihn, "hist": hist, "color": color, "fusion": fusion}


def load_config_module(name):
  path = os.path.join(REPO, "configs", f"{name}.py")
  spec = importlib.util.spec_from_file_location(f"configs_{name}", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def with_frozen(config, path="/runs/somewhere"):
  for name in config.frozen.keys():
    config.frozen[name] = path
  return config


@pytest.mark.parametrize("stage", ["ihn", "hist", "color", "fusion"])
def test_stage_configs_are_paper_scale_and_validate(stage):
  module = load_config_module(stage)
  config = module.get_config()
  assert config.trainer == stage
  assert config.data.image_size == 256
  assert "python -m ihc_jax.main --config=configs/" in module.__doc__
  config.perceptual.vgg19_weights = "/weights/vgg19.npz"
  TRAINERS[stage].validate(with_frozen(config))


@pytest.mark.parametrize("stage", ["ihn", "hist", "color", "fusion"])
def test_runlocal_shrinks(stage):
  config = load_config_module(stage).get_config("runlocal")
  assert config.data.image_size == 64
  assert config.data.batch_size <= 8
  assert config.num_train_steps <= 300
  # Tiny widths: the U-Nets have 4 base filters instead of 64.
  for name in ("ihn", "generator"):
    if name in config.model:
      assert config.model[name].ngf == 4
  config.perceptual.random_features = True
  TRAINERS[stage].validate(with_frozen(config))


def test_bad_config_argument_is_rejected():
  with pytest.raises(ValueError, match="unknown config argument 'fast'"):
    load_config_module("ihn").get_config("fast")


def test_paper_defaults_of_the_ihn_stage():
  config = ihn.default_config()
  assert (config.pixel.content_weight, config.pixel.output_weight) == (5.0, 1.0)
  assert config.optim.ihn.schedule == "polynomial"
  assert (config.optim.ihn.learning_rate, config.optim.ihn.end_learning_rate,
          config.optim.ihn.power) == (2e-4, 2e-6, 0.9)
  assert config.perceptual.layer == "pool4"


def test_bicycle_gan_defaults_of_the_color_stage():
  config = color.default_config()
  assert (config.loss.recovery_l1, config.loss.latent, config.loss.kl) == (
      10.0, 0.5, 0.01)
  assert config.adversarial_mode == "lsgan"
  assert config.optim.generator.b1 == 0.5
  assert config.optim.discriminator.learning_rate == 2e-4


def test_unknown_key_names_key_and_valid_keys():
  config = hist.default_config()
  config.optim.histogram.learnig_rate = 0.1
  with pytest.raises(ValueError, match=r"'optim\.histogram\.learnig_rate'.*"
                     r"learning_rate"):
    hist.validate(config)


def test_unknown_loss_name_is_rejected():
  config = ihn.default_config()
  config.perceptual.random_features = True
  config.loss.pixle = 1.0
  with pytest.raises(ValueError, match=r"'loss\.pixle'.*'perceptual', 'pixel'"):
    ihn.validate(config)


def test_wrong_type_names_key_and_type():
  # A config file may build its sections from plain dicts (no type safety).
  config = ml_collections.ConfigDict(
      dict(hist.default_config().to_dict(), num_train_steps="many"))
  with pytest.raises(TypeError, match=r"'num_train_steps' must be int, got str"):
    hist.validate(config)
  config = hist.default_config()
  config.optim.histogram.learning_rate = 1  # an int is fine for a float
  hist.validate(config)


@pytest.mark.parametrize("key", ["sync_every_steps", "log.every_steps",
                                 "checkpoint.every_steps"])
def test_step_intervals_below_one_are_rejected(key):
  config = hist.default_config()
  section, _, name = key.rpartition(".")
  (config[section] if section else config)[name] = 0
  with pytest.raises(ValueError, match=rf"'{key}' is 0; an interval in steps"):
    hist.validate(config)


def test_bad_choice_names_valid_choices():
  config = color.default_config()
  with_frozen(config)
  config.perceptual.random_features = True
  config.adversarial_mode = "wgan"
  with pytest.raises(ValueError, match=r"'adversarial_mode'.*'lsgan', "
                     r"'vanilla', 'hinge'"):
    color.validate(config)


def test_required_paths_fail_before_compute():
  config = color.default_config()
  config.perceptual.random_features = True
  with pytest.raises(ValueError, match=r"must be set: 'frozen\.histogram' "
                     r"\('REQUIRED: workdir of the trained hist stage'\), "
                     r"'frozen\.ihn'"):
    color.validate(config)
  config = ihn.default_config()  # VGG loss on, no weights, no random opt-in
  with pytest.raises(ValueError, match=r"must be set: 'perceptual\.vgg19_weights'"):
    ihn.validate(config)
  config.loss.perceptual = 0.0  # no VGG loss: no weights needed
  ihn.validate(config)


def test_validation_runs_before_any_compute(tmp_path):
  config = color.default_config()
  config.perceptual.random_features = True
  with pytest.raises(ValueError, match="frozen.ihn"):
    color.train_and_evaluate(config, str(tmp_path / "run"))
  assert not os.path.exists(tmp_path / "run")


def test_test_and_demo_configs_chain_all_stages(tmp_path):
  test_config = load_config_module("test").get_config("chain")
  demo = load_config_module("demo").get_config()
  for config in (test_config, demo):
    assert config.trainer == "chain"
    assert tuple(config.stage_order) == ("ihn", "hist", "color", "fusion")
    plan = chain.stage_configs(config, str(tmp_path))
    for name, stage_config, stage_dir in plan:
      assert stage_dir == str(tmp_path / name)
      assert stage_config.perceptual.random_features
      TRAINERS[name].validate(stage_config)
    frozen = dict(plan[2][1].frozen)
    assert frozen == {"ihn": str(tmp_path / "ihn"),
                      "histogram": str(tmp_path / "hist")}
    assert dict(plan[3][1].frozen)["generator"] == str(tmp_path / "color")
  # H and E depend on the image size: hist and color must agree.
  assert (demo.stages.hist.data.image_size == demo.stages.color.data.image_size
          == test_config.stages.hist.data.image_size * 2)


def test_main_dispatches_every_trainer():
  from ihc_jax import main  # pylint: disable=g-import-not-at-top
  assert set(main.TRAINERS) == {"ihn", "hist", "color", "fusion", "chain"}
  for module in main.TRAINERS.values():
    assert callable(importlib.import_module(module).train_and_evaluate)


def test_load_stage_config_roundtrip(tmp_path):
  config = hist.default_config()
  checkpoints_lib.save_stage_config(config, str(tmp_path))
  loaded = checkpoints_lib.load_stage_config(str(tmp_path))
  assert isinstance(loaded, ml_collections.ConfigDict)
  assert loaded.model.histogram.bins == config.model.histogram.bins
  assert tuple(loaded.halftone.period_range) == (3.0, 3.0)


def test_cpu_quality_config(tmp_path):
  module = load_config_module("cpu_quality")
  config = module.get_config()
  assert tuple(config.stage_order) == ("ihn", "hist", "color", "fusion")
  for name, stage_config, _ in chain.stage_configs(config, str(tmp_path)):
    TRAINERS[name].validate(stage_config)
    assert stage_config.data.source == "photos"
    assert stage_config.seed == 0
    assert stage_config.num_train_steps == module.STEPS[name]
    # Evaluated during training: the learning curves' data.
    assert stage_config.eval.every_steps < stage_config.num_train_steps or (
        name == "hist")
  assert config.stages.color.model.generator.luma == "input"
  assert config.stages.color.model.generator.code_shift
  # The demo's widths, so the quality run measures the demo's recipe longer.
  demo = load_config_module("demo").get_config()
  assert (config.stages.color.model.generator.ngf
          == demo.stages.color.model.generator.ngf)
  assert module.get_config("2").stages.ihn.seed == 2
  with pytest.raises(ValueError, match="takes a seed"):
    module.get_config("two")
