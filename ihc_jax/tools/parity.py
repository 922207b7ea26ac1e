"""Numerical parity of our networks with the official PyTorch code.

  python -m ihc_jax.tools.parity --official-repo /path/to/InverseHalftoneColorization \
      [--weights-dir DIR_WITH_IHN_E_G_F_pth] [--size 256] [--seed 0]

Imports the official model classes from a local checkout (given by the user;
nothing of it is part of ihc_jax), builds IHN, E, G, F and D, loads the
official weights from --weights-dir when given (otherwise random weights, with
BatchNorm statistics and affine parameters randomised too so that they are
exercised), converts every state dict with `ihc_jax.tools.convert_weights`,
runs both implementations in eval mode on the same inputs (same noise, same
z, same edge maps) and prints the max-abs difference per network and for the
whole test.py pipeline (original-code.md §4). Canny is excluded: the edge
maps are computed once (OpenCV on the PyTorch side's images) and fed to both.

torch is required; torchvision is not: the official modules are imported
with `ihc_jax.tools.official_code.import_official` (shared with the
side-by-side benchmark), whose two import shims are documented there.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from ihc_jax import models
from ihc_jax import weights
from ihc_jax.tools import convert_weights
from ihc_jax.tools.official_code import import_official

__all__ = ["PARITY_NETWORKS", "TOLERANCE", "build_networks", "import_official",
           "run_parity"]

TOLERANCE = 1e-4
PARITY_NETWORKS = ("ihn", "encoder", "generator", "fusion", "discriminator")


def _randomise_norms(module: Any, generator: Any) -> None:
  """Random BN affine parameters and running statistics (random-weight runs)."""
  import torch  # pylint: disable=g-import-not-at-top
  for m in module.modules():
    if isinstance(m, torch.nn.BatchNorm2d):
      with torch.no_grad():
        n = m.num_features
        m.weight.copy_(1.0 + 0.2 * torch.randn(n, generator=generator))
        m.bias.copy_(0.1 * torch.randn(n, generator=generator))
        m.running_mean.copy_(0.1 * torch.randn(n, generator=generator))
        m.running_var.copy_(0.5 + torch.rand(n, generator=generator))


def _numpy_state(module: Any) -> dict[str, np.ndarray]:
  """A module's state dict as numpy arrays."""
  return {k: v.detach().cpu().numpy() for k, v in module.state_dict().items()}


def _nchw(x: np.ndarray) -> Any:
  import torch  # pylint: disable=g-import-not-at-top
  return torch.from_numpy(np.ascontiguousarray(np.transpose(x, (0, 3, 1, 2))))


def _nhwc(t: Any) -> np.ndarray:
  return np.transpose(t.detach().cpu().numpy(), (0, 2, 3, 1))


def _canny(gray_nhwc: np.ndarray) -> np.ndarray:
  """Edges as the official code computes them, with [0, 1] clipping first."""
  import cv2  # pylint: disable=g-import-not-at-top
  out = np.zeros_like(gray_nhwc, np.float32)
  for i, image in enumerate(gray_nhwc[..., 0]):
    u8 = (np.clip(image, 0.0, 1.0) * 255.0).astype(np.uint8)
    out[i, ..., 0] = cv2.Canny(u8, 80, 250) / 255.0
  return out


