"""F's training targets (`trainers.fusion.targets`).

Random arrays made here; no network or weights needed.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ihc_jax import colorspace
from ihc_jax.trainers import fusion as fusion_stage

B, S = 2, 8


def _data_and_fused():
  keys = jax.random.split(jax.random.PRNGKey(0), 4)
  # Mid-range values so that no pseudo target is clipped.
  image = jax.random.uniform(keys[0], (B, S, S, 3), minval=0.3, maxval=0.7)
  forward = jax.random.uniform(keys[1], (3 * B, S, S, 3), minval=0.3,
                               maxval=0.7)
  fused = jax.random.uniform(keys[2], (3 * B, S, S, 3), minval=0.3, maxval=0.7)
  data = dict(image=image, gray=colorspace.rgb_to_gray(image), forward=forward,
              inverse=forward[::-1])
  return data, fused


def _chroma(rgb):
  return rgb - colorspace.rgb_to_gray(rgb)


@pytest.mark.parametrize("pseudo", fusion_stage.PSEUDO_TARGETS)
def test_recovery_target_is_the_photo_and_the_rest_have_its_luma(pseudo):
  data, fused = _data_and_fused()
  target = fusion_stage.targets(data, fused, pseudo)
  assert target.shape == fused.shape
  np.testing.assert_array_equal(target[:B], data["image"])
  gray = jnp.concatenate([data["gray"]] * 2)
  np.testing.assert_allclose(colorspace.rgb_to_gray(target[B:]), gray,
                             atol=1e-6)
  source = fused if pseudo == "own" else data["forward"]
  np.testing.assert_allclose(_chroma(target[B:]), _chroma(source[B:]),
                             atol=1e-6)


def test_own_chroma_target_gives_a_luminance_only_gradient():
  """On the reference and random schemes, the L1 gradient with F's own
  chroma moves every channel of a pixel alike (luminance only); with the
  IHN->C chroma it does not."""
  data, fused = _data_and_fused()

  def loss(out, pseudo):
    return jnp.mean(jnp.abs(out - fusion_stage.targets(data, out, pseudo)))

  own = jax.grad(loss)(fused, "own")[B:]
  np.testing.assert_allclose(own, jnp.broadcast_to(own[..., :1], own.shape),
                             atol=1e-9)
  assert float(jnp.abs(own).max()) > 0
  forward = jax.grad(loss)(fused, "forward")[B:]
  assert float(jnp.abs(forward - forward[..., :1]).max()) > 1e-6


def test_unknown_pseudo_target_is_an_error():
  data, fused = _data_and_fused()
  with pytest.raises(ValueError, match="pseudo_target must be one of"):
    fusion_stage.targets(data, fused, "inverse")
