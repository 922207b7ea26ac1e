"""`python -m ihc_jax.eval`: the paper's evaluation of a trained pipeline
(`ihc_jax.eval.run`)."""

from ihc_jax.eval import run

if __name__ == "__main__":
  run.console_main()
