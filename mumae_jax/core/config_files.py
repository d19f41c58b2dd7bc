"""Config files given on a command line as `path/to/config.py[:args]` plus `--config.x=y` overrides,
read exactly as `main.py --config` reads them (ml_collections `config_flags`)."""
from __future__ import annotations

import argparse
import warnings
from typing import Optional, Sequence


def packaged(spec: str) -> str:
    """`name.py[:args]` of a config inside the installed package (`mumae_jax/configs/`), as a path a
    `--config` flag accepts: command defaults that work from any folder."""
    import os

    from mumae_jax import configs

    return os.path.join(os.path.dirname(configs.__file__), spec)


def load_config_file(spec: str, overrides: Sequence[str] = ()):
    """The ml_collections config of `path[:arg]` with `--config.x=y` overrides, as main.py's --config."""
    from absl import flags
    from ml_collections import config_flags

    argv = ["mumae_jax", f"--config={spec}", *overrides]
    fv = flags.FlagValues()
    try:
        config_flags.DEFINE_config_file("config", None, "pretraining config", flag_values=fv, lock_config=False,
                                        sys_argv=argv)
        with warnings.catch_warnings():  # ml_collections loads the file with the deprecated load_module()
            warnings.filterwarnings("ignore", message="the load_module", category=DeprecationWarning)
            fv(argv)
            config = fv.config
        config.keys()  # a file that failed to load gives a placeholder that raises only when used
        return config
    except (flags.Error, OSError, AttributeError, KeyError) as e:
        from mumae_jax.core import cli

        raise ValueError(f"--config {spec} {' '.join(overrides)}: {cli.message(e)}") from None


def split_overrides(parser: argparse.ArgumentParser, argv: Optional[Sequence[str]]):
    """(parsed args, [--config.x=y ...]) of an argparse command that also takes config overrides; any
    other unknown argument is the parser's usage error."""
    a, rest = parser.parse_known_args(argv)
    overrides = [r for r in rest if r.startswith("--config.")]
    if len(overrides) != len(rest):
        parser.error(f"unrecognized arguments: {' '.join(r for r in rest if r not in overrides)}")
    return a, overrides
