"""Benchmarks that print figures: the training step (`python -m mumae_jax.bench`), its FLOPs, the input
pipelines, the `transformers` peer, and the paper's ablation table (ablations.py).
"""
