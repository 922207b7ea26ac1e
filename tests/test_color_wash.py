"""`random_washed`, the colour stage's held-out wash rate: of WASH_CODES
random codes per photo, the fraction whose result is saturated over more
than WASH_AREA of its pixels. G is replaced here by a function whose
outputs are known (pure red for codes with a positive first entry, gray
otherwise), so the expected rate is counted from the codes themselves."""

import types

import jax
import jax.numpy as jnp
import numpy as np

from ihc_jax.trainers import color


def test_washed_fraction_counts_codes_that_saturate(monkeypatch):
  def fake_colorize(state, nets, gray, edge, z):
    del state, nets, edge
    red = jnp.broadcast_to(jnp.asarray([1.0, 0.0, 0.0]), gray.shape[:3] + (3,))
    return jnp.where(z[:, 0, None, None, None] > 0, red,
                     jnp.repeat(gray, 3, axis=-1))
  monkeypatch.setattr(color, "colorize", fake_colorize)
  batch = 3
  data = {"image": jnp.zeros((batch, 8, 8, 3)),
          "ihn_gray": jnp.full((batch, 8, 8, 1), 0.5),
          "edge_gray": jnp.zeros((batch, 8, 8, 1))}
  nets = types.SimpleNamespace(generator=types.SimpleNamespace(nz=4))
  key = jax.random.PRNGKey(3)
  washed = np.asarray(color._washed_fraction(None, nets, data, key))  # pylint: disable=protected-access
  z = np.asarray(jax.random.normal(key, (color.WASH_CODES * batch, 4)))
  expected = (z[:, 0] > 0).reshape(color.WASH_CODES, batch).mean(axis=0)
  assert washed.shape == (batch,)
  np.testing.assert_allclose(washed, expected)
  assert 0.0 < expected.mean() < 1.0  # both kinds of code occur
