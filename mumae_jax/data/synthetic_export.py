"""The embedded synthetic dataset written out as an MMAct release tree (mp4 videos + sensor CSVs).

    python -m mumae_jax.data.synthetic_export --out /tmp/mmact_like [--classes walking,kicking,...]
        [--subjects 2] [--sessions 1] [--cameras 2] [--size 64x48] [--fps 10]

writes `video/subjectN/camK/sceneS/sessionT/<action>.mp4` and
`<sensor>_clip/subjectN/sceneS/sessionT/<action>.csv` (epoch-millisecond timestamps, three values a
line), the layout `python -m mumae_jax.data.prepare_mmact` reads. It is a real input for the prepare
command and everything after it (the fault suite, `mumae_jax/faults.py`, builds its dataset this way);
the clips are the synthetic ones, so nothing here stands in for MMAct's numbers. Needs PyAV
(`pip install 'mumae_jax[video]'`).
"""
from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Sequence

import numpy as np

from mumae_jax.core import cli
from mumae_jax.data import synthetic as S

T0_MS = 1_553_000_000_000.0  # recordings start at an epoch-millisecond clock, like a phone's


def _write_mp4(path: Path, frames: np.ndarray, fps: float) -> None:
    """frames uint8 [T, H, W, 3] -> a libx264 yuv420p mp4 (H and W even)."""
    import av

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}.mp4")
    with av.open(str(tmp), "w") as container:
        stream = container.add_stream("libx264", rate=int(round(fps)))
        stream.height, stream.width = frames.shape[1:3]
        stream.pix_fmt = "yuv420p"
        stream.options = {"preset": "ultrafast", "crf": "18"}
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")))
        container.mux(stream.encode())
    os.replace(tmp, path)


def _write_csv(path: Path, timestamps_s: np.ndarray, values: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    ms = T0_MS + timestamps_s * 1000.0
    path.write_text("".join(f"{t:.3f},{x:.6f},{y:.6f},{z:.6f}\n" for t, (x, y, z) in zip(ms, values)),
                    encoding="utf-8")


def write_release_tree(out: str | os.PathLike, classes: Sequence[str], *, num_subjects: int = 2,
                       num_sessions: int = 1, num_cameras: int = 2, size: tuple[int, int] = (48, 64),
                       fps: float = 10.0, seed: int = 0) -> list[str]:
    """Writes the clips of `classes` (synthetic, person framing) under `out`; returns the clip names.

    size: (height, width) of the videos, both even. Each (subject, scene, session, action) instance gets
    one CSV per sensor, shared by its cameras, as in MMAct.
    """
    unknown = [c for c in classes if c not in S.CLASS_TO_ID]
    if unknown or not classes:
        raise ValueError(f"unknown or no classes {unknown or list(classes)}; known: {', '.join(S.CLASSES)}")
    if size[0] % 2 or size[1] % 2:
        raise ValueError(f"size {size}: height and width must be even (yuv420p)")
    data = S.SyntheticMMAct(seed=seed, num_subjects=num_subjects, num_sessions=num_sessions,
                            num_cameras=num_cameras, fps=fps)
    out = Path(out)
    names, written = [], set()
    for clip in data.clips(classes):
        i = clip.instance
        frames = data.render(clip, np.arange(data.num_frames(clip)), size=tuple(size))
        _write_mp4(out / "video" / f"subject{i.subject}" / f"cam{clip.camera}" / f"scene{i.scene}" /
                   f"session{i.session}" / f"{i.action}.mp4", frames, fps)
        if i not in written:
            for sensor, (ts, vals) in data.sensors(clip).items():
                _write_csv(out / f"{sensor}_clip" / f"subject{i.subject}" / f"scene{i.scene}" /
                           f"session{i.session}" / f"{i.action}.csv", ts, vals)
            written.add(i)
        names.append(clip.name)
    return names


def parser() -> cli.Parser:
    p = cli.parser("python -m mumae_jax.data.synthetic_export", __doc__)
    p.add_argument("--out", required=True, help="where the tree goes (created)")
    p.add_argument("--classes", default="walking,kicking,jumping,running,throwing,carrying",
                   help="comma-separated class names (default: %(default)s)")
    p.add_argument("--subjects", type=int, default=2, help="subjects (default: %(default)s)")
    p.add_argument("--sessions", type=int, default=1, help="sessions per subject (default: %(default)s)")
    p.add_argument("--cameras", type=int, default=2, help="cameras, 1-4 (default: %(default)s)")
    p.add_argument("--size", default="64x48", help="video WIDTHxHEIGHT, even (default: %(default)s)")
    p.add_argument("--fps", type=float, default=10.0, help="video frame rate (default: %(default)s)")
    return p


def main(argv=None) -> int:
    return cli.run(_run, parser().parse_args(argv))


def _run(a) -> int:
    width, height = (int(v) for v in a.size.lower().split("x"))
    names = write_release_tree(a.out, [c for c in a.classes.split(",") if c], num_subjects=a.subjects,
                               num_sessions=a.sessions, num_cameras=a.cameras, size=(height, width), fps=a.fps)
    print(f"wrote {len(names)} clips to {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
