"""eval_results.{json,md}: evaluation results as JSON and a Markdown table."""

from __future__ import annotations

import json
import os
from typing import Any

RESULTS_JSON = "eval_results.json"
RESULTS_MD = "eval_results.md"


def _fmt(value: float | None, digits: int) -> str:
  return "n/a" if value is None else f"{value:.{digits}f}"


def results_markdown(results: dict[str, Any]) -> str:
  """The results as a Markdown table in the paper's columns."""
  lines = [
      f"# Evaluation of {results['workdir']}",
      "",
      f"{results['num_images']} held-out images. PSNR/SSIM: recovery scheme "
      "vs ground truth. Diversity: mean LPIPS over pairs of random-scheme "
      "colorizations of the same input. FID/KID: colorizations of all three "
      "schemes vs the real images (paper Table 1); FID random only: the "
      "random scheme alone (paper Fig. 4).",
      "",
      "| Method | PSNR↑ | SSIM↑ | Diversity↑ | FID↓ | KID↓ "
      "| FID random only↓ |",
      "|---|---|---|---|---|---|---|",
  ]
  for row in results["rows"]:
    lines.append(
        f"| {row['method']} | {_fmt(row['psnr'], 4)} | {_fmt(row['ssim'], 4)} "
        f"| {_fmt(row['diversity'], 4)} | {_fmt(row['fid'], 2)} "
        f"| {_fmt(row['kid'], 4)} | {_fmt(row['fid_random'], 2)} |")
  gray = results["ihn_gray"]
  lines += ["", f"IHN gray vs true gray: PSNR {_fmt(gray['psnr'], 4)} dB, "
            f"SSIM {_fmt(gray['ssim'], 4)}."]
  counts = ", ".join(f"{r['key']}: {r['num_generated']} images, "
                     f"{r['diversity_pairs']} pairs" for r in results["rows"])
  lines += ["", f"Generated per row: {counts}."]
  if results["missing"]:
    lines += ["", "## Missing metrics", ""]
    for name, message in results["missing"].items():
      lines.append(f"- {name}: {message}")
  settings = results["settings"]
  shown = {k: v for k, v in settings.items()}
  lines += ["", "## Settings", "", "```", json.dumps(shown, indent=2,
                                                     sort_keys=True), "```", ""]
  return "\n".join(lines)


def write_results(results: dict[str, Any], folder: str) -> None:
  """Writes eval_results.json and eval_results.md into `folder`."""
  os.makedirs(folder, exist_ok=True)
  with open(os.path.join(folder, RESULTS_JSON), "w") as f:
    json.dump(results, f, indent=2, sort_keys=True)
  with open(os.path.join(folder, RESULTS_MD), "w") as f:
    f.write(results_markdown(results))
