"""The analytic FLOP count (mumae_jax/bench/flops.py) against XLA's cost analysis of the real training step."""
import pytest

from mumae_jax.configs import pretrain
from conftest import make_tiny_config
from mumae_jax.bench import flops


@pytest.mark.parametrize("arg", ["variant=Ti", "variant=Ti,modalities=video"])
def test_analytic_flops_match_xla_within_10_percent_on_ti(arg):
    config = pretrain.get_config(arg)  # full shapes: 16×224² video, 1568 tokens, four sensors
    analytic = flops.from_config(config)["train_flops_per_clip"]
    xla = flops.xla_flops_per_clip(config, 8)
    assert abs(xla - analytic) / xla < 0.10, (analytic / 1e9, xla / 1e9)
    assert analytic < xla  # element-wise work is left out of the analytic count


def test_analytic_flops_tiny_and_paper_figures():
    tiny = make_tiny_config()
    analytic = flops.from_config(tiny)["train_flops_per_clip"]
    assert abs(flops.xla_flops_per_clip(tiny, 8) - analytic) / analytic < 0.25  # small shapes: element-wise work weighs more
    # the figures: Mu-MAE-B ≈ 220 GFLOP per training clip, S ≈ 71, about half of B in the video decoder
    b = flops.from_config(pretrain.get_config("variant=B"))
    s = flops.from_config(pretrain.get_config("variant=S"))
    assert 205e9 < b["train_flops_per_clip"] < 225e9 and 65e9 < s["train_flops_per_clip"] < 75e9
    assert 0.45 < 3 * b["forward_decoder_video"] / b["train_flops_per_clip"] < 0.55
