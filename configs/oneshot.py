"""Mu-MAE one-shot stage config: `python main.py --config=configs/oneshot.py[:ARGS]`.

The defaults and the arguments (`runlocal`, `init=`, `recipe=`, ...) live in `mumae_jax/configs/oneshot.py`, inside
the package; this file is the command-line handle.
"""
from mumae_jax.configs.oneshot import SENSORS, get_config  # noqa: F401
