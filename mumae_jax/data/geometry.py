"""What one clip becomes, as one frozen value passed to every input builder (pretraining, episodes, clips)."""
from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class ClipGeometry:
    """What one clip becomes: `num_frames` frames of `image_size`² (pretraining: every `frame_stride`-th frame;
    episodes: resized to `resize_to` then centre-cropped) and each of `sensors` as [sensor_length, 3]."""

    num_frames: int
    image_size: int
    sensor_length: int
    sensors: tuple[str, ...]
    frame_stride: int = 2
    resize_to: int = 0  # 0: round(image_size · 256 / 224), the official 224 -> 256 ratio

    def __post_init__(self):
        object.__setattr__(self, "sensors", tuple(self.sensors))
        if not self.resize_to:
            object.__setattr__(self, "resize_to", round(self.image_size * 256 / 224))

    def as_dict(self) -> dict:
        """The fields as plain JSON values (for reports)."""
        return {**dataclasses.asdict(self), "sensors": list(self.sensors)}

    @classmethod
    def from_specs(cls, specs, frame_stride: int = 2) -> "ClipGeometry":
        """The geometry a pretraining model's modality specs fix (one frame modality; series of one length)."""
        from mumae_jax.models import kinds

        video = [s for s in specs if kinds.of(s).frames]
        series = [s for s in specs if not kinds.of(s).frames]
        if len(video) != 1:
            raise ValueError("the pretraining input pipeline feeds exactly one video modality")
        lengths = {s.input_shape[0] for s in series}
        if len(lengths) > 1:
            raise ValueError(f"all sensor modalities must have the same length, got {sorted(lengths)}")
        return cls(num_frames=video[0].input_shape[0], image_size=video[0].input_shape[1],
                   sensor_length=lengths.pop() if lengths else 128, sensors=tuple(s.name for s in series),
                   frame_stride=frame_stride)
