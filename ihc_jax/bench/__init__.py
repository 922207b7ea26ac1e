"""Benchmarks: `python -m ihc_jax.bench {data,models,losses,train,inference,official}`.

Each sub-command lives in its own module of this package and exposes
`main(argv: list[str]) -> None`; benchmarks print figures and are never tests.
"""
