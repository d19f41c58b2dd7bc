"""Chunked attention equals plain attention (values and gradients); the benchmark's record is consistent."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import make_tiny_config
from mumae_jax import bench, flops, train_state
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


def test_bench_record_is_consistent():
    config = make_tiny_config()
    r = bench.measure_jax(config, batch=8, steps=2, warmup=1)
    model = mae.from_config(config)
    shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), *train_state.dummy_inputs(model.specs)))
    assert r["params"] == sum(int(np.prod(x.shape)) for x in jax.tree.leaves(shapes))
    assert r["analytic_gflops_per_clip"] == pytest.approx(flops.from_config(config)["train_flops_per_clip"] / 1e9)
    assert abs(r["xla_gflops_per_clip"] - r["analytic_gflops_per_clip"]) / r["xla_gflops_per_clip"] < 0.25
    assert r["clips_per_s"] == pytest.approx(8 / r["step_s"]["median"])
    assert r["step_s"]["n"] == 2 and r["step_s"]["p10"] <= r["step_s"]["median"] <= r["step_s"]["p90"]
    assert r["mfu"] is None and r["peak_tflops"] is None  # no peak is known for a CPU
    assert bench.peak_tflops("NVIDIA H200") == 989.0 and bench.peak_tflops("TPU v5 lite") == 197.0
    assert bench.peak_tflops("cpu", 1.5) == 1.5
    assert "GFLOP per clip" in bench.format_table({"step": r})
