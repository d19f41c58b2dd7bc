"""The PyTorch peer of the benchmark: a `transformers` VideoMAEForPreTraining training step.

Same video shapes, sizes and mask ratio as a video-only mumae_jax config (via `tools/hf_keys.hf_config`);
one step = forward with a fixed tube mask + loss, backward, AdamW(β 0.9/0.95, wd 0.05). Needs torch and
transformers (the `test` extra); nothing is downloaded.
"""
from __future__ import annotations

import time
from typing import Callable

import numpy as np


def video_only(config):
    """A copy of a pretraining config with only its video modality (VideoMAE)."""
    video = config.copy_and_resolve_references()
    video.modalities = ("video",)
    return video


def make_step(config, batch: int, seed: int = 0) -> tuple[Callable[[], float], dict]:
    """(step() -> seconds of one synchronous training step, info) for the video modality of `config`."""
    import torch
    import transformers

    from mumae_jax.models import modality
    from mumae_jax.weights import hf_keys

    video_cfg = video_only(config)
    spec = modality.specs_from_config(("video",), video_cfg.modality)[0]
    kwargs = hf_keys.hf_config(video_cfg, strict=False)
    torch.manual_seed(seed)
    model = transformers.VideoMAEForPreTraining(transformers.VideoMAEConfig(**kwargs)).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, betas=(0.9, 0.95), weight_decay=0.05)
    t, h, w, c = spec.input_shape
    gen = torch.Generator().manual_seed(seed)
    pixels = torch.randn(batch, t, c, h, w, generator=gen)
    slices, per_slice = spec.grid
    masked = int(spec.mask_ratio * per_slice)  # tube mask: the same spatial mask in every temporal slice
    rng = np.random.default_rng(seed)
    mask = np.zeros((batch, slices, per_slice), bool)
    for b in range(batch):
        mask[b, :, rng.permutation(per_slice)[:masked]] = True
    bool_masked_pos = torch.from_numpy(mask.reshape(batch, -1))

    def step() -> float:
        t0 = time.perf_counter()
        loss = model(pixel_values=pixels, bool_masked_pos=bool_masked_pos).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return time.perf_counter() - t0

    info = {"framework": f"torch {torch.__version__} + transformers {transformers.__version__}",
            "params": int(sum(p.numel() for p in model.parameters())), "threads": torch.get_num_threads(),
            "attention": model.config._attn_implementation}
    return step, info
