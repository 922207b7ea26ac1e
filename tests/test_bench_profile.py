"""`python -m ihc_jax.bench profile`: the op table names real ops of the
compiled network with their layers, and the roofline line reads. Tiny
networks with random weights made here."""

import re

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
  assert shares == sorted(shares, reverse=True) and sum(shares) <= 100.5, rows
  # The ops come from the IHN's own layers.
  assert any("InverseHalftoneNet/" in r for r in rows), rows
  roofline = re.search(r"roofline: ([\d.e+-]+) GFLOP, ([\d.e+-]+) GFLOP/s; one "
                       r"2048\^2 float32 matmul: xla ([\d.e+-]+) GFLOP/s", out)
  assert roofline and float(roofline.group(1)) > 0, out
