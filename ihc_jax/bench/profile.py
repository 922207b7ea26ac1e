"""Where one network's forward time goes: `python -m ihc_jax.bench profile`.

  python -m ihc_jax.bench profile [--net ihn] [--size 256] [--top 25]
      [--calls 3] [--full-size | --tiny]

Compiles the forward pass of one network (eval mode, batch 1, random
weights), records `--calls` calls with `jax.profiler.trace`, and sums the
time of each compiled op (XLA:CPU runs each fusion, convolution or library
call as one "thunk", and the trace has one event per thunk run). Each op is
printed with its share of the traced time, its output shape and the layer
it comes from (the op's `op_name` metadata in the optimized HLO). Then a
roofline: the network's FLOPs (XLA's cost analysis), its achieved GFLOP/s,
and the GFLOP/s of one large float32 matmul in the same process, XLA's and,
when torch is installed, torch's: a network near the matmul figure has
little left to gain from its graph.

On a GPU the per-op events are the device's kernels; the same table reads
there. Benchmark figures only: nothing here asserts a speed.
"""

from __future__ import annotations

import argparse
import bisect
import collections
import gzip
import json
import pathlib
import re
import tempfile
from collections.abc import Callable, Collection, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from ihc_jax.bench import timing

NETS = ("ihn", "generator", "encoder", "fusion")


def network_call(name: str, model_config: Any, size: int, seed: int = 0
                 ) -> tuple[Callable[..., Any], tuple[Any, ...]]:
  """(fn(variables, *inputs), (variables, *inputs)) for a network's forward
  in eval mode, with random weights and random inputs in [0, 1)."""
  from ihc_jax import models  # pylint: disable=g-import-not-at-top
  from ihc_jax.inference import files as pipeline_files  # pylint: disable=g-import-not-at-top
  if name not in NETS:
    raise ValueError(f"network must be one of {NETS}, got {name!r}")
  variables = pipeline_files.init_random_variables(model_config, seed=seed,
                                                   image_size=size)[name]
  rng = np.random.default_rng(seed)
  inputs = tuple(jnp.asarray(rng.random(spec.shape, np.float32))
                 for spec in pipeline_files.example_inputs(model_config, size)[name])
  net = models.build(name, model_config)
  if name == "ihn":
    return (lambda v, *a: net.apply(v, *a, train=False)[-1]), (variables,) + inputs
  if name == "generator":
    return (lambda v, *a: net.apply(v, *a, train=False)), (variables,) + inputs
  return net.apply, (variables,) + inputs


def op_layers(hlo_text: str) -> dict[str, tuple[str, str]]:
  """Optimized-HLO op name -> (output shape, layer path from op_name)."""
  out = {}
  definition = re.compile(r"^\s*(?:ROOT\s+)?%?([\w.\-]+) = (\S+) ")
  for line in hlo_text.splitlines():
    match = definition.match(line)
    if match:
      op_name = re.search(r'op_name="([^"]*)"', line)
      layer = op_name.group(1).split("/", 1)[-1] if op_name else ""
      out[match.group(1)] = (match.group(2), layer)
  return out


def trace_op_times(fn: Callable[[], Any], calls: int,
                   op_names: Collection[str]) -> dict[str, float]:
  """Op name -> seconds per call, from a profiler trace of `calls` calls
  (`op_times_from_events` reads the trace)."""
  with tempfile.TemporaryDirectory() as logdir:
    with jax.profiler.trace(logdir, create_perfetto_trace=True):
      for _ in range(calls):
        jax.block_until_ready(fn())
    files = list(pathlib.Path(logdir).rglob("*.trace.json.gz"))
    if not files:
      raise RuntimeError(f"jax.profiler wrote no perfetto trace under {logdir}")
    with gzip.open(files[0]) as f:
      events = json.load(f)["traceEvents"]
  return op_times_from_events(events, calls, op_names)


