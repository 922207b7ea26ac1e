"""Tests of `ihc_jax.eval.run` with a stand-in pipeline.

The pipeline is a stub with hand-made outputs (no trained networks) and LPIPS
has RANDOM weights; the Inception file is deliberately missing (a real
InceptionV3 forward at 299x299 is too slow for the CPU test budget), which
checks that FID is reported as missing while the other metrics still run.
"""

import json
import types

import ml_collections
import numpy as np
import pytest

from ihc_jax.eval import run as evaluate
from ihc_jax import halftone
from ihc_jax import weights
from ihc_jax.eval import lpips

SIZE = 32


class StubPipeline:
  """Hand-made colorizations: every output is a simple function of inputs."""

  def __init__(self):
    self.calls = []

  def colorize(self, ht, reference=None, *, num_samples=2, seed=0,
               return_intermediates=False):
    self.calls.append((ht.shape, num_samples, seed))
    assert return_intermediates
    b = ht.shape[0]
    inter = {"ihn_gray": np.full((b, SIZE, SIZE, 1), 0.5, np.float32)}
    codes = []
    fused = []
    if reference is not None:
      codes.append("ref")
      fused.append(reference + 0.1)  # Recovery: off by 0.1 everywhere.
      inter["ref_forward"] = reference - 0.1
      inter["ref_inverse"] = reference + 0.2
    for k in range(1, num_samples + 1):
      codes.append(f"rand{k}")
      tint = np.zeros((b, SIZE, SIZE, 3), np.float32)
      tint[..., k % 3] = 0.3
      tint[:, :, : SIZE // 2 * k // num_samples] += 0.2
      fused.append(0.3 + tint)
      # IHN -> C path ignores the code: no diversity.
      inter[f"rand{k}_forward"] = np.full((b, SIZE, SIZE, 3), 0.4, np.float32)
      inter[f"rand{k}_inverse"] = 0.2 + tint
    fused = np.stack(fused, axis=1)
    first = 1 if reference is not None else 0
    return types.SimpleNamespace(
        reference=fused[:, 0] if first else None, samples=fused[:, first:],
        intermediates=inter, codes=codes)


def _ssim_constant(x, y):
  c1, c2 = 0.01 ** 2, 0.03 ** 2
  return ((2 * x * y + c1) * c2) / ((x * x + y * y + c1) * c2)


def test_evaluate_writes_paper_columns_and_reports_missing_fid(tmp_path):
  variables = weights.random_variables_like(lpips.expected_shapes("alex"),
                                            seed=0, init="he_normal")
  for k in range(5):
    variables["params"][f"lin{k}"]["kernel"] = np.abs(
        variables["params"][f"lin{k}"]["kernel"])
  lpips_path = str(tmp_path / "lpips_alex.npz")
  weights.save_variables(lpips_path, variables)
  halftone_config = halftone.default_halftone_config()
  halftone_config.supersample = 1
  config = ml_collections.ConfigDict({
      "halftone": halftone_config,
      "data": {"eval_batch_size": 2},
      "eval": {"every_steps": 10, "lpips_weights": lpips_path,
               "lpips_net": "alex", "num_random": 3, "num_references": 1,
               "diversity_pairs": 7, "exemplar_samples": 16,
               "inception_weights": str(tmp_path / "absent.npz")},
  })
  # Four constant images (0.6 gray) so PSNR/SSIM are known; 2 batches of 2
  # (equal shapes, so everything compiles once).
  images = np.full((4, SIZE, SIZE, 3), 0.6, np.float32)
  pipeline = StubPipeline()
  def baseline(gray, refs, key):  # Cheap stand-in for exemplar transfer.
    del key
    return np.broadcast_to(refs.mean(axis=(1, 2), keepdims=True) - 0.05,
                           gray.shape[:3] + (3,))

  results = evaluate.evaluate(config, str(tmp_path / "run"), pipeline=pipeline,
                              images=images, baseline=baseline)
  # 2 batches, each: one call with random codes + one per reference.
  assert [c[1] for c in pipeline.calls] == [3, 0, 3, 0]
  rows = {row["key"]: row for row in results["rows"]}
  # Recovery off by 0.1 -> MSE 0.01 -> PSNR 20 dB.
  assert rows["full"]["psnr"] == pytest.approx(20.0, abs=1e-3)
  assert rows["ihn_c"]["psnr"] == pytest.approx(20.0, abs=1e-3)
  assert rows["c_ihn"]["psnr"] == pytest.approx(10 * np.log10(1 / 0.04),
                                                abs=1e-3)
  assert rows["full"]["ssim"] == pytest.approx(_ssim_constant(0.7, 0.6),
                                               abs=1e-5)
  # IHN gray 0.5 vs true gray 0.6 -> PSNR 20 dB.
  assert results["ihn_gray"]["psnr"] == pytest.approx(20.0, abs=1e-3)
  # Pair budget 7 of 4 images x 3 pairs (6 + 1); IHN->C ignores the code.
  assert rows["full"]["diversity_pairs"] == 7
  assert rows["full"]["diversity"] > 0
  assert rows["ihn_c"]["diversity"] == pytest.approx(0.0, abs=1e-6)
  # Baseline recovery: mean colour - 0.05 -> MSE 0.0025 -> 26.02 dB.
  assert rows["ihn_exemplar"]["psnr"] == pytest.approx(
      10 * np.log10(1 / 0.0025), abs=1e-3)
  # Generated per row: 4 images x (1 recovery + 3 random + 1 reference).
  assert all(row["num_generated"] == 20 for row in rows.values())
  assert all(row["fid"] is None and row["fid_random"] is None
             for row in rows.values())
  assert list(results["missing"]) == ["FID/KID (InceptionV3)"]
  assert "absent.npz" in results["missing"]["FID/KID (InceptionV3)"]
  assert "convert_eval_weights inception" in results["missing"][
      "FID/KID (InceptionV3)"]
  written = json.loads((tmp_path / "run" / "eval_results.json").read_text())
  assert written["rows"][0]["psnr"] == pytest.approx(20.0, abs=1e-3)
  table = (tmp_path / "run" / "eval_results.md").read_text()
  header = ("| Method | PSNR↑ | SSIM↑ | Diversity↑ | FID↓ | KID↓ "
            "| FID random only↓ |")
  assert header in table
  assert "| Full pipeline (IHN + C + F) | 20.0000 |" in table
  assert "Missing metrics" in table


def test_settings_take_config_then_overrides():
  config = ml_collections.ConfigDict({"eval": {"num_random": 6,
                                               "every_steps": 3}})
  settings = evaluate.settings_from_config(config, num_random=None,
                                           lpips_net="alex")
  assert settings.num_random == 6
  assert settings.lpips_net == "alex"
  assert settings.diversity_pairs == 1900
  with pytest.raises(ValueError, match="num_random"):
    evaluate.settings_from_config(config, num_random=-1)


def test_chained_config_is_evaluated_on_its_last_stage():
  fusion = ml_collections.ConfigDict({"data": {"source": "demo"},
                                      "eval": {"num_random": 2}})
  ihn = ml_collections.ConfigDict({"data": {"source": "folder:/x"}})
  chained = ml_collections.ConfigDict({
      "trainer": "chain", "stage_order": ("ihn", "fusion"),
      "stages": {"ihn": ihn, "fusion": fusion}})
  assert evaluate.stage_config_of(chained) is chained.stages.fusion
  assert evaluate.stage_config_of(fusion) is fusion
  assert evaluate.stage_config_of(None) is None


class SeededPipeline(StubPipeline):
  """Outputs that depend on the halftone and on each image's own seed."""

  def colorize(self, ht, reference=None, *, num_samples=2, seed=0,
               return_intermediates=False):
    out = super().colorize(ht, reference, num_samples=num_samples, seed=seed,
                           return_intermediates=return_intermediates)
    assert len(seed) == ht.shape[0]  # one seed per image
    shift = np.array([np.random.default_rng(s).uniform(-0.05, 0.05)
                      for s in seed], np.float32)[:, None, None, None]
    detail = ht.mean(axis=(1, 2, 3), keepdims=True) * 0.1
    if out.reference is not None:
      out.reference = out.reference + shift + detail
    out.samples = out.samples + shift[:, None] + detail[:, None]
    return out


def test_figures_do_not_depend_on_the_batch_size(tmp_path):
  """3 images (odd) scored in batches of 1, 2 and 4 give the same figures:
  halftones, codes, reference picks and baseline draws follow the image."""
  variables = weights.random_variables_like(lpips.expected_shapes("alex"),
                                            seed=0, init="he_normal")
  lpips_path = str(tmp_path / "lpips_alex.npz")
  weights.save_variables(lpips_path, variables)
  rng = np.random.default_rng(0)
  images = rng.uniform(0.2, 0.8, (3, SIZE, SIZE, 3)).astype(np.float32)

  def baseline(gray, refs, key):  # A random draw from its key.
    import jax  # pylint: disable=g-import-not-at-top
    noise = np.asarray(jax.random.uniform(key, (len(gray), 1, 1, 3))) * 0.1
    return np.broadcast_to(refs.mean(axis=(1, 2), keepdims=True) + noise,
                           gray.shape[:3] + (3,))

  results = []
  for batch in (1, 2, 4):
    config = ml_collections.ConfigDict({
        "halftone": halftone.default_halftone_config(),
        "data": {"eval_batch_size": batch},
        "eval": {"every_steps": 10, "lpips_weights": lpips_path,
                 "lpips_net": "alex", "num_random": 2, "num_references": 1,
                 "diversity_pairs": 100, "exemplar_samples": 16,
                 "inception_weights": str(tmp_path / "absent.npz")},
    })
    results.append(evaluate.evaluate(
        config, str(tmp_path / f"run{batch}"), pipeline=SeededPipeline(),
        images=images, baseline=baseline))
  for other in results[1:]:
    assert other["ihn_gray"] == pytest.approx(results[0]["ihn_gray"])
    for row, want in zip(other["rows"], results[0]["rows"]):
      for column in ("psnr", "ssim", "diversity"):
        assert row[column] == pytest.approx(want[column], rel=1e-5), (
            row["key"], column)
  # The seeds matter (the check above could fail): other seeds, other PSNR.
  assert results[0]["rows"][0]["psnr"] != pytest.approx(
      evaluate.evaluate(config, str(tmp_path / "other"),
                        pipeline=SeededPipeline(), images=images,
                        baseline=baseline, seed=1)["rows"][0]["psnr"],
      rel=1e-5)
