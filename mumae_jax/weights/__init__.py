"""Weights in and out: a run's config and parameters (pretrained.py), strict warm starts (model_init.py), and
the PyTorch converters (`python -m mumae_jax.weights.convert` / `.export`).
"""
