"""Tests for the feature-based and histogram losses: perceptual, structure,
style, mode seeking, histogram. VGG19 and H use RANDOM weights on purpose
(no ImageNet weights offline); the tests check the maths, not the features."""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ihc_jax.losses import histogram, mode_seeking, perceptual, structure, style
from ihc_jax.models.histogram import HistogramNet
from ihc_jax.models.vgg import init_vgg19_params


def _uniform(seed, shape):
  return np.random.default_rng(seed).random(shape, dtype=np.float32)


@pytest.fixture(scope="module")
def vgg_params():
  return init_vgg19_params(0)  # random weights


@pytest.fixture(scope="module")
def images():
  return _uniform(1, (3, 2, 16, 16, 3))


def test_perceptual_from_features_and_wrapper(vgg_params, images):
  a, b, _ = images
  f = jnp.array([1.0, 3.0]).reshape(1, 1, 1, 2)
  assert float(perceptual.perceptual_loss_from_features(f, jnp.zeros_like(f))) == 5.0
  assert float(perceptual.perceptual_loss_from_features(
      f, jnp.zeros_like(f), distance="l1")) == 2.0
  assert float(perceptual.perceptual_loss(vgg_params, a, a)) == 0.0
  feats = perceptual.vgg_features(vgg_params, jnp.concatenate([a, b]),
                                  layers=("pool4",))["pool4"]
  expected = jnp.mean(jnp.square(feats[:2] - feats[2:]), axis=(1, 2, 3))
  got = perceptual.perceptual_loss(vgg_params, a, b, layer="pool4",
                                   reduction="none")
  np.testing.assert_allclose(got, expected, rtol=1e-5)
  assert float(got.min()) > 0.0


def test_feature_pair_gradients_flow_to_both_inputs(vgg_params, images):
  """`vgg_feature_pair` runs VGG twice instead of on one concatenated batch;
  the loss and its gradients with respect to both output and target must be
  those of the shared batch (a target that depends on the parameters, as
  the fusion stage's pseudo targets, still gets its gradient)."""
  a, b, _ = images

  def shared(x, y):
    feats = perceptual.vgg_features(vgg_params, jnp.concatenate([x, y]),
                                    layers=("relu4_1",))["relu4_1"]
    return jnp.mean(jnp.square(feats[:2] - feats[2:]))

  def paired(x, y):
    fx, fy = perceptual.vgg_feature_pair(vgg_params, x, y, layer="relu4_1")
    return jnp.mean(jnp.square(fx - fy))

  want = jax.jit(jax.value_and_grad(shared, argnums=(0, 1)))(a, b)
  got = jax.jit(jax.value_and_grad(paired, argnums=(0, 1)))(a, b)
  np.testing.assert_allclose(got[0], want[0], rtol=1e-5)
  for g, w in zip(got[1], want[1]):
    assert float(jnp.max(jnp.abs(w))) > 0
    # Float rounding of the two batchings, relative to the largest entry
    # (the order of XLA:CPU's sums depends on the CPU's vector width).
    np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-5 * float(jnp.max(jnp.abs(w))))


def test_sobel_step_edge_hand_values():
  step = jnp.tile(jnp.array([0.0, 0.0, 1.0, 1.0]), (1, 3, 1))[..., None]
  g = structure.sobel_gradients(step)
  np.testing.assert_allclose(g[0, :, :, 0], [[0, 4, 4, 0]] * 3)
  np.testing.assert_allclose(g[..., 1], 0.0)
  rgb = jnp.repeat(step, 3, axis=-1)  # gray RGB: luma equals the value
  np.testing.assert_allclose(structure.sobel_gradients(rgb), g, atol=1e-6)
  # 24 entries (3 x 4 pixels, 2 components), six of them equal 4.
  assert float(structure.edge_loss(step, jnp.zeros_like(step))) == pytest.approx(1.0)


def test_structure_loss(vgg_params, images):
  a, b, _ = images
  assert float(structure.structure_loss(vgg_params, a, a)) == 0.0
  f = jnp.full((2, 2, 2, 4), 2.0)
  total = structure.structure_loss_from_features(a, b, f, 0.0 * f,
                                                 reduction="none")
  np.testing.assert_allclose(total, structure.edge_loss(a, b, reduction="none") + 4.0,
                             rtol=1e-6)


