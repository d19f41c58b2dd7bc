"""The paper's ablations as one table: `python main.py --config=configs/ablations.py:runlocal --workdir=DIR`.

The conditions and their settings live in `mumae_jax/configs/ablations.py`, inside the package; this file is the
command-line handle.
"""
from mumae_jax.configs.ablations import CONDITIONS, ONESHOT, get_config  # noqa: F401
