"""Tests for ihc_jax.inference with tiny networks on RANDOM weights.

Random weights on purpose: these tests check shapes, the graph, seeding,
compilation caching, loading and errors, not colour quality (see
tests/test_inference_e2e.py). To compile the graph only once, every
colorization here uses the same signature: tiles of 32 px, 4 per call, a
reference plus two random codes, with intermediates.
"""

import json
import os

import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from ihc_jax import halftone as halftone_lib
from ihc_jax import host_memory
from ihc_jax import inference
from ihc_jax.trainers import checkpoints as checkpoints_lib
from ihc_jax.trainers import train_state as train_state_lib
from ihc_jax.trainers import defaults

TILE = 32  # tiny U-Nets have 5 levels: inputs are multiples of 32


def make_pipeline(seed=0):
  config = defaults.tiny_model(TILE)
  variables = inference.init_random_variables(config, seed=seed,
                                               image_size=TILE)
  return inference.Pipeline(config, variables, image_size=TILE, overlap=8,
                            tile_batch=4, source="random tiny")


@pytest.fixture(scope="module")
def pipeline():
  return make_pipeline()


@pytest.fixture(scope="module")
def halftone():
  return np.random.default_rng(0).random((40, 56), dtype=np.float32)


@pytest.fixture(scope="module")
def reference():
  return np.random.default_rng(1).random((50, 70, 3), dtype=np.float32)


def run(pipeline, halftone, reference, **kwargs):
  kwargs.setdefault("num_samples", 2)
  kwargs.setdefault("return_intermediates", True)
  return pipeline.colorize(halftone, reference, **kwargs)


def test_colorize_shapes_codes_and_intermediates(pipeline, halftone,
                                                 reference):
  result = run(pipeline, halftone, reference, seed=3)
  assert result.codes == ["ref", "rand1", "rand2"]
  assert result.reference.shape == (1, 40, 56, 3)
  assert result.samples.shape == (1, 2, 40, 56, 3)
  assert result.latents.shape == (1, 3, 8)
  assert set(result.intermediates) == {
      "ihn_gray", "edges_gray", "edges_halftone",
      *(f"{c}_{p}" for c in ("ref", "rand1", "rand2")
        for p in ("forward", "color_halftone", "inverse"))}
  assert result.intermediates["ihn_gray"].shape == (1, 40, 56, 1)
  assert result.intermediates["rand2_inverse"].shape == (1, 40, 56, 3)
  for value in [result.reference, result.samples,
                *result.intermediates.values()]:
    assert np.all(np.isfinite(value))
  # The two random codes give different colorizations.
  assert np.abs(result.samples[0, 0] - result.samples[0, 1]).mean() > 1e-4
  # G ends in tanh, so its outputs stay within [-1, 1].
  assert np.abs(result.intermediates["rand1_forward"]).max() <= 1.0
  # Edge maps blend {0, 1} tiles, so they stay within [0, 1] and have edges.
  edges = result.intermediates["edges_halftone"]
  assert edges.min() >= 0 and edges.max() <= 1 and edges.max() > 0


def test_seeding_and_compile_cache(pipeline, halftone, reference):
  a = run(pipeline, halftone, reference, seed=5)
  b = run(pipeline, halftone, reference, seed=5)
  c = run(pipeline, halftone, reference, seed=6)
  np.testing.assert_array_equal(a.samples, b.samples)
  np.testing.assert_array_equal(a.reference, b.reference)
  assert np.abs(a.samples - c.samples).mean() > 1e-4
  # One input signature so far in this module: compiled once.
  assert pipeline.num_compiled == 1


def test_heap_released_after_each_compilation_only(monkeypatch, halftone,
                                                   reference):
  # Each network's compilation hands the C heap's free pages back to the OS
  # (`host_memory`); calls that reuse a compiled network do not.
  monkeypatch.setattr(inference, "_COMPILED", {})
  releases = []
  monkeypatch.setattr(host_memory, "release_free_heap",
                      lambda: releases.append(1) or True)
  pipeline = make_pipeline()
  run(pipeline, halftone, reference, seed=1)
  pieces = pipeline._jitted_fns()  # pylint: disable=protected-access
  compiled = sum(len(piece._compiled) for piece in pieces.values())  # pylint: disable=protected-access
  # Each piece for each input signature it met (the IHN twice: the tile
  # batch's halftones, then one code's colour channels), plus the encoder.
  assert compiled > len(pieces)
  assert len(releases) == compiled + 1
  run(pipeline, halftone, reference, seed=2)
  assert len(releases) == compiled + 1


