"""Mu-MAE pretraining config: `python main.py --config=configs/pretrain.py[:ARGS]`.

The defaults and the arguments (`runlocal`, `tiny`, `variant=`, ...) live in `mumae_jax/configs/pretrain.py`, inside
the package, so the library and its commands find them from any folder; this file is the command-line handle.
"""
from mumae_jax.configs.pretrain import IMAGENET_MEAN, IMAGENET_STD, SENSORS, get_config  # noqa: F401
