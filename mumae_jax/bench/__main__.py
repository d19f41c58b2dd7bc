"""`python -m mumae_jax.bench`: the training-step speed benchmark (`mumae_jax.bench.step_speed`)."""
from mumae_jax.bench import step_speed
from mumae_jax.core import cli

if __name__ == "__main__":
    cli.run_absl(step_speed.main)
