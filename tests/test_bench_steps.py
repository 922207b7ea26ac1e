"""`python -m ihc_jax.bench steps` on tiny networks: a step compiles in
both kernel-gradient forms, their losses agree, and the printed line reads
back. Random weights made here."""

import pytest

from ihc_jax import models
from ihc_jax.bench import steps
from ihc_jax.models import conv_grad


def test_compare_runs_both_forms_and_the_losses_agree(monkeypatch):
  # Tiny widths are below the taps' thresholds; lower them so that the two
  # forms really differ.
  monkeypatch.setattr(conv_grad, "TAPS_MIN_CHANNELS", 2)
  monkeypatch.setattr(conv_grad, "TAPS_MIN_CHANNEL_PRODUCT", 1)
  monkeypatch.setattr(conv_grad, "TAPS_MIN_POSITIONS", 1)
  config = models.tiny_model_config()
  config.generator.num_downs = config.ihn.num_downs = 5  # 32 px: a smaller graph
  # The models' form has the taps' loops (one per convolution), XLA's not.
  # At 32 px no convolution takes the compiled kernel gradient, so its third
  # form would be the models' again: left out (its line is tested below).
  forms = steps.compiled_forms("color", config, size=32, batch=1, with_no_native=False)
  loops = {form: compiled.as_text().count(" while(") for form, (compiled, _) in forms.items()}
  assert loops["models"] >= loops["xla"] + 10
  result = steps.time_forms(forms, repeats=1)
  assert result["models"] > 0 and result["xla"] > 0
  # The losses are those of the first step, before any update: the forms
  # differ only in the kernel gradients, which act after the losses.
  assert result["loss difference"] < 1e-5
  line = steps.format_line("color", result)
  assert line.split()[:3] == ["color", "step", "models"]
  speed_up = float(line.split("speed-up")[1].split("x")[0])
  assert speed_up == pytest.approx(result["xla"] / result["models"], rel=1e-2, abs=1e-2)
  # Counted where the OS counts them (Linux here), printed as counted.
  assert isinstance(result["page faults"], int) and result["page faults"] >= 0
  assert line.endswith(f"page faults per call {result['page faults']}")


def test_format_line_gives_the_compiled_kernels_speed_up():
  result = {"models": 2.0, "xla": 3.0, "no native": 2.5, "loss difference": 0.0,
            "page faults": 7}
  line = steps.format_line("ihn", result)
  assert "speed-up  1.50x" in line and "no native    2.500 s" in line
  assert "native speed-up  1.25x" in line
  del result["no native"]
  assert "native" not in steps.format_line("ihn", result)


def test_main_rejects_an_unknown_step():
  with pytest.raises(SystemExit):
    steps.main(["--steps", "fusion"])
