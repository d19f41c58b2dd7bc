"""mumae_jax: multimodal masked autoencoders (Mu-MAE) in JAX/Flax.

Importing the package, its models, masking, losses and train step needs no TensorFlow; only the
input pipeline (`mumae_jax.data.input_pipeline`) and the TensorBoard writer do.
"""

__version__ = "0.1.0"
