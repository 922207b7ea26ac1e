"""Pixel loss of the inverse halftone network (paper §2.1).

L_pixel = lambda1 * ||content - gray||^2 + lambda2 * |output - gray|, where
`content` is the content-aggregation map, `output` the final IHN output
(content + detail) and `gray` the ground-truth continuous-tone image; both
norms are means over pixels (MSE and mean absolute error); lambda1 = 5,
lambda2 = 1 as in the paper. `l1_loss` is the plain mean absolute error
(the fusion stage's reconstruction term).
"""

from __future__ import annotations

import jax

from ihc_jax.losses import _common


def pixel_loss(content: jax.Array, output: jax.Array, target: jax.Array, *,
               content_weight: float = 5.0, output_weight: float = 1.0,
               reduction: str = "mean") -> jax.Array:
  """IHN pixel objective.

  Args:
    content: [B, H, W, C] content-aggregation output, [0, 1] scale.
    output: [B, H, W, C] final IHN output (content + detail).
    target: [B, H, W, C] ground-truth gray image in [0, 1].
    content_weight: lambda1 of the MSE term on `content`.
    output_weight: lambda2 of the L1 term on `output`.
    reduction: "mean" or "none" (per-example [B]).

  Returns:
    float32 scalar, or [B] with reduction="none".
  """
  _common.check_same_shape("pixel_loss(content, target)", content, target)
  _common.check_same_shape("pixel_loss(output, target)", output, target)
  per_example = (content_weight * _common.distance(content, target, "mse")
                 + output_weight * _common.distance(output, target, "l1"))
  return _common.reduce(per_example, reduction)


def l1_loss(output: jax.Array, target: jax.Array, *,
            reduction: str = "mean") -> jax.Array:
  """Mean absolute error over pixels and channels.

  Args:
    output: [B, H, W, C] prediction, [0, 1] scale.
    target: [B, H, W, C] target in [0, 1].
    reduction: "mean" or "none" (per-example [B]).

  Returns:
    float32 scalar, or [B].
  """
  _common.check_same_shape("l1_loss", output, target)
  return _common.reduce(_common.distance(output, target, "l1"), reduction)