def test_gram_matrix_hand_values():
  f = jnp.array([[1.0, 2.0], [3.0, 4.0]]).reshape(1, 1, 2, 2)
  expected = np.array([[10.0, 14.0], [14.0, 20.0]]) / 4.0
  np.testing.assert_allclose(style.gram_matrix(f)[0], expected)
  np.testing.assert_allclose(style.gram_matrix(f, cross_batch=True), expected)
  two = jnp.concatenate([f, 2 * f])
  assert style.gram_matrix(two, cross_batch=True).shape == (4, 4)
  # Cross-batch block (0, 1) correlates the two samples, / (B*C*H*W) = 8.
  np.testing.assert_allclose(style.gram_matrix(two, cross_batch=True)[:2, 2:],
                             2 * np.array([[10.0, 14.0], [14.0, 20.0]]) / 8.0)
  assert float(style.style_loss_from_features(f, jnp.zeros_like(f))) == (
      pytest.approx((2.5**2 + 2 * 3.5**2 + 5.0**2) / 4))


def test_style_loss_symmetric_zero_and_cross_batch(vgg_params, images):
  a, b, _ = images
  ab = style.style_loss(vgg_params, a, b)
  ba = style.style_loss(vgg_params, b, a)
  assert float(ab) > 0.0
  np.testing.assert_allclose(ab, ba, rtol=1e-6)
  assert float(style.style_loss(vgg_params, a, a)) == 0.0
  cross = style.style_loss(vgg_params, a, b, cross_batch=True)
  assert np.isfinite(float(cross)) and float(cross) != pytest.approx(float(ab),
                                                                     rel=1e-3)
  with pytest.raises(ValueError, match="per-example"):
    style.style_loss_from_features(a, b, cross_batch=True, reduction="none")


def test_mode_seeking_pixel_hand_value_and_monotone():
  x = jnp.zeros((1, 2, 2, 3))
  z1, z2 = jnp.zeros((1, 8)), jnp.ones((1, 8))
  half = mode_seeking.mode_seeking_loss_from_features(x, x + 0.5, z1, z2,
                                                      distance="pixel")
  assert float(half) == pytest.approx(1.0 / (0.5 + 1e-5))
  full = mode_seeking.mode_seeking_loss_from_features(x, x + 1.0, z1, z2,
                                                      distance="pixel")
  assert float(full) < float(half)
  f = jnp.array([1.0, 1.0]).reshape(1, 1, 1, 2)  # Gram [[1,1],[1,1]] / 2
  got = mode_seeking.mode_seeking_loss_from_features(f, 0.0 * f, z1, 2 * z2)
  assert float(got) == pytest.approx(1.0 / (0.5 / 2.0 + 1e-5))


def test_mode_seeking_hinge_is_bounded_and_stops_at_tau():
  x = jnp.zeros((2, 2, 2, 3))
  z1, z2 = jnp.zeros((2, 8)), jnp.ones((2, 8))  # d_z = 1
  hinge = functools.partial(mode_seeking.mode_seeking_loss_from_features,
                            distance="pixel", form="hinge", tau=0.1)
  # Collapsed outputs: 1 (the MSGAN form gives 1e5 here).
  assert float(hinge(x, x, z1, z2)) == pytest.approx(1.0)
  assert float(mode_seeking.mode_seeking_loss_from_features(
      x, x, z1, z2, distance="pixel", form="msgan")) == pytest.approx(1e5)
  # Ratio 0.05: halfway; ratio >= tau: 0, with no gradient left.
  assert float(hinge(x, x + 0.05, z1, z2)) == pytest.approx(0.5, abs=1e-6)
  assert float(hinge(x, x + 0.3, z1, z2)) == 0.0
  grad = jax.grad(lambda y: hinge(x, y, z1, z2))(x + 0.3)
  assert float(jnp.abs(grad).max()) == 0.0
  grad = jax.grad(lambda y: hinge(x, y, z1, z2))(x + 0.01)
  assert 0.0 < float(jnp.abs(grad).max()) < 1.0
  with pytest.raises(ValueError, match="form"):
    mode_seeking.mode_seeking_loss_from_features(x, x, z1, z2, form="ms")


def test_mode_seeking_vgg_falls_as_outputs_diverge(vgg_params, images):
  a, b, _ = images
  z1, z2 = jnp.zeros((2, 8)), jnp.ones((2, 8))
  near = mode_seeking.mode_seeking_loss(vgg_params, a, 0.9 * a + 0.1 * b, z1, z2)
  far = mode_seeking.mode_seeking_loss(vgg_params, a, b, z1, z2)
  assert float(far) < float(near)


