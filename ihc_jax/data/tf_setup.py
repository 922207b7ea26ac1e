"""Hides GPUs and TPUs from TensorFlow, which only feeds data in ihc_jax.

Every module that builds tf.data pipelines imports this one first, so the
accelerators are hidden before TensorFlow runs an op (JAX owns them).
"""

from absl import logging
import tensorflow as tf

try:
  tf.config.set_visible_devices([], "GPU")
  tf.config.set_visible_devices([], "TPU")
except (RuntimeError, ValueError) as _error:
  # Raised when TF was initialised before this import or knows no such device.
  logging.info("Could not hide accelerators from TensorFlow: %s", _error)
