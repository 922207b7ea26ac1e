"""Dispatches `python -m ihc_jax.bench SUITE [args]` to `ihc_jax.bench.SUITE.main`."""

import importlib
import sys

SUITES = ("data", "models", "losses", "train", "inference", "official", "profile")


def main(argv: list[str]) -> None:
  if len(argv) < 2 or argv[1] not in SUITES:
    sys.exit(f"usage: python -m ihc_jax.bench {{{','.join(SUITES)}}} [options]")
  module = importlib.import_module(f"ihc_jax.bench.{argv[1]}")
  module.main(argv[2:])


if __name__ == "__main__":
  main(sys.argv)
