"""Chunked attention equals plain attention (values and gradients); the benchmark's record is consistent."""
import contextlib
import io

import jax
import jax.numpy as jnp
from jax import ad_checkpoint
import numpy as np
import pytest

from conftest import make_tiny_config
from mumae_jax.bench import step_speed, flops
from mumae_jax.steps import pretraining_step
from mumae_jax.models import mae, vit


def test_chunked_attention_matches_dot_product_attention_with_gradients():
    rng = np.random.default_rng(0)
    q, k, v = (jnp.asarray(rng.standard_normal((2, 98, 3, 16)), jnp.float32) for _ in range(3))
    ref = jax.nn.dot_product_attention(q, k, v, implementation="xla")
    for chunk in (14, 49, 98, 512):  # 7 blocks, 2 blocks, one block, one block
        np.testing.assert_allclose(vit.chunked_attention(q, k, v, chunk), ref, atol=2e-6)
    loss = lambda f: lambda q, k, v: jnp.sum(f(q, k, v) * jnp.arange(16.0))  # noqa: E731
    g_ref = jax.grad(loss(lambda *a: jax.nn.dot_product_attention(*a, implementation="xla")), (0, 1, 2))(q, k, v)
    g = jax.grad(loss(lambda *a: vit.chunked_attention(*a, 14)), (0, 1, 2))(q, k, v)
    for a, b in zip(g, g_ref):
        np.testing.assert_allclose(a, b, atol=2e-5)
    with pytest.raises(ValueError, match="attention_impl='flash'"):
        vit.attend(q, k, v, "flash")


def test_gelu_matches_exact_gelu_values_and_gradients():
    x = jnp.linspace(-8.0, 8.0, 2001)
    np.testing.assert_allclose(vit.gelu(x), jax.nn.gelu(x, approximate=False), atol=1e-6)
    g = jax.grad(lambda x: jnp.sum(vit.gelu(x) * jnp.cos(x)))(x)
    g_ref = jax.grad(lambda x: jnp.sum(jax.nn.gelu(x, approximate=False) * jnp.cos(x)))(x)
    np.testing.assert_allclose(g, g_ref, atol=1e-5)
    xb = x.astype(jnp.bfloat16)
    assert vit.gelu(xb).dtype == jnp.bfloat16 and jax.grad(lambda x: jnp.sum(vit.gelu(x)))(xb).dtype == jnp.bfloat16

    def saved(f):  # array residuals kept for the backward pass
        return [line for line in _printed(ad_checkpoint.print_saved_residuals, lambda x: jnp.sum(f(x)), x)
                if line.startswith("f32[2001]")]

    assert len(saved(vit.gelu)) == 1  # only x
    assert len(saved(lambda x: jax.nn.gelu(x, approximate=False))) == 3


def _printed(fn, *args):
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        fn(*args)
    return buf.getvalue().splitlines()


def test_bench_record_is_consistent():
    config = make_tiny_config()
    config.model.update(scan=True, remat="dots")  # XLA's count is taken without the scan (a loop counts once)
    r = step_speed.measure_jax(config, batch=8, steps=2, warmup=1)
    model = mae.from_config(config)
    shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), *pretraining_step.dummy_inputs(model.specs)))
    assert r["params"] == sum(int(np.prod(x.shape)) for x in jax.tree.leaves(shapes))
    assert r["analytic_gflops_per_clip"] == pytest.approx(flops.from_config(config)["train_flops_per_clip"] / 1e9)
    assert abs(r["xla_gflops_per_clip"] - r["analytic_gflops_per_clip"]) / r["xla_gflops_per_clip"] < 0.25
    assert r["clips_per_s"] == pytest.approx(8 / r["step_s"]["median"])
    assert r["step_s"]["n"] == 2 and r["step_s"]["p10"] <= r["step_s"]["median"] <= r["step_s"]["p90"]
    assert r["mfu"] is None and r["peak_tflops"] is None  # no peak is known for a CPU
    assert r["matmul_tflops"] > 0
    assert r["matmul_floor_step_s"] == pytest.approx(r["analytic_gflops_per_clip"] * 1e9 * 8 / (r["matmul_tflops"] * 1e12))
    assert step_speed.peak_tflops("NVIDIA H200") == 989.0 and step_speed.peak_tflops("TPU v5 lite") == 197.0
    assert step_speed.peak_tflops("cpu", 1.5) == 1.5
    # the default batch: the config's on accelerators; on CPU at most 16, a multiple of the device count
    assert step_speed.default_batch(64, "gpu", 8) == 64 and step_speed.default_batch(8, "cpu", 8) == 8
    assert step_speed.default_batch(64, "cpu", 1) == 16 and step_speed.default_batch(64, "cpu", 6) == 18
    assert "GFLOP per clip" in step_speed.format_table({"step": r})
    # a side-by-side comparison whose step times spread more than 1.5x (p90/p10) is flagged, a steady one is not
    steady = {"median": 1.0, "p10": 0.9, "p90": 1.1, "n": 30}
    wild = {"median": 5.7, "p10": 3.7, "p90": 13.8, "n": 30}  # the reported case: a 5.72x speed-up from this
    for peer_s, flagged in ((steady, False), (wild, True)):
        peer = {"shapes": "video", "matmul_floor_step_s": 0.1, "speedup": peer_s["median"], "rounds": 9,
                "noisy": max(step_speed.spread(peer_s), step_speed.spread(steady)) > step_speed.NOISY_SPREAD,
                "mumae_jax": {"step_s": steady}, "transformers": {"step_s": peer_s, "framework": "torch",
                                                                  "attention": "sdpa"}}
        row = [ln for ln in step_speed.format_table({"step": r, "peer": peer}).splitlines() if "speed-up" in ln][0]
        assert ("NOISY: p90/p10 spread 3.7 > 1.5 after 9 rounds" in row) == flagged, row
