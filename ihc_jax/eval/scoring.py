"""Running sums of the paper's evaluation and the rows they become.

`Scorer` collects, batch by batch, PSNR/SSIM of the recovery scheme, LPIPS
pairs of the random scheme (Diversity) and Inception features of every
generated image; `results` turns them into the dict of eval_results.json
(FID/KID from the features). Used by `ihc_jax.eval.run`, which decides what
is generated.
"""

from __future__ import annotations

import itertools
import math
import os
from typing import Any

import ml_collections
import numpy as np

from ihc_jax import metrics
from ihc_jax.eval import fid as fid_lib
from ihc_jax.eval import inception as inception_lib
from ihc_jax.eval import lpips as lpips_lib

# (key, title); keys are also the JSON row ids.
ROWS = (
    ("full", "Full pipeline (IHN + C + F)"),
    ("ihn_c", "IHN -> C only"),
    ("c_ihn", "C -> IHN only"),
    ("ihn_exemplar", "IHN + exemplar transfer (no trained colorizer)"),
)


class Row:
  """Running sums of one table row."""

  def __init__(self):
    self.psnr: list[float] = []
    self.ssim: list[float] = []
    self.pairs: list[float] = []
    self.features: list[np.ndarray] = []
    self.random_features: list[np.ndarray] = []
    self.num_generated = 0


def clip(x: Any) -> np.ndarray:
  """float32 in [0, 1], as an image is saved."""
  return np.clip(np.asarray(x, np.float32), 0.0, 1.0)


def finite_or_none(value: float) -> float | None:
  """`value` as a float; None (JSON null) if it is missing or not finite."""
  return float(value) if value is not None and math.isfinite(value) else None


class Scorer:
  """Running sums of every row, the IHN gray and the real images' features."""

  def __init__(self, settings: ml_collections.ConfigDict, lpips_net: Any,
               inception: Any):
    self.settings = settings
    self.lpips_net = lpips_net
    self.inception = inception
    self.rows = {key: Row() for key, _ in ROWS}
    self.gray_psnr: list[float] = []
    self.gray_ssim: list[float] = []
    self.real_features: list[np.ndarray] = []
    self.pairs_left = int(settings.diversity_pairs)

  def features(self, x: np.ndarray) -> np.ndarray | None:
    if self.inception is None:
      return None
    return inception_lib.inception_features(
        self.inception, x, batch_size=int(self.settings.inception_batch_size))

  def gray(self, ihn_gray: np.ndarray, gray: np.ndarray) -> None:
    self.gray_psnr += list(np.asarray(metrics.psnr(ihn_gray, gray,
                                                   reduction="none")))
    self.gray_ssim += list(np.asarray(metrics.ssim(ihn_gray, gray,
                                                   reduction="none")))

  def real(self, truth: np.ndarray) -> None:
    real = self.features(truth)
    if real is not None:
      self.real_features.append(real)

  def generated(self, row_key: str, generated: np.ndarray,
                random: bool = False) -> None:
    row = self.rows[row_key]
    row.num_generated += len(generated)
    feats = self.features(generated)
    if feats is not None:
      row.features.append(feats)
      if random:
        row.random_features.append(feats)

  def recovery(self, row_key: str, recovered: np.ndarray,
               truth: np.ndarray) -> None:
    row = self.rows[row_key]
    row.psnr += list(np.asarray(metrics.psnr(recovered, truth,
                                             reduction="none")))
    row.ssim += list(np.asarray(metrics.ssim(recovered, truth,
                                             reduction="none")))
    self.generated(row_key, recovered)

  def random(self, row_key: str, samples: list[np.ndarray],
             budget: int) -> None:
    for sample in samples:
      self.generated(row_key, sample, random=True)
    if self.lpips_net is None or budget <= 0:
      return
    net, variables = self.lpips_net
    distances = []
    for i, j in itertools.combinations(range(len(samples)), 2):
      distances.append(np.asarray(lpips_lib.lpips_distance(
          variables, samples[i], samples[j], net=net)))
    if distances:
      # Pair order: image by image, then sample pair (i, j).
      per_image = np.stack(distances, axis=1).reshape(-1)
      self.rows[row_key].pairs += list(per_image[:budget])


def row_entry(key_name: str, title: str, row: Row,
               real: np.ndarray | None,
               settings: ml_collections.ConfigDict) -> dict[str, Any]:
  """One row of the results: PSNR/SSIM, Diversity and FID/KID."""
  entry = {"key": key_name, "method": title,
           "psnr": finite_or_none(np.mean(row.psnr)),
           "ssim": finite_or_none(np.mean(row.ssim)),
           "diversity": (finite_or_none(np.mean(row.pairs))
                         if row.pairs else None),
           "diversity_pairs": len(row.pairs),
           "num_generated": row.num_generated,
           "fid": None, "fid_random": None, "kid": None, "kid_std": None}
  if real is not None and row.features:
    fake = np.concatenate(row.features)
    random_fake = (np.concatenate(row.random_features)
                   if row.random_features else np.zeros((0, 1)))
    if len(real) >= 2 and len(random_fake) >= 2:
      entry["fid_random"] = fid_lib.fid_from_features(real, random_fake)
    if len(real) >= 2 and len(fake) >= 2:
      entry["fid"] = fid_lib.fid_from_features(real, fake)
      size = min(int(settings.kid_subset_size), len(real), len(fake))
      kid, kid_std = fid_lib.kernel_inception_distance(
          real, fake, subsets=int(settings.kid_subsets), subset_size=size,
          seed=int(settings.seed))
      entry.update(kid=kid, kid_std=kid_std, kid_subset_size=size)
  return entry


def results(scorer: Scorer, workdir: str, num_images: int,
             missing: dict[str, str]) -> dict[str, Any]:
  """The results dict of eval_results.json."""
  results = {
      "workdir": os.fspath(workdir),
      "num_images": num_images,
      "settings": scorer.settings.to_dict(),
      "ihn_gray": {"psnr": finite_or_none(np.mean(scorer.gray_psnr)),
                   "ssim": finite_or_none(np.mean(scorer.gray_ssim))},
      "rows": [],
      "missing": missing,
  }
  real = (np.concatenate(scorer.real_features) if scorer.real_features
          else None)
  for key_name, title in ROWS:
    results["rows"].append(row_entry(key_name, title, scorer.rows[key_name],
                                      real, scorer.settings))
  return results
