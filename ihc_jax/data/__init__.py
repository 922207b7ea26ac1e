"""The parts of the input pipeline (public entry: `ihc_jax.input_pipeline`).

`demo` (the embedded demo photographs), `sources` (demo / folder / TFDS
sources and host shards), `streams` (train image streams), `datasets` (train
and eval datasets), `examples` (pseudo ground truth), `crops` (geometry),
`decode` (TensorFlow-op decoding), `skips` (unreadable files), `tf_setup`
(accelerators hidden from TensorFlow).
"""
