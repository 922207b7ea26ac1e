"""Feature statistics: Frechet distance (FID) and kernel distance (KID).

Pure numpy/float64, independent of the network that made the features (use
`ihc_jax.eval.inception.inception_features` for the standard 2048-d
InceptionV3 pool features).

* FID (Heusel et al. 2017): ``||mu1 - mu2||^2 + tr(S1 + S2 - 2 (S1 S2)^(1/2))``.
  The trace of the matrix square root is computed in the symmetric form
  ``tr((S1^(1/2) S2 S1^(1/2))^(1/2))`` from two symmetric eigen-decompositions,
  which has the same eigenvalues as ``(S1 S2)^(1/2)`` but is real and stable
  even for singular covariances (fewer samples than dimensions), so no
  ``eps * I`` offset or imaginary-part clean-up is needed.
* KID (Binkowski et al. 2018): the unbiased MMD^2 estimate with the cubic
  polynomial kernel ``k(x, y) = (x.y / d + 1)^3``, averaged over random
  subsets.
"""

from __future__ import annotations

import numpy as np


def feature_statistics(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """Mean and covariance (unbiased, N - 1) of a feature set.

  Args:
    features: [N, D] features, N >= 2.

  Returns:
    (mu [D], sigma [D, D]) in float64.
  """
  features = np.asarray(features, np.float64)
  if features.ndim != 2:
    raise ValueError(f"features must be [N, D], got shape {features.shape}")
  if features.shape[0] < 2:
    raise ValueError(
        f"feature_statistics needs at least 2 samples, got {features.shape[0]}")
  if not np.all(np.isfinite(features)):
    raise ValueError("features contain NaN or infinite values")
  mu = features.mean(axis=0)
  sigma = np.cov(features, rowvar=False)
  return mu, np.atleast_2d(sigma)


def _clean_eigenvalues(values: np.ndarray) -> np.ndarray:
  """Zeroes eigenvalues that are rounding noise (the usual rank tolerance).

  sqrt() magnifies noise near zero (1e-14 -> 1e-7), so without this a
  rank-deficient covariance compared with itself would not give 0.
  """
  tolerance = values.shape[0] * np.finfo(np.float64).eps * max(
      float(np.max(np.abs(values), initial=0.0)), 1e-300)
  return np.where(values > tolerance, values, 0.0)


def _psd_sqrt(matrix: np.ndarray) -> np.ndarray:
  """Square root of a symmetric positive semi-definite matrix."""
  values, vectors = np.linalg.eigh(matrix)
  values = _clean_eigenvalues(values)
  return (vectors * np.sqrt(values)) @ vectors.T


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray,
                     sigma2: np.ndarray) -> float:
  """Frechet distance between two Gaussians N(mu1, sigma1), N(mu2, sigma2).

  Args:
    mu1: [D] mean of the first set.
    sigma1: [D, D] covariance of the first set (symmetric PSD).
    mu2: [D] mean of the second set.
    sigma2: [D, D] covariance of the second set.

  Returns:
    The distance as a Python float (>= 0 up to rounding).
  """
  mu1 = np.atleast_1d(np.asarray(mu1, np.float64))
  mu2 = np.atleast_1d(np.asarray(mu2, np.float64))
  sigma1 = np.atleast_2d(np.asarray(sigma1, np.float64))
  sigma2 = np.atleast_2d(np.asarray(sigma2, np.float64))
  d = mu1.shape[0]
  if mu1.ndim != 1 or mu2.shape != (d,):
    raise ValueError(f"means must be [D] vectors of equal length, got "
                     f"{mu1.shape} and {mu2.shape}")
  if sigma1.shape != (d, d) or sigma2.shape != (d, d):
    raise ValueError(f"covariances must be [{d}, {d}], got {sigma1.shape} and "
                     f"{sigma2.shape}")
  for name, value in (("mu1", mu1), ("mu2", mu2), ("sigma1", sigma1),
                      ("sigma2", sigma2)):
    if not np.all(np.isfinite(value)):
      raise ValueError(f"{name} contains NaN or infinite values")
  # Symmetrise against rounding in the inputs; eigh reads one triangle only.
  sigma1 = (sigma1 + sigma1.T) / 2.0
  sigma2 = (sigma2 + sigma2.T) / 2.0
  root1 = _psd_sqrt(sigma1)
  middle = root1 @ sigma2 @ root1
  middle = (middle + middle.T) / 2.0
  eigenvalues = _clean_eigenvalues(np.linalg.eigvalsh(middle))
  trace_covmean = np.sum(np.sqrt(eigenvalues))
  diff = mu1 - mu2
  return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2)
               - 2.0 * trace_covmean)


def fid_from_features(features1: np.ndarray, features2: np.ndarray) -> float:
  """FID between two feature sets ([N1, D] and [N2, D])."""
  return frechet_distance(*feature_statistics(features1),
                          *feature_statistics(features2))


def _polynomial_mmd2(x: np.ndarray, y: np.ndarray) -> float:
  """Unbiased MMD^2 with k(a, b) = (a.b / d + 1)^3."""
  m, d = x.shape
  n = y.shape[0]
  k_xx = (x @ x.T / d + 1.0) ** 3
  k_yy = (y @ y.T / d + 1.0) ** 3
  k_xy = (x @ y.T / d + 1.0) ** 3
  term_xx = (k_xx.sum() - np.trace(k_xx)) / (m * (m - 1))
  term_yy = (k_yy.sum() - np.trace(k_yy)) / (n * (n - 1))
  return float(term_xx + term_yy - 2.0 * k_xy.mean())


def kernel_inception_distance(features1: np.ndarray, features2: np.ndarray, *,
                              subsets: int = 100, subset_size: int = 1000,
                              seed: int = 0) -> tuple[float, float]:
  """KID: unbiased polynomial-kernel MMD^2 averaged over random subsets.

  Each of `subsets` rounds draws `subset_size` rows of each set without
  replacement (independently per set) and computes the unbiased MMD^2
  estimate of Binkowski et al. (2018).

  Args:
    features1: [N1, D] features.
    features2: [N2, D] features.
    subsets: number of random subsets (>= 1).
    subset_size: rows per subset; 2 <= subset_size <= min(N1, N2).
    seed: seed of the numpy generator that draws the subsets.

  Returns:
    (mean, standard deviation) of MMD^2 over the subsets.
  """
  x = np.asarray(features1, np.float64)
  y = np.asarray(features2, np.float64)
  if x.ndim != 2 or y.ndim != 2 or x.shape[1] != y.shape[1]:
    raise ValueError(f"features must be [N, D] with equal D, got {x.shape} and "
                     f"{y.shape}")
  if subsets < 1:
    raise ValueError(f"subsets must be >= 1, got {subsets}")
  if not 2 <= subset_size <= min(x.shape[0], y.shape[0]):
    raise ValueError(
        f"subset_size must be in [2, min(N1, N2) = "
        f"{min(x.shape[0], y.shape[0])}], got {subset_size}")
  rng = np.random.default_rng(seed)
  values = np.empty((subsets,), np.float64)
  for i in range(subsets):
    xi = x[rng.choice(x.shape[0], subset_size, replace=False)]
    yi = y[rng.choice(y.shape[0], subset_size, replace=False)]
    values[i] = _polynomial_mmd2(xi, yi)
  return float(values.mean()), float(values.std())
