"""Config files given on a command line as `path/to/config.py[:args]` (what `main.py --config` takes)."""
from __future__ import annotations

import importlib.util
import os


def load(spec: str):
    """The ConfigDict of `file.py[:args]`: the file's `get_config(args)` (`get_config()` without args).

    A missing file or a file without `get_config` is a ValueError naming it.
    """
    path, _, arg = spec.partition(":")
    if not os.path.isfile(path):
        raise ValueError(f"config file {path!r} not found (from {spec!r})")
    module_spec = importlib.util.spec_from_file_location(f"_config_{abs(hash(path))}", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    if not hasattr(module, "get_config"):
        raise ValueError(f"config file {path!r} has no get_config()")
    return module.get_config(arg) if arg else module.get_config()
