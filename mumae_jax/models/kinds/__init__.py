"""Modality kinds behind a registry (`base.REGISTRY`): one module per kind (video.py, sensor.py).

    from mumae_jax.models import kinds
    kinds.get(spec.kind).tokens(spec, x)       # or kinds.of(spec)

Adding a kind is one new module with a registered `base.Kind` subclass, imported below
(docs/adding_a_modality_kind.md).
"""
from mumae_jax.models.kinds import sensor, video  # importing a kind registers it
from mumae_jax.models.kinds.base import REGISTRY, Kind, ModalitySpec, get, register

__all__ = ["REGISTRY", "Kind", "ModalitySpec", "get", "of", "register", "sensor", "video"]


def of(spec: ModalitySpec) -> Kind:
    """The kind of `spec`."""
    return get(spec.kind)