def test_per_signature_compiles_once_per_shape_and_static_args():
  traced = []

  def fn(x, n):
    traced.append((x.shape, n))
    return x * n

  piece = inference._PerSignature(fn, static_argnums=(1,))  # pylint: disable=protected-access
  a, b = jnp.ones((2, 3)), jnp.ones((4, 3))
  np.testing.assert_array_equal(piece(a, 2), np.full((2, 3), 2.0))
  np.testing.assert_array_equal(piece(a + 1, 2), np.full((2, 3), 4.0))
  np.testing.assert_array_equal(piece(a, 3), np.full((2, 3), 3.0))
  np.testing.assert_array_equal(piece(b, 2), np.full((4, 3), 2.0))
  np.testing.assert_array_equal(piece(np.ones((4, 3), np.float32), 2),
                                np.full((4, 3), 2.0))
  assert traced == [((2, 3), 2), ((2, 3), 3), ((4, 3), 2)]
  # Another dtype is another signature, compiled for it.
  out = piece(jnp.ones((2, 3), jnp.int32), 2)
  assert out.dtype == jnp.int32 and len(traced) == 4


def test_sequential_and_batched_graphs_agree(pipeline, halftone, reference):
  # The default runs each network compiled on its own, G once per code and
  # the IHN once per colour channel (`cascade.paths(sequential=True)`);
  # sequential=False compiles the whole graph with codes and channels
  # batched. Same values up to float rounding, every intermediate included.
  assert pipeline.sequential
  batched = inference.Pipeline(pipeline.model_config, pipeline.variables,
                               image_size=TILE, overlap=8, tile_batch=4,
                               sequential=False)
  a = run(pipeline, halftone, reference, seed=2)
  b = run(batched, halftone, reference, seed=2)
  np.testing.assert_allclose(a.reference, b.reference, atol=1e-5)
  np.testing.assert_allclose(a.samples, b.samples, atol=1e-5)
  assert set(a.intermediates) == set(b.intermediates)
  for name, value in a.intermediates.items():
    np.testing.assert_allclose(value, b.intermediates[name], atol=1e-5,
                               err_msg=name)


def test_batch_of_same_size_inputs(pipeline, halftone, reference):
  batch = np.stack([halftone, 1.0 - halftone])[..., None]
  result = run(pipeline, batch, reference, seed=0)
  assert result.samples.shape == (2, 2, 40, 56, 3)
  assert result.reference.shape == (2, 40, 56, 3)
  # Random codes are drawn per image index from the seed.
  single = run(pipeline, halftone, reference, seed=0)
  np.testing.assert_array_equal(result.latents[0], single.latents[0])
  assert not np.array_equal(result.latents[0, 1:], result.latents[1, 1:])
  # A shared reference gives both images the same z_ref.
  np.testing.assert_array_equal(result.latents[0, 0], result.latents[1, 0])


def test_reference_modes(pipeline, halftone, reference):
  mu, logvar = pipeline.encode_reference(reference)
  mean = run(pipeline, halftone, reference, reference_mode="mean")
  np.testing.assert_allclose(mean.latents[:, 0], mu, rtol=1e-6)
  sampled = [run(pipeline, halftone, reference, seed=s).latents[0, 0]
             for s in (0, 1)]
  assert not np.allclose(sampled[0], sampled[1])
  # z = mu + eps * exp(logvar / 2) with eps ~ N(0, 1).
  eps = (sampled[0] - mu[0]) / np.exp(0.5 * logvar[0])
  assert 0 < np.abs(eps).max() < 6


def test_random_encoder_matches_tile_size():
  # E flattens its pooled features, so its linear layers depend on the size:
  # tiny E has 32 channels after 2 downsamplings and pools by 8.
  config = defaults.tiny_model(TILE)
  for size, inputs in ((32, 1 * 1 * 32), (64, 2 * 2 * 32)):
    variables = inference.init_random_variables(config, image_size=size)
    assert variables["encoder"]["params"]["mu"]["kernel"].shape == (inputs, 8)


def test_prepare_reference_resizes_shorter_side_and_crops():
  image = np.zeros((40, 80, 3), np.float32)
  image[:, 30:50] = 1.0  # a white band in the middle
  out = inference.prepare_reference(image, 32)
  assert out.shape == (32, 32, 3)
  # 80 -> 64 wide, the centre crop keeps 16..47: the band 24..40 -> 8..24.
  assert out[:, 16].min() == pytest.approx(1.0)
  assert out[:, 0].max() == pytest.approx(0.0)


@pytest.mark.parametrize("kwargs,match", [
    (dict(halftone=np.zeros((8, 40))), "minimum is 16x16"),
    (dict(halftone=np.zeros((1, 40, 40, 3))), r"\[B, H, W, 1\]"),
    (dict(halftone=np.full((32, 32), np.nan)), "NaN"),
    (dict(num_samples=0), "nothing to do"),
    (dict(reference_mode="median"), "reference_mode"),
    (dict(screen_period="often"), "screen_period"),
    (dict(screen_period=0.2), "between 1 and 64"),
    (dict(reference=np.zeros((3, 32, 32, 3))), "reference must be"),
])
def test_bad_arguments(pipeline, kwargs, match):
  kwargs.setdefault("halftone", np.zeros((32, 32), np.float32))
  with pytest.raises(ValueError, match=match):
    pipeline.colorize(**kwargs)