def op_times_from_events(events: Sequence[dict[str, Any]], calls: int,
                         op_names: Collection[str]) -> dict[str, float]:
  """Op name -> seconds per call from the events of a perfetto trace.

  Only events of an op of the compiled module count: the trace also holds
  the executor's own spans, thread-pool waits and the Python calls around
  them. On CPU an event is named after its op (XLA:CPU runs each fusion,
  convolution or library call as one "thunk"). On GPU the events are the
  device's kernels, named after the kernel (a cuDNN or cuBLAS kernel has
  its library's name), and the op that launched one is its `hlo_op`
  argument: an op's kernels are summed. (Kernels run inside an XLA:GPU
  command buffer may carry no op; `XLA_FLAGS=--xla_gpu_enable_command_buffer=`
  keeps them attributed.)

  An op ends at its `end: <op>` event where the trace has one: XLA:CPU runs
  some ops asynchronously (its Eigen convolutions, e.g.
  `kernels.cpu.conv_grads.kernel_gradient_rows`' 1-D convolutions), whose own event only
  spans their dispatch. The trace misses some `end:` events (one or two in
  three calls of a lone convolution), and such a call counts its dispatch
  only: asynchronous ops can still come out low. Ops that overlap each
  count in full, so the sum can exceed the wall time.
  """
  spans, ends = collections.defaultdict(list), collections.defaultdict(list)
  for event in events:
    if event.get("ph") != "X":
      continue
    name = event.get("name", "")
    if name not in op_names:
      launched_by = (event.get("args") or {}).get("hlo_op")
      if launched_by in op_names and not name.startswith("end: "):
        name = launched_by
    if name in op_names:
      spans[name].append((event["ts"], event["ts"] + event["dur"]))
    elif name.startswith("end: ") and name[5:] in op_names:
      ends[name[5:]].append(event["ts"])
  totals = {}
  for name, runs in spans.items():
    runs.sort()
    done = sorted(ends[name])
    total = 0.0
    for i, (start, stop) in enumerate(runs):
      # Its end: the first after it starts, before the op starts again (the
      # trace can miss one, e.g. the first call's).
      j = bisect.bisect_left(done, start)
      if j < len(done) and (i + 1 == len(runs) or done[j] < runs[i + 1][0]):
        stop = max(stop, done[j])
      total += stop - start
    totals[name] = total * 1e-6 / calls
  return totals


# Name-stack entries that are transformations or control flow, not a scope.
_WRAPPERS = re.compile(r"cond|while|body|closed_call|branch_\d+_fun|checkpoint|remat"
                       r"|rematted_computation|jit\(.*|")


def op_scope(layer: str) -> tuple[str, str]:
  """(scope, pass) of an op from its layer path (`op_layers`).

  The scope is the first entry of the name stack below the jitted
  function's own that names a module or a `jax.named_scope` (`VGG19`,
  `ColorizationNet`, `histogram`, ...), with transformations (`jvp(...)`,
  `transpose(...)`) and control flow (`while/body`, `cond`) looked
  through; the pass is 'backward' for ops of a transposed (reverse-mode)
  computation, else 'forward'. The path's last entry is the op's primitive
  (`add`, `conv_general_dilated`); ops outside every scope are
  '(unscoped)'.
  """
  entries = layer.split("/")[:-1]
  for entry in entries[1:] if entries and entries[0].startswith("jit(") else entries:
    name = re.sub(r"^((transpose|jvp|vmap|checkpoint)\()+|\)+$", "", entry)
    if not _WRAPPERS.fullmatch(name):
      break
  else:
    name = "(unscoped)"
  return name, "backward" if "transpose(" in layer else "forward"


def scope_times(ops: dict[str, float], layers: dict[str, tuple[str, str]]
                ) -> dict[tuple[str, str], float]:
  """(scope, pass) -> seconds per call, summed over `ops` (`op_scope`)."""
  totals: dict[tuple[str, str], float] = collections.defaultdict(float)
  for name, seconds in ops.items():
    totals[op_scope(layers.get(name, ("", ""))[1])] += seconds
  return dict(totals)


