"""Tests for the cosine self-similarity matrix and the chunked loss."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ihc_jax.losses import self_similarity as ss


def test_matrix_shape_diagonal_and_hand_value():
  img = np.random.default_rng(0).random((2, 16, 12, 3), dtype=np.float32)
  s = ss.self_similarity_matrix(img)
  assert s.shape == (2, 12, 12)  # (16/4) x (12/4) patches
  # Diagonal is |x|^2 / (|x| + 1e-5)^2, i.e. 1 up to ~1e-4 for [0, 1] pixels.
  np.testing.assert_allclose(jnp.diagonal(s, axis1=1, axis2=2), 1.0, atol=1e-4)
  np.testing.assert_allclose(s, jnp.swapaxes(s, 1, 2), atol=1e-6)
  # Two 4x4 patches, red and green: S ~ identity. Both red: S ~ all ones.
  red_green = jnp.zeros((1, 4, 8, 3)).at[:, :, :4, 0].set(1.0).at[:, :, 4:, 1].set(1.0)
  red_red = jnp.zeros((1, 4, 8, 3)).at[..., 0].set(1.0)
  np.testing.assert_allclose(ss.self_similarity_matrix(red_green)[0], np.eye(2),
                             atol=1e-4)
  assert float(ss.self_similarity_loss(red_green, red_red)) == pytest.approx(
      0.5, abs=1e-4)  # mean((I - 1)^2) over 4 entries


def test_patch_pooling_drops_remainder_like_avgpool():
  img = jnp.arange(5 * 5, dtype=jnp.float32).reshape(1, 5, 5, 1) / 25.0
  x = ss.patch_vectors(img, eps=0.0)
  assert x.shape == (1, 1, 1)
  np.testing.assert_allclose(x[0, 0, 0], 1.0, rtol=1e-6)  # one channel: unit norm
  with pytest.raises(ValueError, match="smaller"):
    ss.patch_vectors(jnp.zeros((1, 3, 8, 3)))


def test_chunked_equals_unchunked_value_and_gradient():
  out, tgt = np.random.default_rng(1).random((2, 2, 16, 20, 3), dtype=np.float32)
  # 4 x 5 = 20 patches; chunk 6 does not divide it (zero-row padding).

  def loss(o, chunk):
    return ss.self_similarity_loss(o, tgt, chunk_rows=chunk, reduction="none")

  full = loss(out, None)
  s_o, s_t = ss.self_similarity_matrix(out), ss.self_similarity_matrix(tgt)
  np.testing.assert_allclose(full, jnp.mean((s_o - s_t) ** 2, axis=(1, 2)),
                             rtol=1e-5)
  assert full.shape == (2,) and float(full.min()) > 0
  for chunk in (6, 5):
    np.testing.assert_allclose(jax.jit(loss, static_argnums=1)(out, chunk), full,
                               rtol=1e-5)
  grad_full = jax.grad(lambda o: loss(o, None).mean())(out)
  grad_chunk = jax.jit(jax.grad(lambda o: loss(o, 6).mean()))(out)
  np.testing.assert_allclose(grad_chunk, grad_full, rtol=1e-4, atol=1e-7)
  assert np.isfinite(grad_chunk).all() and np.abs(grad_chunk).sum() > 0
  assert float(ss.self_similarity_loss(out, out, chunk_rows=6)) == 0.0


def test_black_patches_give_a_finite_gradient():
  """A black patch is a zero vector (G's tanh gives exactly 0 there, e.g.
  at its gray start on black areas): its similarities are 0 and the
  gradient is finite, where the plain norm's gradient is NaN."""
  tgt = np.random.default_rng(2).random((1, 16, 16, 3), dtype=np.float32)
  out = jnp.asarray(tgt).at[:, :8].set(0.0)
  s = ss.self_similarity_matrix(out)
  np.testing.assert_array_equal(s[0, :8], 0.0)  # patch rows of the black half
  for chunk in (None, 6):
    grad = jax.grad(lambda o, c=chunk: ss.self_similarity_loss(
        o, tgt, chunk_rows=c))(out)
    assert np.isfinite(grad).all() and np.abs(grad).sum() > 0, chunk
  # Value unchanged elsewhere: the non-black rows match the direct formula.
  x = jnp.asarray(out).reshape(1, 4, 4, 4, 4, 3).mean(axis=(2, 4)).reshape(
      1, 16, 3)
  unit = x / (jnp.linalg.norm(x, axis=-1, keepdims=True) + ss.NORM_EPS)
  np.testing.assert_allclose(s[0, 8:], (unit @ jnp.swapaxes(unit, 1, 2))[0, 8:],
                             atol=1e-6)


def test_chunking_bounds_compiled_memory():
  """At 64x64 (N = 256), the chunked loss's temporaries stay well below the
  unchunked ones (which hold several [B, N, N] arrays)."""
  shape = jax.ShapeDtypeStruct((2, 64, 64, 3), jnp.float32)

  def temp_bytes(chunk):
    fn = jax.jit(jax.grad(lambda o, t: ss.self_similarity_loss(o, t, chunk_rows=chunk)))
    stats = fn.lower(shape, shape).compile().memory_analysis()
    return stats.temp_size_in_bytes

  full, chunked = temp_bytes(None), temp_bytes(16)
  nn_bytes = 2 * 256 * 256 * 4
  assert full >= nn_bytes        # at least one [B, N, N] float32 array
  assert chunked < nn_bytes / 2  # blocks of [B, 16, N]
