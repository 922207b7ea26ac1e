"""The loss study's plan and report (no training: the study itself runs for
tens of minutes and is documented in docs/training.md)."""

import ml_collections
import pytest

from ihc_jax.tools import loss_study


def test_variants_switch_off_one_term_each():
  loss = ml_collections.ConfigDict(dict(recovery_l1=10.0, kl=0.01, style=0.0,
                                        adversarial=1.0))
  plan = loss_study.variants(loss)
  assert sorted(plan) == ["-adversarial", "-kl", "-recovery_l1", "default",
                          "reconstruction only"]
  assert plan["-kl"] == dict(recovery_l1=10.0, kl=0.0, style=0.0,
                             adversarial=1.0)
  assert plan["reconstruction only"] == dict(recovery_l1=10.0, kl=0.01,
                                             style=0.0, adversarial=0.0)


def test_summary_and_markdown_report_means_and_spread():
  def run(psnr, loss):
    return {"weights": {"kl": 0.01},
            "heldout": {"eval/recovery_psnr": psnr, "eval/gray3_psnr": 15.0},
            "terms": {"10": {"loss": loss, "kl": 0.1}}}
  summary = loss_study.summarise({"default": [run(17.0, 2.0), run(18.0, 4.0)],
                                  "-kl": [run(16.0, 1.0)]})
  assert summary["heldout"]["default"]["eval/recovery_psnr"] == (17.5, 0.5)
  assert summary["term_magnitudes"]["loss"] == {10: 3.0}
  text = loss_study.markdown(summary, [0, 1], [0])
  assert "| default | 17.500 ± 0.500 | 15.000 ± 0.000 |" in text
  assert "| -kl | 16.000 ± 0.000 |" in text
  assert "Default weights: kl 0.01" in text


def test_leave_several_out_variants_switch_off_each_named_term():
  loss = ml_collections.ConfigDict(dict(recovery_l1=10.0, kl=0.01,
                                        structure=1.0))
  plan = loss_study.variants(loss, ["-kl-structure"])
  assert plan["-kl-structure"] == dict(recovery_l1=10.0, kl=0.0,
                                       structure=0.0)
  with pytest.raises(ValueError, match="unknown loss terms.*'styel'"):
    loss_study.variants(loss, ["-kl-styel"])
  with pytest.raises(ValueError, match="not of the form"):
    loss_study.variants(loss, ["-kl--structure"])


def test_reweighted_variants_set_one_weight():
  loss = ml_collections.ConfigDict(dict(recovery_l1=10.0, kl=0.01))
  plan = loss_study.variants(loss, ["kl=0.05"])
  assert plan["kl=0.05"] == dict(recovery_l1=10.0, kl=0.05)
  with pytest.raises(ValueError, match="unknown loss term 'k1'"):
    loss_study.variants(loss, ["k1=0.05"])
