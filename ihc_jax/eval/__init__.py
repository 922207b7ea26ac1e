"""Evaluation networks and statistics: LPIPS, FID InceptionV3, FID/KID.

* `ihc_jax.eval.lpips`: LPIPS v0.1 (VGG16 / AlexNet) distance, `load_lpips`.
* `ihc_jax.eval.inception`: the pytorch-fid InceptionV3, `inception_features`,
  `load_inception`.
* `ihc_jax.eval.fid`: `feature_statistics`, `frechet_distance`,
  `kernel_inception_distance`.
* `ihc_jax.eval.scoring`: running sums of `ihc_jax.eval.run`, its result rows.
* `ihc_jax.eval.report`: eval_results.json and the Markdown table.
* `ihc_jax.eval.weights_io`: `MissingWeightsError` (weight files are read and
  checked by `ihc_jax.weights`).

Weights are converted once by `ihc_jax.tools.convert_eval_weights`; see
docs/evaluation.md.
"""