def test_hard_histogram_matches_numpy():
  x = jnp.array([0.0, 0.1, 0.5, 1.0, 1.5, -0.2]).reshape(1, 1, 6, 1)
  np.testing.assert_allclose(histogram.hard_histogram(x, bins=2)[0, 0], [0.5, 0.5])
  rng = np.random.RandomState(0)
  img = rng.rand(2, 8, 8, 3).astype(np.float32)
  got = histogram.hard_histogram(jnp.asarray(img), bins=16)
  for bi in range(2):
    for c in range(3):
      counts, _ = np.histogram(img[bi, :, :, c], bins=16, range=(0.0, 1.0))
      np.testing.assert_allclose(got[bi, c], counts / counts.sum(), atol=1e-7)


def test_soft_histogram_hand_value_and_gradient():
  x = jnp.full((1, 2, 2, 1), 0.25)  # centre of bin 0 of 2; sigma = 0.25
  h = histogram.soft_histogram(x, bins=2)
  e = math.exp(-2.0)
  np.testing.assert_allclose(h[0, 0], [1 / (1 + e), e / (1 + e)], rtol=1e-6)
  img = _uniform(2, (1, 8, 8, 3))
  soft = histogram.soft_histogram(img, bins=4)
  np.testing.assert_allclose(soft.sum(-1), 1.0, rtol=1e-6)
  np.testing.assert_allclose(soft, histogram.hard_histogram(img, bins=4), atol=0.15)
  grad = jax.grad(lambda im: histogram.soft_histogram(im, bins=4)[0, 0, 0])(img)
  assert np.isfinite(grad).all() and np.abs(grad).sum() > 0


def test_bce_and_histogram_loss_hand_values():
  p = jnp.array([[0.25]])
  t = jnp.array([[0.5]])
  assert float(histogram.binary_cross_entropy(p, t)) == pytest.approx(
      -(0.5 * math.log(0.25) + 0.5 * math.log(0.75)), rel=1e-6)
  # Clipping keeps p = 0 finite: -log(eps).
  assert float(histogram.binary_cross_entropy(jnp.zeros((1, 1)), jnp.ones((1, 1)))) == (
      pytest.approx(-math.log(1e-7), rel=1e-4))
  hist = jnp.array([[[0.5, 0.5]]])
  assert float(histogram.histogram_loss_from_histograms(hist, hist)) == (
      pytest.approx(math.log(2.0), rel=1e-6))


def test_histogram_loss_through_random_h():
  model = HistogramNet(bins=8, features=(4, 4, 4))  # random weights
  out, ref = _uniform(3, (2, 2, 16, 16, 3))
  params = jax.jit(model.init)(jax.random.PRNGKey(4), out[..., :1])["params"]
  loss_fn = lambda o: histogram.histogram_loss(model.apply, params, o, ref)
  value, grad = jax.jit(jax.value_and_grad(loss_fn))(out)
  assert np.isfinite(float(value)) and float(value) > 0
  assert np.isfinite(grad).all() and np.abs(grad).sum() > 0
  # Identical output and reference: BCE of a distribution with itself, which
  # is the mean binary entropy of H's probabilities (not 0 for soft targets).
  p = jnp.clip(jax.jit(model.apply)({"params": params},
                                    ref.transpose(0, 3, 1, 2).reshape(6, 16, 16, 1)),
               1e-7, 1 - 1e-7)
  entropy = -(p * jnp.log(p) + (1 - p) * jnp.log1p(-p))
  np.testing.assert_allclose(jax.jit(loss_fn)(ref), entropy.mean(), rtol=1e-5)


def test_feature_losses_jit_with_finite_gradients(vgg_params, images):
  a, b, _ = images
  z1, z2 = np.random.default_rng(5).standard_normal((2, 2, 8), dtype=np.float32)

  # One VGG wrapper end to end under jit + grad (the others share its code).
  def wrapped(x):
    return structure.structure_loss(vgg_params, x, b)

  value, grad = jax.jit(jax.value_and_grad(wrapped))(a)
  np.testing.assert_allclose(value, wrapped(a), rtol=1e-4)
  assert np.isfinite(grad).all() and np.abs(grad).sum() > 0

  # The feature forms, on stand-in feature maps.
  fa, fb = a[:, :4, :4], b[:, :4, :4]

  def features_total(x):
    return (perceptual.perceptual_loss_from_features(x, fb)
            + style.style_loss_from_features(x, fb)
            + mode_seeking.mode_seeking_loss_from_features(x, fb, z1, z2))

  value, grad = jax.jit(jax.value_and_grad(features_total))(fa)
  np.testing.assert_allclose(value, features_total(fa), rtol=1e-4)
  assert np.isfinite(grad).all() and np.abs(grad).sum() > 0
