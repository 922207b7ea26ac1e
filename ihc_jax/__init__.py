"""ihc_jax: Inverse Halftone Colorization (ICIP 2021) in JAX and Flax Linen.

Turns black-and-white halftone prints into colour continuous-tone images with
three networks: the inverse halftone network (IHN), the colorization network
(generator G, colour encoder E, discriminator D, histogram estimator H) and the
fusion network F. Image tensors are NHWC float32 in [0, 1] unless a docstring
says otherwise.
"""

__version__ = "0.1.0"
