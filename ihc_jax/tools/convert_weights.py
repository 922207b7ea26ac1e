"""Converts the official PyTorch checkpoints to neutral Flax weight files.

  python -m ihc_jax.tools.convert_weights --network ihn --input IHN.pth --output ihn.npz
  (console script: ihc-convert-weights)

Networks: ihn (IHN.pth), generator (G.pth), encoder (E.pth), fusion (F.pth)
from the official release; discriminator and histogram for checkpoints of the
official classes (none were released); vgg19 for torchvision's
`vgg19-dcbb9e9d.pth`.

The mapping is pure numpy (`convert_state_dict`: state dict of numpy arrays ->
{"params", "batch_stats"}) and has an exact inverse (`export_state_dict`), so
it is testable without torch. Conventions: conv OIHW -> HWIO; Linear
(out, in) -> (in, out), with E's rows permuted from PyTorch's NCHW flatten to
our NHWC flatten; BatchNorm weight/bias/running_mean/running_var ->
params scale/bias and batch_stats mean/var; num_batches_tracked is dropped.
Every official key must be used and every Flax variable filled, and the
result is validated against `jax.eval_shape(model.init, ...)` before saving.
torch is only needed to read .pth files (`pip install torch`).
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import sys
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from ihc_jax import models
from ihc_jax import weights

NETWORKS = ("ihn", "generator", "encoder", "discriminator", "fusion", "histogram", "vgg19")
_IGNORED_SUFFIXES = (".num_batches_tracked",)


@dataclasses.dataclass(frozen=True)
class LayerMap:
  """One PyTorch layer <-> one Flax submodule.

  Attributes:
    kind: "conv", "bn" or "linear_nchw" (Linear after a flattened NCHW map).
    torch_prefix: state-dict prefix, e.g. "Unet.model.0".
    flax_path: submodule path in the Flax tree, e.g. ("unet", "down_0").
    bias: whether the layer has a bias (conv).
    channels: for linear_nchw, channels of the flattened feature map.
  """
  kind: str
  torch_prefix: str
  flax_path: tuple[str, ...]
  bias: bool = True
  channels: int = 0


def _unet_spec(cfg: Any, torch_root: str, flax_root: str, dense: bool) -> list[LayerMap]:
  """Layer map of `UNet` vs the nested official `UnetBlock`s."""
  spec = []
  innermost = cfg.num_downs - 1
  base = torch_root
  for level in range(cfg.num_downs):
    if level == 1:
      base = f"{torch_root}.model.1"
    elif level > 1:
      base = f"{base}.model.3"
    down = (flax_root, f"down_{level}")
    up = (flax_root, f"up_{level}")
    if level == 0:
      spec += [LayerMap("conv", f"{base}.model.0", down),
               LayerMap("conv", f"{base}.model.5", up)]
    elif level < innermost:
      spec += [LayerMap("conv", f"{base}.model.1", down),
               LayerMap("bn", f"{base}.model.2", (flax_root, f"down_norm_{level}")),
               LayerMap("conv", f"{base}.model.7", up),
               LayerMap("bn", f"{base}.model.8", (flax_root, f"up_norm_{level}"))]
    elif dense:
      spec.append(LayerMap("conv", f"{base}.down.1", down))
      for j in range(3):
        layer = f"{base}.block_1.layer.{j}"
        node = (flax_root, f"dense_{j}")
        spec += [LayerMap("bn", f"{layer}.bn1", node + ("norm1",)),
                 LayerMap("conv", f"{layer}.conv1", node + ("conv1",), bias=False),
                 LayerMap("bn", f"{layer}.bn2", node + ("norm2",)),
                 LayerMap("conv", f"{layer}.conv2", node + ("conv2",), bias=False)]
      spec += [LayerMap("bn", f"{base}.trans_1.bn1", (flax_root, "transition", "norm")),
               LayerMap("conv", f"{base}.trans_1.conv1", (flax_root, "transition", "conv"),
                        bias=False),
               LayerMap("conv", f"{base}.up.3", up),
               LayerMap("bn", f"{base}.up.4", (flax_root, f"up_norm_{level}"))]
    else:
      spec += [LayerMap("conv", f"{base}.model.1", down),
               LayerMap("conv", f"{base}.model.5", up),
               LayerMap("bn", f"{base}.model.6", (flax_root, f"up_norm_{level}"))]
  return spec


def network_spec(network: str, cfg: ml_collections.ConfigDict) -> list[LayerMap]:
  """The layer map of one network (not vgg19/histogram, which map themselves).

  Args:
    network: "ihn", "generator", "encoder", "discriminator" or "fusion".
    cfg: the network's config section (e.g. `default_model_config().ihn`).

  Returns:
    List of `LayerMap`s covering every parameter of the network.
  """
  if network == "ihn":
    if not cfg.dense_innermost or cfg.get("dense_layers", 3) != 3:
      raise ValueError("the official IHN has a 3-layer dense innermost block")
    spec = _unet_spec(cfg, "Unet.Unet", "content", dense=True)
    spec.append(LayerMap("conv", "n64s1.n64s1/c", ("detail_in",), bias=False))
    for i in range(cfg.detail_blocks):
      for j in (1, 2):
        spec.append(LayerMap("conv", f"dn64s1.{i}.residual.dn64s1/c{j}/{i}",
                             (f"detail_block_{i}", f"conv{j}"), bias=False))
    spec += [LayerMap("conv", "n256s1.n256s1/2", ("detail_expand",), bias=False),
             LayerMap("conv", "out.out", ("detail_out",), bias=False)]
    return spec
  if network == "generator":
    return _unet_spec(cfg, "Unet", "unet", dense=False)
  if network == "encoder":
    spec = [LayerMap("conv", "enc.1", ("conv_in",))]
    for i in range(cfg.num_downsamples):
      spec.append(LayerMap("conv", f"enc.{4 + 3 * i}", (f"down_{i}",)))
    first_res = 4 + 3 * cfg.num_downsamples
    for i in range(cfg.num_residual_blocks):
      spec += [LayerMap("conv", f"enc.{first_res + i}.conv_block.1", (f"res_{i}", "conv1")),
               LayerMap("conv", f"enc.{first_res + i}.conv_block.5", (f"res_{i}", "conv2"))]
    channels = cfg.ngf * 2**cfg.num_downsamples
    spec += [LayerMap("linear_nchw", "fc", ("mu",), channels=channels),
             LayerMap("linear_nchw", "fcVar", ("logvar",), channels=channels)]
    return spec
  if network == "discriminator":
    spec = []
    for s in range(cfg.num_scales):
      root = f"model_{s}"
      node = f"scale_{s}"
      spec.append(LayerMap("conv", f"{root}.0", (node, "conv_0")))
      for n in range(1, cfg.n_layers + 1):
        spec += [LayerMap("conv", f"{root}.{2 + 3 * (n - 1)}", (node, f"conv_{n}")),
                 LayerMap("bn", f"{root}.{3 + 3 * (n - 1)}", (node, f"norm_{n}"))]
      spec.append(LayerMap("conv", f"{root}.{2 + 3 * cfg.n_layers}",
                           (node, f"conv_{cfg.n_layers + 1}")))
    return spec
  if network == "fusion":
    if cfg.num_blocks > 3:
      raise ValueError("the official fusion network has at most 3 basic blocks")
    spec = [LayerMap("conv", "block1.0", ("conv_in",))]
    for i in range(cfg.num_blocks):
      spec += [LayerMap("conv", f"block{2 + i}.conv1", (f"block_{i}", "conv1"), bias=False),
               LayerMap("conv", f"block{2 + i}.conv2", (f"block_{i}", "conv2"), bias=False)]
    spec.append(LayerMap("conv", "block5.0", ("conv_out",)))
    return spec
  raise ValueError(f"no layer map for network {network!r}")


def _set(tree: dict[str, Any], path: Sequence[str], value: Any) -> None:
  for part in path[:-1]:
    tree = tree.setdefault(part, {})
  tree[path[-1]] = value


def _get(tree: Mapping[str, Any], path: Sequence[str], what: str) -> np.ndarray:
  node = tree
  for part in path:
    if not isinstance(node, Mapping) or part not in node:
      raise KeyError(f"Flax variables lack {'/'.join(path)} ({what})")
    node = node[part]
  return np.asarray(node, np.float32)


def _nchw_rows_to_nhwc(weight: np.ndarray, channels: int, key: str) -> np.ndarray:
  """Linear weight (out, C*h*w) in NCHW flatten order -> kernel (h*w*C, out)."""
  out_features, in_features = weight.shape
  if in_features % channels:
    raise ValueError(f"{key}: {in_features} inputs is not a multiple of {channels} channels")
  side = math.isqrt(in_features // channels)
  if side * side * channels != in_features:
    raise ValueError(f"{key}: {in_features} inputs is not {channels} x a square map")
  kernel = weight.reshape(out_features, channels, side, side).transpose(2, 3, 1, 0)
  return kernel.reshape(in_features, out_features)


def _nhwc_rows_to_nchw(kernel: np.ndarray, channels: int) -> np.ndarray:
  in_features, out_features = kernel.shape
  side = math.isqrt(in_features // channels)
  weight = kernel.reshape(side, side, channels, out_features).transpose(3, 2, 0, 1)
  return weight.reshape(out_features, in_features)


def apply_spec(state_dict: Mapping[str, Any], spec: Sequence[LayerMap]) -> dict[str, Any]:
  """Maps a PyTorch state dict (numpy arrays) to Flax variables with a layer map.

  Args:
    state_dict: official key -> array.
    spec: from `network_spec`.

  Returns:
    {"params": ..., "batch_stats": ...} of float32 numpy arrays
    ("batch_stats" only if the network has BatchNorm).

  Raises:
    KeyError: official keys missing from the state dict, or keys left unused.
  """
  params: dict[str, Any] = {}
  stats: dict[str, Any] = {}
  used = set()
  missing = []

  def take(key: str) -> np.ndarray | None:
    if key not in state_dict:
      missing.append(key)
      return None
    used.add(key)
    return np.asarray(state_dict[key], np.float32)

  for layer in spec:
    p = layer.torch_prefix
    if layer.kind == "conv":
      weight = take(f"{p}.weight")
      if weight is not None:
        _set(params, layer.flax_path + ("kernel",), weight.transpose(2, 3, 1, 0))
      if layer.bias:
        bias = take(f"{p}.bias")
        if bias is not None:
          _set(params, layer.flax_path + ("bias",), bias)
    elif layer.kind == "bn":
      for torch_name, collection, flax_name in (
          ("weight", params, "scale"), ("bias", params, "bias"),
          ("running_mean", stats, "mean"), ("running_var", stats, "var")):
        value = take(f"{p}.{torch_name}")
        if value is not None:
          _set(collection, layer.flax_path + (flax_name,), value)
    elif layer.kind == "linear_nchw":
      weight, bias = take(f"{p}.weight"), take(f"{p}.bias")
      if weight is not None:
        _set(params, layer.flax_path + ("kernel",),
             _nchw_rows_to_nhwc(weight, layer.channels, f"{p}.weight"))
      if bias is not None:
        _set(params, layer.flax_path + ("bias",), bias)
    else:
      raise ValueError(f"unknown layer kind {layer.kind!r}")
  unused = sorted(k for k in state_dict
                  if k not in used and not k.endswith(_IGNORED_SUFFIXES))
  if missing or unused:
    raise KeyError(
        "state dict does not match the official network: "
        f"missing {missing or 'none'}; unused {unused or 'none'}")
  variables = {"params": params}
  if stats:
    variables["batch_stats"] = stats
  return variables


def invert_spec(variables: Mapping[str, Any], spec: Sequence[LayerMap]) -> dict[str, np.ndarray]:
  """Inverse of `apply_spec`: Flax variables -> official-named numpy state dict.

  Args:
    variables: {"params": ..., "batch_stats": ...}.
    spec: from `network_spec`.

  Returns:
    key -> float32 array (BatchNorm layers also get num_batches_tracked = 0).
  """
  params = variables["params"]
  stats = variables.get("batch_stats", {})
  out: dict[str, np.ndarray] = {}
  for layer in spec:
    p, path = layer.torch_prefix, layer.flax_path
    if layer.kind == "conv":
      out[f"{p}.weight"] = _get(params, path + ("kernel",), p).transpose(3, 2, 0, 1)
      if layer.bias:
        out[f"{p}.bias"] = _get(params, path + ("bias",), p)
    elif layer.kind == "bn":
      out[f"{p}.weight"] = _get(params, path + ("scale",), p)
      out[f"{p}.bias"] = _get(params, path + ("bias",), p)
      out[f"{p}.running_mean"] = _get(stats, path + ("mean",), p)
      out[f"{p}.running_var"] = _get(stats, path + ("var",), p)
      out[f"{p}.num_batches_tracked"] = np.array(0, np.int64)
    elif layer.kind == "linear_nchw":
      out[f"{p}.weight"] = _nhwc_rows_to_nchw(_get(params, path + ("kernel",), p),
                                              layer.channels)
      out[f"{p}.bias"] = _get(params, path + ("bias",), p)
  # np.ascontiguousarray would turn the 0-d num_batches_tracked into shape (1,).
  return {k: np.require(v, requirements='C') for k, v in out.items()}


def _section(network: str, cfg: ml_collections.ConfigDict | None) -> Any:
  if cfg is None:
    cfg = models.default_model_config()
  if isinstance(cfg, ml_collections.ConfigDict) and network in cfg:
    return cfg[network]
  return cfg


def convert_state_dict(network: str, state_dict: Mapping[str, Any],
                       cfg: ml_collections.ConfigDict | None = None) -> dict[str, Any]:
  """Official PyTorch state dict (numpy arrays) -> Flax variables.

  Args:
    network: one of `NETWORKS`.
    state_dict: key -> numpy array.
    cfg: model config or the network's section; default: the official sizes.

  Returns:
    {"params": ...} (plus "batch_stats" where the network has BatchNorm).
  """
  if network == "vgg19":
    from ihc_jax.models import vgg  # pylint: disable=g-import-not-at-top
    return {"params": vgg.torchvision_vgg19_to_flax(state_dict)}
  if network == "histogram":
    from ihc_jax.models import histogram  # pylint: disable=g-import-not-at-top
    return {"params": histogram.torch_histogram_to_flax(state_dict)}
  if network not in NETWORKS:
    raise ValueError(f"unknown network {network!r}; expected one of {NETWORKS}")
  return apply_spec(state_dict, network_spec(network, _section(network, cfg)))


def export_state_dict(network: str, variables: Mapping[str, Any],
                      cfg: ml_collections.ConfigDict | None = None) -> dict[str, np.ndarray]:
  """Flax variables -> official-named numpy state dict (inverse of `convert_state_dict`).

  Args:
    network: one of `NETWORKS` except "histogram".
    variables: {"params": ..., "batch_stats": ...}.
    cfg: model config or the network's section; default: the official sizes.

  Returns:
    key -> numpy array, loadable into the official PyTorch module.
  """
  if network == "vgg19":
    from ihc_jax.models import vgg  # pylint: disable=g-import-not-at-top
    return vgg.flax_vgg19_to_torchvision(variables["params"])
  if network not in NETWORKS or network == "histogram":
    raise ValueError(f"cannot export network {network!r}")
  return invert_spec(variables, network_spec(network, _section(network, cfg)))


def example_inputs(network: str, cfg: ml_collections.ConfigDict, size: int = 256,
                   batch: int = 1) -> tuple[tuple[Any, ...], dict[str, Any]]:
  """Example (args, kwargs) for `model.init` of a network at size x size.

  Args:
    network: one of `NETWORKS`.
    cfg: the network's config section.
    size: image height and width.
    batch: batch size.

  Returns:
    (args, kwargs) of `jax.ShapeDtypeStruct`s / flags.
  """
  def image(channels: int) -> jax.ShapeDtypeStruct:
    return jax.ShapeDtypeStruct((batch, size, size, channels), jnp.float32)

  def code(nz: int) -> jax.ShapeDtypeStruct:
    return jax.ShapeDtypeStruct((batch, nz), jnp.float32)

  if network == "ihn":
    return (image(1), image(cfg.nz)), {"train": False}
  if network == "generator":
    return (image(1), image(1), code(cfg.nz)), {"train": False}
  if network == "encoder":
    return (image(3),), {}
  if network == "discriminator":
    return (image(3), code(cfg.nz)), {"train": False}
  if network == "fusion":
    return (image(3), image(3)), {}
  if network == "histogram":
    return (image(1),), {}
  if network == "vgg19":
    return (image(3),), {"layers": ("relu5_4",)}
  raise ValueError(f"unknown network {network!r}; expected one of {NETWORKS}")


def reference_variables(network: str, cfg: ml_collections.ConfigDict | None = None,
                        size: int = 256) -> dict[str, Any]:
  """`jax.eval_shape(model.init, ...)` of a network: the shapes to validate against.

  Args:
    network: one of `NETWORKS`.
    cfg: model config or the network's section; default: the official sizes.
    size: image size the network is initialised at (E's and H's Linear inputs
      depend on it).

  Returns:
    Nested dict of `jax.ShapeDtypeStruct`.
  """
  section = _section(network, cfg)
  model = models.build(network, section)
  args, kwargs = example_inputs(network, section, size)
  return jax.eval_shape(
      lambda *a: model.init(jax.random.PRNGKey(0), *a, **kwargs), *args)


def read_torch_state_dict(path: str) -> dict[str, np.ndarray]:
  """Reads a .pth state dict with torch (weights_only) into numpy arrays.

  Args:
    path: checkpoint file.

  Returns:
    key -> numpy array.
  """
  try:
    import torch  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise ImportError(
        "reading .pth files needs PyTorch: `pip install torch` (CPU build is "
        "enough), or `pip install ihc_jax[convert]`") from e
  state = torch.load(path, map_location="cpu", weights_only=True)
  if isinstance(state, Mapping) and "state_dict" in state and isinstance(
      state["state_dict"], Mapping):
    state = state["state_dict"]
  if not isinstance(state, Mapping):
    raise ValueError(f"{path}: expected a state dict, got {type(state).__name__}")
  return {str(k).removeprefix("module."): v.detach().cpu().numpy() for k, v in state.items()}


def _histogram_size(variables: Mapping[str, Any], cfg: Any) -> Any:
  bins = variables["params"]["fc"]["kernel"].shape[1]
  section = ml_collections.ConfigDict(dict(cfg))
  section.bins = int(bins)
  return section


def main(argv: Sequence[str] | None = None) -> None:
  """Command line entry point (`ihc-convert-weights`)."""
  parser = argparse.ArgumentParser(
      prog="ihc-convert-weights",
      description="Convert an official PyTorch checkpoint to a Flax .npz/.safetensors file.")
  parser.add_argument("--network", required=True, choices=NETWORKS)
  parser.add_argument("--input", required=True, help="PyTorch .pth state dict")
  parser.add_argument("--output", required=True, help=".npz or .safetensors destination")
  parser.add_argument("--image-size", type=int, default=256,
                      help="image size the weights are used at (E and H depend on it)")
  args = parser.parse_args(argv)
  state_dict = read_torch_state_dict(args.input)
  cfg = models.default_model_config()
  try:
    variables = convert_state_dict(args.network, state_dict, cfg)
    section = cfg[args.network]
    if args.network == "histogram":
      section = _histogram_size(variables, section)
    reference = reference_variables(args.network, section, args.image_size)
    weights.validate_variables(variables, reference, source=f"converted {args.input!r}")
  except (KeyError, ValueError) as e:
    sys.exit(f"ihc-convert-weights: {args.input}: {e}")
  weights.save_variables(args.output, variables)
  count = sum(np.size(v) for v in jax.tree_util.tree_leaves(variables.get("params", {})))
  print(f"wrote {args.output}: {args.network}, {count:,} parameters")


if __name__ == "__main__":
  main()
