"""Reconstruction loss of the colorization network (paper §2.2).

L_rec = |I_rec - I| + ||I_ref - I_example||^2: mean absolute error between
the recovery-scheme output and the ground truth plus mean squared error
between the reference-scheme output and the exemplar-based pseudo ground
truth. Each term is also available on its own.

`halftone_task_loss` is the colour stage's C->IHN task (not a loss of the
paper, which only says that G also maps the halftone to a colour halftone):
the L1 error of G's colour halftone against the per-channel halftone of the
ground truth on the input's screen lattice.
"""

from __future__ import annotations

import jax

from ihc_jax.losses import _common


def recovery_l1_loss(recovered: jax.Array, image: jax.Array, *,
                     reduction: str = "mean") -> jax.Array:
  """|I_rec - I| averaged over pixels and channels.

  Args:
    recovered: [B, H, W, 3] G output with the code of the ground truth.
    image: [B, H, W, 3] ground truth in [0, 1].
    reduction: "mean" or "none".

  Returns:
    float32 scalar, or [B].
  """
  _common.check_same_shape("recovery_l1_loss", recovered, image)
  return _common.reduce(_common.distance(recovered, image, "l1"), reduction)


def reference_mse_loss(reference_output: jax.Array, example: jax.Array, *,
                       reduction: str = "mean") -> jax.Array:
  """||I_ref - I_example||^2 averaged over pixels and channels.

  Args:
    reference_output: [B, H, W, 3] G output with the reference's code.
    example: [B, H, W, 3] exemplar-based pseudo ground truth in [0, 1].
    reduction: "mean" or "none".

  Returns:
    float32 scalar, or [B].
  """
  _common.check_same_shape("reference_mse_loss", reference_output, example)
  return _common.reduce(_common.distance(reference_output, example, "mse"),
                        reduction)


def reconstruction_loss(recovered: jax.Array, image: jax.Array,
                        reference_output: jax.Array, example: jax.Array, *,
                        reduction: str = "mean") -> jax.Array:
  """Sum of `recovery_l1_loss` and `reference_mse_loss`.

  Args:
    recovered: [B, H, W, 3] recovery-scheme output.
    image: [B, H, W, 3] ground truth.
    reference_output: [B, H, W, 3] reference-scheme output.
    example: [B, H, W, 3] pseudo ground truth.
    reduction: "mean" or "none".

  Returns:
    float32 scalar, or [B].
  """
  per_example = (recovery_l1_loss(recovered, image, reduction="none")
                 + reference_mse_loss(reference_output, example, reduction="none"))
  return _common.reduce(per_example, reduction)


def halftone_task_loss(color_halftone: jax.Array, target: jax.Array, *,
                       reduction: str = "mean") -> jax.Array:
  """|G(h, edge(h), z) - colour halftone of I| averaged over pixels.

  Args:
    color_halftone: [B, H, W, 3] G output from the gray halftone.
    target: [B, H, W, 3] per-channel halftone of the ground truth on the
      same lattice as the input halftone (`halftone.synthesize_with_color`).
    reduction: "mean" or "none".

  Returns:
    float32 scalar, or [B].
  """
  return recovery_l1_loss(color_halftone, target, reduction=reduction)