def matmul_gflops(size: int = 2048, repeats: int = 5) -> dict[str, float]:
  """GFLOP/s of one [size, size] float32 matmul: XLA's, and torch's if any."""
  rng = np.random.default_rng(0)
  a = rng.random((size, size), np.float32)
  b = rng.random((size, size), np.float32)
  flops = 2.0 * size**3
  xa, xb = jnp.asarray(a), jnp.asarray(b)
  matmul = jax.jit(jnp.matmul)
  out = {"xla": flops / _median_s(lambda: jax.block_until_ready(matmul(xa, xb)),
                                  repeats) / 1e9}
  try:
    import torch  # pylint: disable=g-import-not-at-top
  except ImportError:
    return out
  ta, tb = torch.from_numpy(a), torch.from_numpy(b)
  out["torch"] = flops / _median_s(lambda: ta @ tb, repeats) / 1e9
  return out


def _median_s(fn: Callable[[], Any], repeats: int) -> float:
  return timing.time_calls(fn, repeats).median


def main(argv: Sequence[str]) -> None:
  """Prints the op table and the roofline of one network's forward pass."""
  from ihc_jax import models  # pylint: disable=g-import-not-at-top
  from ihc_jax.bench import flops as flops_lib  # pylint: disable=g-import-not-at-top
  parser = argparse.ArgumentParser(prog="python -m ihc_jax.bench profile")
  parser.add_argument("--net", default="ihn", choices=NETS)
  parser.add_argument("--size", type=int, default=256)
  parser.add_argument("--top", type=int, default=25)
  parser.add_argument("--calls", type=int, default=3)
  parser.add_argument("--repeats", type=int, default=5)
  parser.add_argument("--tiny", action="store_true",
                      help="the tests' tiny widths instead of the official ones")
  args = parser.parse_args(list(argv))
  config = models.tiny_model_config() if args.tiny else models.default_model_config()
  fn, call_args = network_call(args.net, config, args.size)
  lowered = jax.jit(fn).lower(*call_args)
  compiled = lowered.compile()
  run = lambda: compiled(*call_args)
  seconds = _median_s(lambda: jax.block_until_ready(run()), args.repeats)
  layers = op_layers(compiled.as_text())
  ops = trace_op_times(run, args.calls, layers)
  traced = sum(ops.values())
  print(f"{args.net} forward, batch 1, {args.size}x{args.size}, "
        f"{'tiny' if args.tiny else 'official'} widths, backend "
        f"{jax.default_backend()}: {seconds * 1e3:.1f} ms (median of "
        f"{args.repeats}); ops traced {traced * 1e3:.1f} ms per call, "
        f"{len(ops)} ops")
  print(f"  {'ms':>8s} {'share':>6s}  {'op':24s} {'output':28s} layer")
  for name, value in sorted(ops.items(), key=lambda kv: -kv[1])[:args.top]:
    shape, layer = layers.get(name, ("?", "?"))
    print(f"  {value * 1e3:8.2f} {value / traced:6.1%}  {name[:24]:24s} "
          f"{shape[:28]:28s} {layer[:70]}")
  flops = flops_lib.step_flops(lowered, compiled)
  peaks = matmul_gflops(repeats=args.repeats)
  line = "roofline: " + (f"{flops / 1e9:.3g} GFLOP, {flops / seconds / 1e9:.3g} GFLOP/s"
                         if flops else "no FLOP count from XLA")
  line += "; one 2048^2 float32 matmul: " + ", ".join(
      f"{side} {value:.3g} GFLOP/s" for side, value in peaks.items())
  if flops:
    line += f" (network at {flops / seconds / 1e9 / peaks['xla']:.0%} of XLA's)"
  print(line)
