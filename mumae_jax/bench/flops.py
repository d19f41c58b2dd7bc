"""Analytic FLOP count of the Mu-MAE pretraining step (multiply-add = 2 FLOPs).

Per example, forward:
  embedding      2 · n_vis_m · token_dim_m · D          only the visible tokens are embedded
  encoder        per block on n = Σ_m n_vis_m tokens:
                 2·n·D·3D (qkv) + 2·n·D·D (proj) + 2·2·n·D·M (MLP) + 2·2·n²·D (q·kᵀ and attn·v)
  enc→dec        2 · n · D · Dd
  decoder_m      per block on N_m tokens (visible + mask tokens; fewer with decoder_ratio < 1), width Dd,
                 MLP Md, as above
  head_m         2 · n_decoded_m · Dd · token_dim_m
Training = forward + backward, the backward costing 2× the forward for every matmul except the
embedding, whose input needs no gradient (1×: the weight gradient only). Element-wise work (norms,
softmax, GELU, the optimizer) is left out: it is a few percent of the total, which is why XLA's count
(`cost_analysis`) lands slightly above this one.
"""
from __future__ import annotations

from typing import Sequence

from mumae_jax.models.modality import ModalitySpec


def _blocks(depth: int, n: int, d: int, mlp: int) -> int:
    per_block = 2 * n * d * 3 * d + 2 * n * d * d + 2 * 2 * n * d * mlp + 2 * 2 * n * n * d
    return depth * per_block


def forward_flops(specs: Sequence[ModalitySpec], *, width: int, depth: int, mlp_dim: int, decoder_width: int,
                  decoder_depth: int, decoder_mlp_dim: int, **_) -> dict[str, int]:
    """Forward FLOPs per example, by part: {'embed', 'encoder', 'encoder_to_decoder', 'decoder_<m>', 'head_<m>'}."""
    n_vis = sum(s.num_visible for s in specs)
    out = {"embed": sum(2 * s.num_visible * s.token_dim * width for s in specs),
           "encoder": _blocks(depth, n_vis, width, mlp_dim),
           "encoder_to_decoder": 2 * n_vis * width * decoder_width}
    for s in specs:
        n_dec = s.num_visible + s.num_decoded  # all tokens, unless decoder masking drops some
        out[f"decoder_{s.name}"] = _blocks(decoder_depth, n_dec, decoder_width, decoder_mlp_dim)
        out[f"head_{s.name}"] = 2 * s.num_decoded * decoder_width * s.token_dim
    return out


def train_flops_per_example(specs: Sequence[ModalitySpec], **sizes) -> int:
    """Forward + backward FLOPs of one training example (see module docstring)."""
    fwd = forward_flops(specs, **sizes)
    return 3 * sum(fwd.values()) - fwd["embed"]


def from_config(config) -> dict[str, float]:
    """{'train_flops_per_clip', 'forward_flops_per_clip', and the forward parts} of a pretraining config."""
    from mumae_jax.models import modality, variants

    specs = modality.specs_from_config(tuple(config.modalities), config.modality)
    sizes = variants.resolve(config.model)
    fwd = forward_flops(specs, **sizes)
    return {"train_flops_per_clip": train_flops_per_example(specs, **sizes),
            "forward_flops_per_clip": sum(fwd.values()), **{f"forward_{k}": v for k, v in fwd.items()}}


def xla_flops_per_clip(config, batch: int, mesh=None) -> float:
    """XLA's cost analysis of the lowered training step, per clip.

    XLA counts the body of a loop once, so the step is lowered with attention_impl='xla' (the chunked
    attention is a loop over query blocks), without the layer scan and without rematerialisation; the
    arithmetic of the model is the same.
    """
    import jax
    import numpy as np

    from mumae_jax.core import sharding
    from mumae_jax.steps import pretraining_step

    config = config.copy_and_resolve_references()
    config.model.attention_impl = "xla"
    config.model.remat = "none"
    config.model.scan = False
    mesh = mesh if mesh is not None else sharding.make_mesh()
    model, _, abstract, step = pretraining_step.step_for_config(config, batch, mesh)
    inputs = {s.name: jax.ShapeDtypeStruct((batch,) + s.input_shape, np.float32,
                                           sharding=sharding.batch_sharding(mesh)) for s in model.specs}
    cost = step.lower(abstract, inputs).cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    return float(cost["flops"]) / batch