def test_screen_period_rescales_and_restores_size(pipeline, reference,
                                                  monkeypatch):
  scan = np.random.default_rng(3).random((80, 112), dtype=np.float32)
  assert pipeline._screen_scale(scan[None, ..., None], 6.0) == 0.5
  monkeypatch.setattr(inference, "estimate_period", lambda h: 4.0)
  assert pipeline._screen_scale(scan[None, ..., None], "auto") == 0.75
  result = run(pipeline, scan, reference, screen_period=6.0)  # 40x56 inside
  assert result.samples.shape == (1, 2, 80, 112, 3)
  assert result.intermediates["ihn_gray"].shape == (1, 80, 112, 1)


def test_estimate_period_on_am_screen():
  ramp = np.linspace(0.2, 0.8, 128, dtype=np.float32)
  gray = np.tile(ramp, (128, 1))[None, ..., None]
  screen = np.asarray(halftone_lib.am_screen(gray, period=4.5, angle=30.0))
  assert inference.estimate_period(screen) == pytest.approx(4.5, abs=0.15)


def test_save_and_load_round_trip(pipeline, halftone, reference, tmp_path):
  pipeline.save(tmp_path)
  assert sorted(os.listdir(tmp_path)) == [
      "encoder.npz", "fusion.npz", "generator.npz", "ihn.npz",
      "pipeline.json"]
  loaded = inference.Pipeline.load(tmp_path, overlap=8, tile_batch=4)
  assert loaded.image_size == TILE and loaded.trained_period == 3.0
  a = run(pipeline, halftone, reference, seed=1)
  b = run(loaded, halftone, reference, seed=1)
  np.testing.assert_allclose(a.samples, b.samples, atol=1e-6)
  assert loaded.num_compiled == 1  # the compiled graph was reused


def test_folder_missing_a_network(pipeline, tmp_path):
  pipeline.save(tmp_path)
  os.remove(tmp_path / "fusion.npz")
  with pytest.raises(inference.PipelineError) as excinfo:
    inference.Pipeline.load(tmp_path)
  message = str(excinfo.value)
  assert "\n" not in message
  assert "missing fusion.npz (fusion)" in message


def test_weights_of_wrong_shape(pipeline, tmp_path):
  pipeline.save(tmp_path)
  meta = json.loads((tmp_path / "pipeline.json").read_text())
  meta["model"]["fusion"]["features"] = 16  # the file holds 8
  (tmp_path / "pipeline.json").write_text(json.dumps(meta))
  with pytest.raises(inference.PipelineError) as excinfo:
    inference.Pipeline.load(tmp_path)
  assert "\n" not in str(excinfo.value)
  assert "fusion.npz" in str(excinfo.value)


def write_stage(workdir, stage, variables, *, period_range=(4.0, 5.0)):
  """A stage checkpoint as the trainers write it, without training."""
  config = ml_collections.ConfigDict()
  config.model = defaults.tiny_model(TILE)
  config.data = dict(image_size=TILE)
  config.halftone = dict(method="am", period_range=period_range)
  checkpoints_lib.save_stage_config(config, str(workdir))
  checkpointer = checkpoints_lib.StageCheckpointer(str(workdir), stage)
  checkpointer.save(train_state_lib.TrainState(
      step=jnp.asarray(1, jnp.int32), variables=variables,
      opt_states={"none": jnp.zeros(())},
      nonfinite_streak=jnp.asarray(0, jnp.int32)))
  checkpointer.close()


def test_chained_workdir_and_wrong_stage(pipeline, halftone, reference,
                                         tmp_path):
  v = pipeline.variables
  write_stage(tmp_path / "ihn", "ihn", {"ihn": v["ihn"]})
  # Only the IHN stage: one line naming the missing networks.
  for path in (tmp_path, tmp_path / "ihn"):
    with pytest.raises(inference.PipelineError) as excinfo:
      inference.Pipeline.load(path)
    message = str(excinfo.value)
    assert "\n" not in message
    assert "no trained generator, encoder, fusion" in message
    assert "ihn (ihn)" in message  # what the checkpoint does hold
  write_stage(tmp_path / "color", "color",
              {"generator": v["generator"], "encoder": v["encoder"]})
  write_stage(tmp_path / "fusion", "fusion", {"fusion": v["fusion"]})
  loaded = inference.Pipeline.load(tmp_path, overlap=8, tile_batch=4)
  assert loaded.trained_period == 4.5  # midpoint of the period range
  assert loaded.image_size == TILE
  a = run(pipeline, halftone, reference, seed=2)
  b = run(loaded, halftone, reference, seed=2)
  np.testing.assert_allclose(a.samples, b.samples, atol=1e-6)


def test_not_a_checkpoint(tmp_path):
  with pytest.raises(inference.PipelineError, match="does not exist"):
    inference.Pipeline.load(tmp_path / "nope")
  with pytest.raises(inference.PipelineError) as excinfo:
    inference.Pipeline.load(tmp_path)
  assert "no trained ihn, generator, encoder, fusion" in str(excinfo.value)
  assert "no checkpoint found" in str(excinfo.value)
