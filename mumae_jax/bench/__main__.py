"""`python -m mumae_jax.bench`: the training-step speed benchmark (`mumae_jax.bench.step_speed`)."""
from absl import app

from mumae_jax.bench import step_speed

if __name__ == "__main__":
    app.run(step_speed.main)
