"""Test set-up (before jax is imported): 8 fake CPU devices, quiet TensorFlow, a persistent compile cache, and
XLA's backend optimisation off: the tests run tiny shapes for a few steps, so compiling dominates, and LLVM at
-O0 compiles about twice as fast; every numeric test passes at its usual tolerance either way. Subprocesses get
the same flags (FAST_COMPILE), so runs compared with each other are compiled alike."""
import os

FAST_COMPILE = "--xla_backend_optimization_level=0"
os.environ.setdefault("XLA_FLAGS", f"--xla_force_host_platform_device_count=8 {FAST_COMPILE}")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", os.path.join(os.path.dirname(__file__), "..", ".jax_cache"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")

import pytest  # noqa: E402


def make_tiny_config(**overrides):
    """configs/pretrain.py:tiny (4×32² video, 2-layer 64-wide ViT, 6 steps) with top-level overrides."""
    from mumae_jax.configs import pretrain

    c = pretrain.get_config("tiny")
    for k, v in overrides.items():
        c[k] = v
    return c


@pytest.fixture
def tiny_config():
    return make_tiny_config()

