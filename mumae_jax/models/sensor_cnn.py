"""Sensor unimodal encoder of the Mu-MAE one-shot model (`SensorCNN(3, 16, 64)`, docs/official_code.md §3.2 item 2).

Input is one sensor clip [N, L=128, C=3] (our pipeline layout; the official tensor is [N, 128, 1, 3],
which is accepted too). Forward:

    to channels-first [N, 3, 128]  (see `layout`)
    Conv1d(3 -> 16, k=3, VALID)   [N, 16, 126]  (computed channels-last as [N, 126, 16])
    ReLU, MaxPool(2)              [N, 16, 63]
    flatten, channel-major        [N, 1008]     index = c * 63 + t, exactly PyTorch's `view(N, -1)`
    Linear(1008 -> 64)            [N, 64]

`layout`:
  'transpose'     (default, correct) channel c = sensor axis c, time t = sample t, i.e. x.transpose(0, 2, 1).
  'official_view' reproduce the official `x.view(N, 3, 128)` of the [N, 128, 1, 3] memory: a raw row-major
                  reshape, so channel c, time t reads flat[c * 128 + t] of the (128, 3) clip (time and axes
                  mixed; docs/official_code.md §6 item 2).

Parameter layout (for converting PyTorch weights): `conv.kernel` [k=3, in=3, out=16] = torch
`weight.permute(2, 1, 0)`; `fc.kernel` [1008, 64] = torch `weight.T` with rows in the same channel-major order,
so no row permutation is needed. All weights and biases use PyTorch's default init U(+-1/sqrt(fan_in)).
"""
from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp

from mumae_jax.models.initializers import torch_bias_init, torch_dense, torch_kernel_init

LAYOUTS = ("transpose", "official_view")

def to_channels_first(x: jnp.ndarray, layout: str = "transpose") -> jnp.ndarray:
    """[N, L, C] (or official [N, L, 1, C]) -> [N, C, L] the way `layout` says (see module docstring)."""
    if layout not in LAYOUTS:
        raise ValueError(f"layout={layout!r}, expected one of {LAYOUTS}")
    if x.ndim == 4:
        if x.shape[2] != 1:
            raise ValueError(f"expected [N, L, 1, C], got {x.shape}")
        x = x.reshape(x.shape[0], x.shape[1], x.shape[3])
    if x.ndim != 3:
        raise ValueError(f"expected [N, L, C], got {x.shape}")
    n, length, c = x.shape
    if layout == "transpose":
        return jnp.transpose(x, (0, 2, 1))
    return jnp.reshape(x, (n, c, length))  # row-major reshape == torch .view on contiguous memory


class SensorCNN(nn.Module):
    """[N, 128, 3] (or [N, 128, 1, 3]) -> [N, out]; Conv1d -> ReLU -> MaxPool(2) -> flatten -> Linear."""

    hidden: int = 16
    out: int = 64
    kernel_size: int = 3
    layout: str = "transpose"

    @nn.compact
    def __call__(self, x):
        x = to_channels_first(x, self.layout)  # [N, C, L]
        c_in = x.shape[1]
        fan_in = c_in * self.kernel_size
        x = jnp.transpose(x, (0, 2, 1))  # channels-last [N, L, C] for flax
        x = nn.Conv(self.hidden, (self.kernel_size,), padding="VALID", kernel_init=torch_kernel_init,
                    bias_init=torch_bias_init(fan_in), name="conv")(x)  # [N, L-k+1, hidden]
        x = nn.relu(x)
        x = nn.max_pool(x, (2,), strides=(2,), padding="VALID")  # [N, (L-k+1)//2, hidden]
        n = x.shape[0]
        x = jnp.transpose(x, (0, 2, 1)).reshape(n, -1)  # channel-major flatten: index c * T' + t
        return torch_dense(self.out, x.shape[-1], name="fc")(x)
