"""Converts the public PyTorch weights of the evaluation networks to `.npz`.

Run once, on any machine with `torch` (the `convert` extra); the result is a
neutral `.npz` (no pickle) read by `ihc_jax.eval`:

  # LPIPS v0.1, VGG16 backbone (torchvision) + linear heads (lpips package)
  python -m ihc_jax.tools.convert_eval_weights lpips --net=vgg \
      --backbone=vgg16-397923af.pth --heads=lpips/weights/v0.1/vgg.pth \
      --out=weights/lpips_vgg.npz
  # LPIPS v0.1, AlexNet backbone
  python -m ihc_jax.tools.convert_eval_weights lpips --net=alex \
      --backbone=alexnet-owt-7be5be79.pth --heads=lpips/weights/v0.1/alex.pth \
      --out=weights/lpips_alex.npz
  # FID InceptionV3 (pytorch-fid)
  python -m ihc_jax.tools.convert_eval_weights inception \
      --src=pt_inception-2015-12-05-6726825d.pth --out=weights/inception_fid.npz

The converted variables are validated against `jax.eval_shape` of the Flax
networks; keys the metrics do not use (classifiers, the auxiliary head,
`num_batches_tracked`) are dropped, and any other leftover key is an error.
The `*_to_torch` functions are the inverse mappings (used by the tests).
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ihc_jax import weights
from ihc_jax.eval import inception as inception_lib
from ihc_jax.eval import lpips as lpips_lib

StateDict = dict[str, np.ndarray]


def _conv_to_flax(weight: np.ndarray) -> np.ndarray:
  # PyTorch OIHW -> Flax HWIO.
  return np.ascontiguousarray(np.transpose(weight, (2, 3, 1, 0)))


def _conv_to_torch(kernel: np.ndarray) -> np.ndarray:
  return np.ascontiguousarray(np.transpose(kernel, (3, 2, 0, 1)))


def _strip_prefix(state: Mapping[str, Any]) -> StateDict:
  """Drops a `module.` prefix (DataParallel) and converts values to numpy."""
  out = {}
  for key, value in state.items():
    if key.startswith("module."):
      key = key[len("module."):]
    out[key] = np.asarray(value)
  return out


def load_torch_state_dict(path: str) -> StateDict:
  """Reads a PyTorch state dict safely (`weights_only=True`) into numpy.

  Args:
    path: a `.pth` file holding a state dict of tensors.

  Returns:
    key -> float numpy array.
  """
  try:
    import torch  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise ImportError(
        "Converting PyTorch weights needs torch: pip install 'ihc_jax[convert]'"
    ) from e
  state = torch.load(path, map_location="cpu", weights_only=True)
  if isinstance(state, Mapping) and "state_dict" in state:
    state = state["state_dict"]
  if not isinstance(state, Mapping):
    raise ValueError(
        f"{path}: expected a state dict, got {type(state).__name__}")
  return _strip_prefix(
      {k: v.detach().cpu().numpy() for k, v in state.items()})


def _backbone_index(net: str) -> dict[str, int]:
  if net == "vgg":
    return lpips_lib.VGG16_TORCH_INDEX
  if net == "alex":
    return lpips_lib.ALEXNET_TORCH_INDEX
  raise ValueError(f"net must be 'vgg' or 'alex', got {net!r}")


def lpips_from_torch(backbone: Mapping[str, Any], heads: Mapping[str, Any], *,
                     net: str) -> dict[str, Any]:
  """Builds LPIPS variables from torchvision and lpips-package state dicts.

  Args:
    backbone: torchvision VGG16 / AlexNet state dict (`features.N.weight`,
      `features.N.bias`; `classifier.*` is ignored).
    heads: lpips-package linear heads (`lin{k}.model.1.weight`, [1, C, 1, 1]).
    net: "vgg" or "alex".

  Returns:
    {"params": {"net": {...}, "lin0": ..., ..., "lin4": ...}}, validated.
  """
  index = _backbone_index(net)
  backbone = _strip_prefix(backbone)
  heads = _strip_prefix(heads)
  used = set()
  params: dict[str, Any] = {"net": {}}
  for name, i in index.items():
    w_key, b_key = f"features.{i}.weight", f"features.{i}.bias"
    for key in (w_key, b_key):
      if key not in backbone:
        raise ValueError(f"LPIPS-{net} backbone: key {key!r} ({name}) missing")
    params["net"][name] = {"kernel": _conv_to_flax(backbone[w_key]),
                           "bias": backbone[b_key].copy()}
    used.update((w_key, b_key))
  leftover = sorted(k for k in set(backbone) - used
                    if not k.startswith("classifier."))
  if leftover:
    raise ValueError(f"LPIPS-{net} backbone: unexpected keys {leftover[:8]}")
  for k in range(len(lpips_lib.LAYER_CHANNELS[net])):
    key = f"lin{k}.model.1.weight"
    if key not in heads:
      raise ValueError(f"LPIPS-{net} heads: key {key!r} missing "
                       f"(got {sorted(heads)[:8]})")
    weight = heads[key]
    if np.any(weight < 0):
      raise ValueError(f"LPIPS-{net} heads: {key} has negative weights; the "
                       "published v0.1 heads are non-negative")
    params[f"lin{k}"] = {"kernel": _conv_to_flax(weight)}
  extra = sorted(set(heads) - {f"lin{k}.model.1.weight" for k in range(5)})
  if extra:
    raise ValueError(f"LPIPS-{net} heads: unexpected keys {extra[:8]}")
  variables = {"params": params}
  weights.validate_variables(variables, lpips_lib.expected_shapes(net),
                             source=f"LPIPS-{net}")
  return variables


def lpips_to_torch(variables: Mapping[str, Any], *,
                   net: str) -> tuple[StateDict, StateDict]:
  """Inverse of `lpips_from_torch`: (backbone state dict, heads state dict)."""
  params = variables["params"]
  backbone = {}
  for name, i in _backbone_index(net).items():
    backbone[f"features.{i}.weight"] = _conv_to_torch(
        np.asarray(params["net"][name]["kernel"]))
    backbone[f"features.{i}.bias"] = np.asarray(params["net"][name]["bias"])
  heads = {f"lin{k}.model.1.weight": _conv_to_torch(
      np.asarray(params[f"lin{k}"]["kernel"]))
           for k in range(len(lpips_lib.LAYER_CHANNELS[net]))}
  return backbone, heads


# Inception: torch leaf name -> (collection, flax leaf name).
_INCEPTION_LEAVES = {
    ("conv", "weight"): ("params", "kernel"),
    ("bn", "weight"): ("params", "scale"),
    ("bn", "bias"): ("params", "bias"),
    ("bn", "running_mean"): ("batch_stats", "mean"),
    ("bn", "running_var"): ("batch_stats", "var"),
}
_INCEPTION_IGNORED = re.compile(r"^(fc\.|AuxLogits\.)|num_batches_tracked$")


def inception_from_torch(state: Mapping[str, Any]) -> dict[str, Any]:
  """Builds FID Inception variables from pytorch-fid's state dict.

  Args:
    state: the state dict of `pt_inception-2015-12-05-6726825d.pth`
      (`Mixed_5b.branch1x1.conv.weight`, `...bn.running_var`, ...; `fc.*`,
      `AuxLogits.*` and `num_batches_tracked` are ignored).

  Returns:
    {"params": ..., "batch_stats": ...}, validated against `FIDInceptionV3`.
  """
  state = _strip_prefix(state)
  flat = {}
  unknown = []
  for key, value in state.items():
    if _INCEPTION_IGNORED.search(key):
      continue
    parts = key.split(".")
    leaf = tuple(parts[-2:])
    if len(parts) < 3 or leaf not in _INCEPTION_LEAVES:
      unknown.append(key)
      continue
    collection, name = _INCEPTION_LEAVES[leaf]
    if leaf == ("conv", "weight"):
      if value.ndim != 4:
        raise ValueError(f"Inception: {key} has shape {value.shape}, expected a"
                         " 4-d OIHW conv weight")
      value = _conv_to_flax(value)
    flat["/".join([collection, *parts[:-1], name])] = np.array(value)
  if unknown:
    raise ValueError(f"Inception: unexpected keys {sorted(unknown)[:8]}")
  variables = weights.unflatten_variables(flat)
  weights.validate_variables(variables, inception_lib.expected_shapes(),
                             source="FID InceptionV3")
  return variables


def inception_to_torch(variables: Mapping[str, Any]) -> StateDict:
  """Inverse of `inception_from_torch` (without the ignored keys)."""
  inverse = {v: k for k, v in _INCEPTION_LEAVES.items()}
  state = {}
  for key, value in weights.flatten_variables(variables).items():
    collection, *path, name = key.split("/")
    module, leaf = inverse[(collection, name)]
    if path[-1] != module:
      raise ValueError(f"Inception: {key} is not under a {module!r} module")
    if leaf == "weight" and module == "conv":
      value = _conv_to_torch(value)
    state[".".join([*path, leaf])] = np.asarray(value)
  return state


def main(argv: Sequence[str] | None = None) -> int:
  """Command line entry point (see the module docstring)."""
  parser = argparse.ArgumentParser(
      prog="python -m ihc_jax.tools.convert_eval_weights",
      description="Convert LPIPS / FID-Inception PyTorch weights to .npz.")
  sub = parser.add_subparsers(dest="which", required=True)
  lp = sub.add_parser("lpips", help="LPIPS v0.1 backbone + linear heads")
  lp.add_argument("--net", choices=("vgg", "alex"), default="vgg")
  lp.add_argument("--backbone", required=True,
                  help="torchvision vgg16-397923af.pth or "
                  "alexnet-owt-7be5be79.pth")
  lp.add_argument("--heads", required=True,
                  help="lpips package weights/v0.1/{vgg,alex}.pth")
  lp.add_argument("--out", required=True, help="output .npz")
  inc = sub.add_parser("inception", help="pytorch-fid InceptionV3")
  inc.add_argument("--src", required=True,
                   help="pt_inception-2015-12-05-6726825d.pth")
  inc.add_argument("--out", required=True, help="output .npz")
  args = parser.parse_args(argv)
  if args.which == "lpips":
    variables = lpips_from_torch(load_torch_state_dict(args.backbone),
                                 load_torch_state_dict(args.heads),
                                 net=args.net)
  else:
    variables = inception_from_torch(load_torch_state_dict(args.src))
  weights.save_variables(args.out, variables)
  count = sum(v.size for v in weights.flatten_variables(variables).values())
  print(f"wrote {args.out}: {count} values")
  return 0


if __name__ == "__main__":
  sys.exit(main())
