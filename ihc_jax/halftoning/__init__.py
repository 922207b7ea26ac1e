"""The halftoning methods behind `ihc_jax.halftone` (the public entry).

`am` (clustered-dot AM screens), `dither` (ordered dither and error
diffusion), `degrade` (blur, noise, JPEG), `estimate` (screen period and
angle of a scan), `arrays` (shared input checks).
"""
