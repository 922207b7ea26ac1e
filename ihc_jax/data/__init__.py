"""Data that ships with ihc_jax: the embedded demo photographs (see demo.py)."""
