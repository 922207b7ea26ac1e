"""Tests of the FID / KID statistics in ihc_jax.eval.fid (no networks)."""

import numpy as np
import pytest

from ihc_jax.eval import fid


def test_feature_statistics_hand_computed():
  features = np.array([[0.0, 1.0], [2.0, 1.0], [4.0, 4.0]])
  mu, sigma = fid.feature_statistics(features)
  np.testing.assert_allclose(mu, [2.0, 2.0])
  # Deviations x: -2, 0, 2; y: -1, -1, 2; divide by N - 1 = 2.
  np.testing.assert_allclose(sigma, [[4.0, 3.0], [3.0, 3.0]])


def test_fid_of_a_set_with_itself_is_zero():
  features = np.random.default_rng(0).normal(size=(50, 16))
  mu, sigma = fid.feature_statistics(features)
  assert abs(fid.frechet_distance(mu, sigma, mu, sigma)) < 1e-6


def test_fid_singular_covariance_with_itself_is_zero():
  # Fewer samples than dimensions: rank-deficient covariances.
  features = np.random.default_rng(1).normal(size=(5, 32))
  assert abs(fid.fid_from_features(features, features)) < 1e-6


def test_fid_diagonal_gaussians_closed_form():
  mu1, mu2 = np.array([0.0, 1.0, 2.0]), np.array([1.0, 1.0, 0.0])
  s1, s2 = np.array([1.0, 4.0, 9.0]), np.array([4.0, 1.0, 1.0])
  # ||mu1 - mu2||^2 = 1 + 0 + 4 = 5; sum(s1 + s2 - 2 sqrt(s1 s2))
  # = (1 + 4 - 4) + (4 + 1 - 4) + (9 + 1 - 6) = 1 + 1 + 4 = 6.
  value = fid.frechet_distance(mu1, np.diag(s1), mu2, np.diag(s2))
  assert value == pytest.approx(11.0, abs=1e-9)


def test_fid_is_invariant_to_a_common_rotation():
  mu1, mu2 = np.array([0.0, 1.0, 2.0]), np.array([1.0, 1.0, 0.0])
  s1, s2 = np.diag([1.0, 4.0, 9.0]), np.diag([4.0, 1.0, 1.0])
  q, _ = np.linalg.qr(np.random.default_rng(2).normal(size=(3, 3)))
  value = fid.frechet_distance(q @ mu1, q @ s1 @ q.T, q @ mu2, q @ s2 @ q.T)
  assert value == pytest.approx(11.0, abs=1e-9)


def test_fid_grows_with_mean_shift():
  features = np.random.default_rng(3).normal(size=(200, 4))
  values = [fid.fid_from_features(features, features + shift)
            for shift in (0.0, 0.5, 1.0)]
  # A pure shift by t in 4 dims adds exactly 4 t^2.
  np.testing.assert_allclose(values, [0.0, 1.0, 4.0], atol=1e-8)


def test_fid_rejects_bad_shapes():
  with pytest.raises(ValueError, match="covariances"):
    fid.frechet_distance(np.zeros(2), np.eye(3), np.zeros(2), np.eye(2))
  with pytest.raises(ValueError, match="at least 2 samples"):
    fid.feature_statistics(np.zeros((1, 4)))
  with pytest.raises(ValueError, match="NaN"):
    fid.feature_statistics(np.array([[0.0], [np.nan]]))


def test_kid_hand_computed():
  # d = 1, k(x, y) = (x y + 1)^3. XX off-diagonal: k(0, 1) = 1 -> 1;
  # YY: k(1, 2) = 27 -> 27; XY mean: (1 + 1 + 8 + 27) / 4 = 9.25.
  # MMD^2 = 1 + 27 - 2 * 9.25 = 9.5 for every subset (they are permutations).
  mean, std = fid.kernel_inception_distance(
      np.array([[0.0], [1.0]]), np.array([[1.0], [2.0]]), subsets=3,
      subset_size=2)
  assert mean == pytest.approx(9.5)
  assert std == pytest.approx(0.0)


def test_kid_identical_sets_near_zero_and_shift_larger():
  features = np.random.default_rng(4).normal(size=(200, 8))
  same, _ = fid.kernel_inception_distance(features, features, subsets=20,
                                          subset_size=100)
  shifted, _ = fid.kernel_inception_distance(features, features + 1.0,
                                             subsets=20, subset_size=100)
  # Independent subsets of one finite set share points, which biases the
  # cross term by about -2/N * (mean k(x, x) - mean k(x, y)): about -0.09 here.
  assert abs(same) < 0.02 * shifted
  assert shifted > 5.0


def test_kid_rejects_too_large_subsets():
  with pytest.raises(ValueError, match="subset_size"):
    fid.kernel_inception_distance(np.zeros((3, 2)), np.zeros((5, 2)),
                                  subset_size=4)
