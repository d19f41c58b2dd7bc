"""PyTorch's default parameter initialisation, for layers whose official counterparts keep it.

nn.Linear / nn.Conv*d draw weights from kaiming_uniform(a=sqrt(5)) = U(-1/sqrt(fan_in), 1/sqrt(fan_in))
and biases from the same range, where fan_in = in_channels x kernel volume.
"""
from __future__ import annotations

import math
from typing import Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

# variance_scaling(1/3, fan_in, uniform) samples U(+-sqrt(3 * (1/3) / fan_in)) = U(+-1/sqrt(fan_in));
# flax computes fan_in from the kernel shape (receptive field x input channels), like PyTorch.
torch_kernel_init = nn.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform")


def torch_bias_init(fan_in: int):
    """U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for a bias (its own shape does not tell the fan-in)."""
    bound = 1.0 / math.sqrt(fan_in)

    def init(key, shape, dtype=jnp.float32):
        return jax.random.uniform(key, shape, dtype, -bound, bound)

    return init


def torch_dense(features: int, fan_in: int, use_bias: bool = True, name: Optional[str] = None,
                dtype=jnp.float32) -> nn.Dense:
    """nn.Dense initialised like PyTorch's nn.Linear (kernel [fan_in, features])."""
    return nn.Dense(features, use_bias=use_bias, dtype=dtype, kernel_init=torch_kernel_init,
                    bias_init=torch_bias_init(fan_in), name=name)