def build_networks(official: dict[str, Any], *, weights_dir: str | None = None,
                   size: int = 256, seed: int = 0,
                   names: Sequence[str] = PARITY_NETWORKS
                   ) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
  """The official networks and ours, with the same weights, in eval mode.

  Args:
    official: `import_official(repo)`.
    weights_dir: folder with IHN.pth, E.pth, G.pth, F.pth (None: random
      weights, with random BatchNorm statistics and affine parameters).
    size: image size; at sizes other than 256 the official E's two Linear
      layers (fixed at 16384 inputs) are replaced by Linear layers of the
      width that size needs (weights then random).
    seed: seed of the random weights.
    names: networks to build, from `PARITY_NETWORKS`.

  Returns:
    (torch modules, Flax modules, Flax variables), each keyed by our network
    name.
  """
  import torch  # pylint: disable=g-import-not-at-top
  torch.manual_seed(seed)
  generator = torch.Generator().manual_seed(seed)
  makers = {"ihn": lambda: official["IHNet"](),
            "encoder": lambda: official["Encoder"](3, 3),
            "generator": lambda: official["G_Unet_add_input"](),
            "fusion": lambda: official["MultipleBasicBlock_4"](6),
            "discriminator": lambda: official["D"]()}
  torch_nets = {name: makers[name]() for name in names}
  if "encoder" in torch_nets and size != 256:
    width = 256 * (size // 32) ** 2
    torch_nets["encoder"].fc = torch.nn.Linear(width, 8)
    torch_nets["encoder"].fcVar = torch.nn.Linear(width, 8)
  files = {"ihn": "IHN.pth", "encoder": "E.pth", "generator": "G.pth", "fusion": "F.pth"}
  for name, net in torch_nets.items():
    if weights_dir and name in files:
      path = os.path.join(weights_dir, files[name])
      net.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    else:
      _randomise_norms(net, generator)
    net.eval()

  cfg = models.default_model_config()
  flax_nets = {name: models.build(name, cfg) for name in torch_nets}
  variables = {}
  for name, net in torch_nets.items():
    converted = convert_weights.convert_state_dict(name, _numpy_state(net), cfg)
    reference = convert_weights.reference_variables(name, cfg, size)
    weights.validate_variables(converted, reference, source=f"converted {name}")
    variables[name] = jax.tree_util.tree_map(jnp.asarray, converted)
  return torch_nets, flax_nets, variables


def run_parity(repo: str, weights_dir: str | None = None, size: int = 256,
               seed: int = 0, batch: int = 1) -> dict[str, float]:
  """Runs every network and the test.py pipeline in both implementations.

  Args:
    repo: official checkout.
    weights_dir: folder with IHN.pth, E.pth, G.pth, F.pth (None: random).
    size: image size (E's official Linear layers need 256).
    seed: seed of weights and inputs.
    batch: batch size.

  Returns:
    Name -> max-abs difference (float32 outputs).
  """
  torch_nets, flax_nets, variables = build_networks(
      import_official(repo), weights_dir=weights_dir, size=size, seed=seed)
  import torch  # pylint: disable=g-import-not-at-top

  rng = np.random.default_rng(seed)
  halftone = (rng.random((batch, size, size, 1)) > 0.5).astype(np.float32)
  reference_image = rng.random((batch, size, size, 3)).astype(np.float32)
  raw_noise = rng.standard_normal((batch, size, size, 8)).astype(np.float32)
  eps = rng.standard_normal((batch, 8)).astype(np.float32)

  gauss = torch.nn.Conv2d(8, 8, 3, padding=1, bias=False)
  with torch.no_grad():
    kernel = torch.tensor([[1.0, 2.0, 1.0], [2.0, 4.0, 2.0], [1.0, 2.0, 1.0]])
    gauss.weight.copy_(kernel.expand(8, 8, 3, 3))
  diffs = {}
  with torch.no_grad():
    noise_t = gauss(_nchw(raw_noise))
  noise = np.asarray(models.filter_noise(jnp.asarray(raw_noise), variant="official"))
  diffs["noise_map"] = float(np.max(np.abs(_nhwc(noise_t) - noise)))

  def ours(name: str, *args: Any, **kwargs: Any) -> Any:
    return flax_nets[name].apply(variables[name], *(jnp.asarray(a) for a in args), **kwargs)

  def max_diff(a: Any, b: Any) -> float:
    return float(np.max(np.abs(np.asarray(a) - np.asarray(b))))

  with torch.no_grad():
    # Per network, on identical inputs.
    t_ihn = torch_nets["ihn"](_nchw(halftone), z=noise_t)
    j_ihn = ours("ihn", halftone, noise, train=False)
    diffs["ihn"] = max(max_diff(_nhwc(t), j) for t, j in zip(t_ihn, j_ihn))
    t_mu, t_logvar = torch_nets["encoder"](_nchw(reference_image))
    j_mu, j_logvar = ours("encoder", reference_image)
    diffs["encoder"] = max(max_diff(t_mu.numpy(), j_mu), max_diff(t_logvar.numpy(), j_logvar))
    z = (t_mu.numpy() + eps * np.exp(0.5 * t_logvar.numpy())).astype(np.float32)
    edge = _canny(halftone)
    t_g = torch_nets["generator"](_nchw(halftone), _nchw(edge), torch.from_numpy(z))
    diffs["generator"] = max_diff(_nhwc(t_g), ours("generator", halftone, edge, z, train=False))
    color_a = reference_image
    color_b = np.clip(reference_image[:, ::-1] + 0.1, 0, 1).astype(np.float32)
    t_f = torch_nets["fusion"](_nchw(color_a), _nchw(color_b))
    diffs["fusion"] = max_diff(_nhwc(t_f), ours("fusion", color_a, color_b))
    t_d = torch_nets["discriminator"](_nchw(reference_image), torch.from_numpy(z))
    j_d = ours("discriminator", reference_image, z, train=False)
    diffs["discriminator"] = max(max_diff(_nhwc(t), j) for t, j in zip(t_d, j_d))

    # The test.py pipeline with the reference code z; edges shared.
    gray_t = t_ihn[-1]
    gray_edge = _canny(_nhwc(gray_t))
    c_fwd_t = torch_nets["generator"](gray_t, _nchw(gray_edge), torch.from_numpy(z))
    c_ht_t = torch_nets["generator"](_nchw(halftone), _nchw(edge), torch.from_numpy(z))
    c_inv_t = torch.cat([torch_nets["ihn"](c_ht_t[:, c:c + 1], z=noise_t)[-1]
                         for c in range(3)], 1)
    out_t = _nhwc(torch_nets["fusion"](c_fwd_t, c_inv_t))

  gray_j = j_ihn[-1]
  c_fwd_j = ours("generator", gray_j, gray_edge, z, train=False)
  c_ht_j = ours("generator", halftone, edge, z, train=False)
  c_inv_j = jnp.concatenate([ours("ihn", c_ht_j[..., c:c + 1], noise, train=False)[-1]
                             for c in range(3)], axis=-1)
  out_j = ours("fusion", c_fwd_j, c_inv_j)
  diffs["pipeline"] = max_diff(out_t, out_j)
  diffs["pipeline_output_absmax"] = float(np.max(np.abs(out_t)))
  return diffs


def main(argv: Sequence[str] | None = None) -> None:
  """Command line entry point."""
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n", maxsplit=1)[0])
  parser.add_argument("--official-repo", required=True,
                      help="local checkout of ccc870206/InverseHalftoneColorization")
  parser.add_argument("--weights-dir", default=None,
                      help="folder with the official IHN.pth, E.pth, G.pth, F.pth")
  parser.add_argument("--size", type=int, default=256)
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--tolerance", type=float, default=TOLERANCE)
  args = parser.parse_args(argv)
  diffs = run_parity(args.official_repo, args.weights_dir, args.size, args.seed)
  weights_kind = "official" if args.weights_dir else "random"
  print(f"max |torch - jax| at {args.size}x{args.size}, {weights_kind} weights:")
  failed = []
  for name, value in diffs.items():
    checked = not name.endswith("absmax")
    status = "" if not checked else ("ok" if value <= args.tolerance else "FAIL")
    print(f"  {name:24s} {value:.3e} {status}")
    if checked and value > args.tolerance:
      failed.append(name)
  if failed:
    sys.exit(f"parity above {args.tolerance:g}: {', '.join(failed)}")


if __name__ == "__main__":
  main()
