"""The error of an evaluation metric whose weight file is missing.

The evaluation networks (LPIPS, the FID InceptionV3) read their weights from
the project's neutral weight files through `ihc_jax.weights`
(`load_variables`, `validate_variables`, `save_variables`): `.npz` whose keys
are the '/'-joined paths of the Flax variable tree, e.g.
``params/net/conv1_1/kernel`` or ``batch_stats/Mixed_5b/branch1x1/bn/mean``.
Files are written once by `ihc_jax.tools.convert_eval_weights` and never
pickled. Every load is checked against the shapes of
`jax.eval_shape(model.init, ...)` so a wrong or stale file fails loudly instead
of producing a silently wrong metric; a file that does not exist raises
`MissingWeightsError`, which `ihc_jax.eval.run` reports as a missing metric.
"""

from __future__ import annotations


class MissingWeightsError(FileNotFoundError):
  """A metric cannot run because its weights file does not exist.

  Attributes:
    metric: name of the metric, e.g. "lpips" or "fid".
    path: the file the metric needs (may be empty if the config has no path).
    hint: how to make the file (the converter command).
  """

  def __init__(self, metric: str, path: str, hint: str):
    self.metric = metric
    self.path = path
    self.hint = hint
    where = repr(path) if path else "(no path set)"
    super().__init__(
        f"{metric}: weights file {where} is missing. {hint}")
