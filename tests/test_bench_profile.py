"""`python -m ihc_jax.bench profile`: the op table names real ops of the
compiled network with their layers, and the roofline line reads. Tiny
networks with random weights made here."""

import re

import jax
import jax.numpy as jnp
import pytest

from ihc_jax.bench import profile


def test_op_layers_reads_shapes_and_layer_paths():
  hlo = """
  %ynn_fusion.3 = f32[1,34,34,256]{3,2,1,0} fusion(%a, %b), kind=kCustom, metadata={op_name="jit(f)/InverseHalftoneNet/content/up_3/conv_general_dilated" stack_frame_id=1}
  ROOT %add.1 = f32[2]{0} add(%x, %y)
"""
  layers = profile.op_layers(hlo)
  assert layers["ynn_fusion.3"] == ("f32[1,34,34,256]{3,2,1,0}",
                                    "InverseHalftoneNet/content/up_3/conv_general_dilated")
  assert layers["add.1"] == ("f32[2]{0}", "")


def test_main_prints_ops_of_the_network(capsys):
  profile.main(["--net", "ihn", "--tiny", "--size", "64", "--top", "5",
                "--calls", "1", "--repeats", "1"])
  out = capsys.readouterr().out
  header = re.search(r"ops traced ([\d.]+) ms per call, (\d+) ops", out)
  assert header and int(header.group(2)) > 0, out
  rows = [line for line in out.splitlines()
          if re.match(r"\s+[\d.]+\s+[\d.]+%\s", line)]
  assert 1 <= len(rows) <= 5, out
  shares = [float(re.match(r"\s+[\d.]+\s+([\d.]+)%", r).group(1)) for r in rows]
  assert shares == sorted(shares, reverse=True), rows
  # The ops come from the IHN's own layers.
  assert any("InverseHalftoneNet/" in r for r in rows), rows
  roofline = re.search(r"roofline: ([\d.e+-]+) GFLOP, ([\d.e+-]+) GFLOP/s; one "
                       r"2048\^2 float32 matmul: xla ([\d.e+-]+) GFLOP/s", out)
  assert roofline and float(roofline.group(1)) > 0, out


def test_op_times_from_events_reads_cpu_ops_and_gpu_kernels():
  # Synthetic perfetto events (microseconds), two calls. CPU: events named
  # after their op, an asynchronous one ended by its `end:` event. GPU: two
  # kernels (a cuDNN one named after its library) launched by one op, known
  # by their `hlo_op` argument. The executor's own spans do not count.
  ops = {"fusion.1", "convolution.2", "custom-call.3"}
  events = [
      {"ph": "X", "name": "fusion.1", "ts": 0, "dur": 10},
      {"ph": "X", "name": "fusion.1", "ts": 100, "dur": 30},
      {"ph": "X", "name": "convolution.2", "ts": 10, "dur": 1},
      {"ph": "X", "name": "end: convolution.2", "ts": 50, "dur": 0},
      {"ph": "X", "name": "sm90_xmma_fprop_implicit_gemm", "ts": 200, "dur": 40,
       "args": {"hlo_op": "custom-call.3", "hlo_module": "jit_step"}},
      {"ph": "X", "name": "cudnn::winograd_transform", "ts": 240, "dur": 20,
       "args": {"hlo_op": "custom-call.3"}},
      {"ph": "X", "name": "ThunkExecutor::Execute", "ts": 0, "dur": 400},
      {"ph": "X", "name": "other_kernel", "ts": 300, "dur": 5,
       "args": {"hlo_op": "not.an.op"}},
      {"ph": "i", "name": "fusion.1", "ts": 5},
  ]
  times = profile.op_times_from_events(events, 2, ops)
  assert times == pytest.approx({"fusion.1": 20e-6, "convolution.2": 20e-6,
                                 "custom-call.3": 30e-6})


def test_op_scope_names_modules_and_named_scopes_through_transforms():
  cases = {
      "jit(train_step)/jvp(vgg_terms)/VGG19/conv4_1/conv_general_dilated":
          ("vgg_terms", "forward"),
      "jit(train_step)/transpose(jvp(ColorizationNet))/unet/up_0/cond/"
      "branch_0_fun/dot_general": ("ColorizationNet", "backward"),
      "jit(train_step)/transpose(jvp(histogram))/while/body/closed_call/"
      "reduce_sum": ("histogram", "backward"),
      "jit(train_step)/update/mul": ("update", "forward"),
      "jit(train_step)/jit(_canny)/while/body/or": ("(unscoped)", "forward"),
      "add": ("(unscoped)", "forward"),
      "": ("(unscoped)", "forward"),
      "InverseHalftoneNet/content/up_3/conv_general_dilated":
          ("InverseHalftoneNet", "forward"),
  }
  for layer, expected in cases.items():
    assert profile.op_scope(layer) == expected, layer
  layers = {"a": ("f32[2]", "jit(f)/update/mul"), "b": ("f32[2]", "jit(f)/update/add"),
            "c": ("f32[2]", "jit(f)/transpose(jvp(VGG19))/conv1_1/x")}
  assert profile.scope_times({"a": 1.0, "b": 2.0, "c": 0.5, "d": 0.25}, layers) == {
      ("update", "forward"): 3.0, ("VGG19", "backward"): 0.5,
      ("(unscoped)", "forward"): 0.25}
