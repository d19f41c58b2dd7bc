"""Helpers shared by config files (big_vision style)."""
from __future__ import annotations

import ml_collections as mlc


def parse_arg(arg, lazy=False, **spec):
    """Parses `--config=file.py:k1=v1,k2,k3=v3` arguments into a ConfigDict.

    Each keyword of `spec` names an argument and gives its default; the type of the default decides
    how a value is parsed (a bare `k` means True for booleans). Unknown names are an error.
    """
    cfg = mlc.ConfigDict(spec)
    if arg:
        for item in arg.split(","):
            if not item:
                continue
            key, _, value = item.partition("=")
            if key not in spec:
                if not lazy:
                    raise ValueError(f"unknown config argument {key!r}; known: {', '.join(spec)}")
                cfg[key] = value
                continue
            default = spec[key]
            if isinstance(default, bool):
                cfg[key] = value.lower() in ("", "1", "true", "yes", "y")
            elif isinstance(default, int):
                cfg[key] = int(value)
            elif isinstance(default, float):
                cfg[key] = float(value)
            else:
                cfg[key] = value
    return cfg


def name_list(name: str, value: str) -> tuple[str, ...]:
    """`a+b+c` (a list inside a comma-separated config argument) -> ('a', 'b', 'c'); names unique, non-empty."""
    names = tuple(v.strip() for v in value.split("+"))
    if not value or any(not n for n in names) or len(set(names)) != len(names):
        raise ValueError(f"config argument {name}={value!r}: expected distinct names joined by '+', e.g. acc+gyro")
    return names


def choice(name: str, value: str, options):
    """Returns value if it is one of options, else raises a ValueError naming the argument."""
    if value not in options:
        raise ValueError(f"config argument {name}={value!r}; expected one of {', '.join(options)}")
    return value
