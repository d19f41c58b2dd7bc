"""Flax Linen modules of mumae_jax (no TensorFlow imports here)."""
