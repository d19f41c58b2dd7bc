"""Test set-up: 8 fake CPU devices, quiet TensorFlow, persistent compile cache (set before jax import)."""
import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", os.path.join(os.path.dirname(__file__), "..", ".jax_cache"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")

import pytest  # noqa: E402


def make_tiny_config(**overrides):
    """configs/pretrain.py:runlocal shrunk further for fast tests (4×32² video, 2-layer 64-wide ViT)."""
    from configs import pretrain

    c = pretrain.get_config("runlocal")
    c.model.update(width=64, depth=2, num_heads=2, mlp_dim=128, decoder_width=32, decoder_depth=1,
                   decoder_heads=2)
    c.modality.video.update(num_frames=4, image_size=32)
    c.batch_size = 8
    c.total_steps = 6
    c.warmup_steps = 2
    c.log_every_steps = 1
    c.checkpoint_every_steps = 2
    c.write_tensorboard = False
    c.progress_bar = False
    c.data.num_subjects = 2
    c.data.num_sessions = 1
    c.evals.fewshot.every_steps = 0  # on in runlocal; tests that want it turn it on
    for k, v in overrides.items():
        c[k] = v
    return c


@pytest.fixture
def tiny_config():
    return make_tiny_config()
