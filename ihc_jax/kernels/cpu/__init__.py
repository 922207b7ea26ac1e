"""Faster forms of the networks' convolutions and pools for XLA:CPU.

Each computes what its reference in `ihc_jax.kernels.reference` computes
(the same sums in another order) and differentiates like it to any order,
in forward and reverse mode. `ihc_jax.kernels` picks them when a function
is lowered for CPU, unless `IHC_JAX_CPU_FAST_PATHS=0`; GPU and TPU never
see them.

* `conv`: patch matmuls for tiny outputs, padded-and-cropped convolutions
  for unpadded ones, and a custom JVP that runs the fast gradient forms of
  `conv_grads` in reverse mode;
* `upsample_conv`: the U-Nets' upsample, reflection pad and 3x3 conv as one
  convolution of the small map;
* `pools`: block pools as reshapes.
"""
