"""FLOP counts and the roofline table of `python -m ihc_jax.bench official`
(`ihc_jax.bench.roofline`); tiny random-weight networks, nothing timed."""

import jax
import jax.numpy as jnp
import pytest

from ihc_jax import inference
from ihc_jax import models
from ihc_jax.bench import roofline
from ihc_jax.trainers import defaults

TILE = 32


def test_lowered_gflop_counts_a_matmul_and_a_convolution():
  a, b = jnp.ones((64, 96)), jnp.ones((96, 128))
  assert roofline.lowered_gflop(jax.jit(jnp.matmul), a, b) == pytest.approx(
      2 * 64 * 96 * 128 / 1e9, rel=1e-3)
  x = jax.ShapeDtypeStruct((2, 16, 16, 8), jnp.float32)
  kernel = jax.ShapeDtypeStruct((3, 3, 8, 12), jnp.float32)
  def conv(padding):
    return jax.jit(lambda x, k: jax.lax.conv_general_dilated(
        x, k, (1, 1), padding, dimension_numbers=("NHWC", "HWIO", "NHWC")))
  assert roofline.lowered_gflop(conv("VALID"), x, kernel) == pytest.approx(
      2 * 2 * 14 * 14 * 9 * 8 * 12 / 1e9, rel=1e-3)
  # Taps that fall on the zero padding are not counted: per axis, 16
  # outputs read 16 * 3 - 2 real inputs.
  assert roofline.lowered_gflop(conv("SAME"), x, kernel) == pytest.approx(
      2 * 2 * (16 * 3 - 2) ** 2 * 8 * 12 / 1e9, rel=1e-3)


def _network_gflop(config, variables, name, *args, **kwargs):
  net = models.build(name, config)
  fn = jax.jit(lambda v, *a: net.apply(v, *a, **kwargs))
  return roofline.lowered_gflop(fn, variables[name], *args)


@pytest.mark.parametrize("num_codes", [1, 3])
def test_pipeline_gflop_is_the_networks_calls_of_test_py(num_codes):
  # test.py runs IHN on the halftone and on each colour channel of G's
  # colour halftone per code (1 + 3 K), G twice per code, F once per code
  # and E once on the reference.
  config = defaults.tiny_model(TILE)
  variables = inference.init_random_variables(config, seed=0, image_size=TILE)
  pipeline = inference.Pipeline(config, variables, image_size=TILE, tile_batch=1)
  spec = jax.ShapeDtypeStruct
  gray = spec((1, TILE, TILE, 1), jnp.float32)
  rgb = spec((1, TILE, TILE, 3), jnp.float32)
  noise = spec((1, TILE, TILE, int(config.ihn.nz)), jnp.float32)
  z = spec((1, int(config.generator.nz)), jnp.float32)
  ihn = _network_gflop(config, variables, "ihn", gray, noise, train=False)
  gen = _network_gflop(config, variables, "generator", gray, gray, z, train=False)
  fusion = _network_gflop(config, variables, "fusion", rgb, rgb)
  encoder = _network_gflop(config, variables, "encoder", rgb)
  expected = (1 + 3 * num_codes) * ihn + 2 * num_codes * gen + num_codes * fusion + encoder
  got = roofline.pipeline_gflop(pipeline, num_codes, with_reference=True)
  # Canny and the noise maps add a little outside the networks.
  assert expected <= got <= 1.05 * expected
  assert roofline.pipeline_gflop(pipeline, num_codes, with_reference=False) == pytest.approx(
      got - encoder, rel=1e-6)


def test_format_lines_gives_rates_and_the_best_ratio_at_the_ceiling():
  results = {"step": (2.0, 4.0), "untimed by flops": (1.0, 1.0)}
  lines = roofline.format_lines(results, {"step": 300.0}, peak_gflops=200.0)
  assert "200 GFLOP/s" in lines[0]
  (row,) = [line for line in lines if line.startswith("step")]
  # 300 GFLOP: torch 150 GF/s, ihc_jax 75 GF/s, 1.5 s at the ceiling, so
  # at best 2.0 / 1.5 = 1.33x.
  assert row.split() == ["step", "300.0", "150", "75", "1.500", "1.33x"]
  assert not any(line.startswith("untimed") for line in lines)
