"""MMAct trimmed-release layout: path parsing, tree scanning, safe archive extraction, sensor CSV checks.

No TensorFlow here (numpy only), so worker processes of `prepare_mmact` import it cheaply.

Layout (docs/official_code.md §1.1):
- video:  `.../subjectN/camK/sceneS/sessionT/<action>.mp4`
- sensor: `.../<sensor>_clip/subjectN/sceneS/sessionT/<action>.csv`; CSV without a header, 4 columns
  `timestamp, x, y, z`. One recording per (subject, scene, session, action) instance, shared by every
  camera of that instance.

Trees are scanned recursively and each file is parsed from its trailing path components, so any
prefix (an archive's top-level folder, for example) is accepted.
"""
from __future__ import annotations

import dataclasses
import os
import re
import shutil
import tarfile
from pathlib import Path, PurePosixPath
from typing import Iterable, Sequence

import numpy as np

DEFAULT_SENSORS = ("acc_phone", "acc_watch", "gyro", "orientation")
VIDEO_EXTENSIONS = (".mp4",)

# Reasons recorded in the manifest (status "dropped"), in the order checks are made for a clip.
REASONS = {
    "unrecognised_path": "a file in a video/sensor tree whose path does not follow the MMAct layout",
    "camera_excluded": "the clip's camera is not in --cameras",
    "unknown_class": "action name not in the known class list (--classes; default the 33 Mu-MAE classes)",
    "no_sensors": "a video whose (subject, scene, session, action) has no file in any sensor tree",
    "sensor_missing": "a video whose instance lacks the file of some sensors (detail names them)",
    "sensor_empty": "a sensor CSV that is empty (0 bytes or only blank lines)",
    "sensor_unparsable": "a sensor CSV line without exactly 4 comma-separated numbers (detail: line number)",
    "sensor_non_finite": "a sensor CSV with NaN or infinite values (detail: line number)",
    "sensor_non_monotonic": "sensor timestamps not strictly increasing (detail: line number)",
    "sensor_constant_axis": "a sensor axis (x, y or z) constant over the whole file",
    "video_unreadable": "the video cannot be opened or has no video stream (e.g. not a video, moov atom lost)",
    "video_corrupt": "decoding fails midway, or fewer frames decode than the container declares (truncated)",
    "too_few_frames": "fewer decoded frames than --min_frames",
    "no_video": "a sensor recording (instance) with no video of any camera",
}

_NUM = r"(\d+)"
_ACTION = r"([A-Za-z0-9][A-Za-z0-9_\-]*)"
_VIDEO_RE = [re.compile(p) for p in (rf"subject{_NUM}", rf"cam{_NUM}", rf"scene{_NUM}", rf"session{_NUM}")]


class LayoutError(ValueError):
    """Bad input layout or arguments (message names the offending path)."""


class UnsafeArchiveError(LayoutError):
    """An archive member would be written outside the extraction directory (or is a device/link trick)."""


@dataclasses.dataclass(frozen=True, order=True)
class InstanceKey:
    """One recording: (subject, scene, session, action); sort order is by this tuple."""
    subject: int
    scene: int
    session: int
    action: str

    @property
    def name(self) -> str:
        return f"subject{self.subject}_scene{self.scene}_session{self.session}_{self.action}"


@dataclasses.dataclass(frozen=True)
class VideoClip:
    """One video file = one instance seen by one camera."""
    subject: int
    camera: int
    scene: int
    session: int
    action: str
    path: str

    @property
    def instance(self) -> InstanceKey:
        return InstanceKey(self.subject, self.scene, self.session, self.action)

    @property
    def name(self) -> str:
        return clip_name(self.subject, self.camera, self.scene, self.session, self.action)


def clip_name(subject: int, camera: int, scene: int, session: int, action: str) -> str:
    return f"subject{subject}_cam{camera}_scene{scene}_session{session}_{action}"


def _match_ints(parts: Sequence[str], patterns) -> list[int] | None:
    out = []
    for part, pat in zip(parts, patterns):
        m = pat.fullmatch(part)
        if not m:
            return None
        out.append(int(m.group(1)))
    return out


def parse_video_path(path: str | os.PathLike) -> tuple[int, int, int, int, str] | None:
    """`.../subjectN/camK/sceneS/sessionT/<action>.mp4` → (subject, camera, scene, session, action) or None."""
    parts = PurePosixPath(Path(path).as_posix()).parts
    if len(parts) < 5:
        return None
    stem, ext = os.path.splitext(parts[-1])
    if ext.lower() not in VIDEO_EXTENSIONS or not re.fullmatch(_ACTION, stem):
        return None
    nums = _match_ints(parts[-5:-1], _VIDEO_RE)
    if nums is None:
        return None
    return nums[0], nums[1], nums[2], nums[3], stem


def parse_sensor_path(path: str | os.PathLike) -> InstanceKey | None:
    """`.../subjectN/sceneS/sessionT/<action>.csv` → InstanceKey or None."""
    parts = PurePosixPath(Path(path).as_posix()).parts
    if len(parts) < 4:
        return None
    stem, ext = os.path.splitext(parts[-1])
    if ext.lower() != ".csv" or not re.fullmatch(_ACTION, stem):
        return None
    nums = _match_ints(parts[-4:-1], (_VIDEO_RE[0], _VIDEO_RE[2], _VIDEO_RE[3]))
    if nums is None:
        return None
    return InstanceKey(nums[0], nums[1], nums[2], stem)


def _walk_files(root: Path) -> Iterable[Path]:
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for f in sorted(filenames):
            if not f.startswith("."):
                yield Path(dirpath) / f


def scan_videos(root: str | os.PathLike) -> tuple[list[VideoClip], list[str]]:
    """All `.mp4` under root → (parsed clips sorted by name, unparsable .mp4 paths)."""
    clips, bad = [], []
    for p in _walk_files(Path(root)):
        if p.suffix.lower() not in VIDEO_EXTENSIONS:
            continue
        parsed = parse_video_path(p.relative_to(root))
        if parsed is None:
            bad.append(str(p))
        else:
            clips.append(VideoClip(*parsed, path=str(p)))
    clips.sort(key=lambda c: c.name)
    return clips, bad


def scan_sensor_tree(root: str | os.PathLike) -> tuple[dict[InstanceKey, str], list[str]]:
    """All `.csv` under root → ({instance: path}, unparsable .csv paths)."""
    found, bad = {}, []
    for p in _walk_files(Path(root)):
        if p.suffix.lower() != ".csv":
            continue
        key = parse_sensor_path(p.relative_to(root))
        if key is None:
            bad.append(str(p))
        elif key in found:
            raise LayoutError(f"two sensor files for {key.name}: {found[key]} and {p}")
        else:
            found[key] = str(p)
    return found, bad


# ----------------------------------------------------------------------------------------------------
# Archives
# ----------------------------------------------------------------------------------------------------

def check_member(member: tarfile.TarInfo, archive: str) -> None:
    """Raise UnsafeArchiveError if extracting `member` could write outside the destination."""
    name = member.name
    where = f"archive {archive}: member {name!r}"
    pure = PurePosixPath(name.replace("\\", "/"))
    if pure.is_absolute() or re.match(r"^[A-Za-z]:", name):
        raise UnsafeArchiveError(f"unsafe {where}: absolute path")
    if ".." in pure.parts:
        raise UnsafeArchiveError(f"unsafe {where}: contains '..' (path traversal)")
    if member.ischr() or member.isblk() or member.isfifo():
        raise UnsafeArchiveError(f"unsafe {where}: device or fifo entry")
    if member.issym() or member.islnk():
        link = PurePosixPath(member.linkname.replace("\\", "/"))
        if link.is_absolute():
            raise UnsafeArchiveError(f"unsafe {where}: link to absolute path {member.linkname!r}")
        base = pure.parent if member.issym() else PurePosixPath()
        depth = 0
        for part in (base / link).parts:
            depth += -1 if part == ".." else (0 if part == "." else 1)
            if depth < 0:
                raise UnsafeArchiveError(f"unsafe {where}: link {member.linkname!r} points outside the archive")


def safe_extract(archive: str | os.PathLike, dest: str | os.PathLike) -> Path:
    """Extract a (gzipped) tar into `dest` member by member, refusing unsafe members.

    Each member is checked by `check_member` and extracted with tarfile's `filter='data'` (which also
    refuses traversal, links out of `dest` and special files). Extraction goes into `dest + '.partial'`
    and is renamed to `dest` at the end; a finished `dest` is reused as is. On an unsafe member the
    partial directory is removed and UnsafeArchiveError raised.
    """
    archive, dest = str(archive), Path(dest)
    if dest.is_dir():
        return dest
    partial = dest.with_name(dest.name + ".partial")
    if partial.exists():
        shutil.rmtree(partial)
    partial.mkdir(parents=True)
    try:
        with tarfile.open(archive, "r:*") as tar:
            for member in tar:
                check_member(member, archive)
                try:
                    tar.extract(member, partial, filter="data")
                except tarfile.FilterError as e:
                    raise UnsafeArchiveError(f"unsafe archive {archive}: member {member.name!r}: {e}") from e
    except tarfile.TarError as e:
        shutil.rmtree(partial, ignore_errors=True)
        raise LayoutError(f"cannot read archive {archive}: {e}") from e
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    partial.rename(dest)
    return dest


def _archive_for(base: Path) -> Path | None:
    for ext in (".tar.gz", ".tgz", ".tar"):
        p = base.with_name(base.name + ext)
        if p.is_file():
            return p
    return None


def resolve_tree(path: str | os.PathLike, work_dir: str | os.PathLike, name: str) -> Path | None:
    """A tree given as a directory, or as `<path>.tar.gz` / a path ending in .tar.gz (extracted safely
    into `work_dir/name`). None if neither exists."""
    p = Path(path)
    if p.is_dir():
        return p
    if p.is_file() and (p.name.endswith((".tar.gz", ".tgz", ".tar"))):
        return safe_extract(p, Path(work_dir) / name)
    arch = _archive_for(p)
    if arch is not None:
        return safe_extract(arch, Path(work_dir) / name)
    return None


SEARCH_DEPTH = 3  # directory levels below --src searched for a tree whose default name is absent


def _dirs_by_level(root: Path, depth: int) -> Iterable[list[Path]]:
    """The directories 1..depth levels below root, one sorted list per level (hidden ones skipped)."""
    level = [root]
    for _ in range(depth):
        level = [c for d in level for c in sorted(d.iterdir()) if c.is_dir() and not c.name.startswith(".")]
        yield level


def _shallowest(src, test, what: str, flag: str) -> Path | None:
    """The one directory below `src` (shallowest level first) that passes `test`; several at that level are
    ambiguous (an error naming them and `flag`); None if there is none."""
    for level in _dirs_by_level(Path(src), SEARCH_DEPTH):
        hits = [d for d in level if test(d)]
        if len(hits) > 1:
            raise LayoutError(f"several {what} trees under {src}: {', '.join(map(str, hits))}; choose one with {flag}")
        if hits:
            return hits[0]
    return None


def find_video_tree(src: str | os.PathLike) -> Path | None:
    """The video tree under a release folder whose name is not `video` (`trimmed/`, `RGB/`, ...): the
    shallowest directory with subjectN/camK/sceneS/sessionT/<action>.mp4 below it."""
    def holds_videos(d: Path) -> bool:
        first = next(iter(d.glob("subject*/cam*/scene*/session*/*.mp4")), None)
        return first is not None and parse_video_path(first.relative_to(d)) is not None

    return _shallowest(src, holds_videos, "video", "--video_dir")


def find_sensor_tree(src: str | os.PathLike, sensor: str) -> Path | None:
    """The shallowest `<sensor>_clip` directory under a release folder (e.g. `Sensor_trimmed/gyro_clip/`)."""
    return _shallowest(src, lambda d: d.name == f"{sensor}_clip", f"{sensor!r} sensor", "--sensor_root")


# ----------------------------------------------------------------------------------------------------
# Sensor CSVs
# ----------------------------------------------------------------------------------------------------

class SensorFileError(ValueError):
    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason, self.detail = reason, detail


def read_sensor_csv(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """Read and check an MMAct sensor CSV → (timestamps float64 [L], values float32 [L, 3]), kept raw.

    Raises SensorFileError(reason, detail) with reason in sensor_empty, sensor_unparsable,
    sensor_non_finite, sensor_non_monotonic, sensor_constant_axis (line numbers are 1-based).
    """
    with open(path, "r", encoding="utf-8", errors="replace") as f:
        lines = f.read().splitlines()
    while lines and not lines[-1].strip():
        lines.pop()
    if not any(line.strip() for line in lines):
        raise SensorFileError("sensor_empty", f"{path}: no data")
    rows = np.empty((len(lines), 4), np.float64)
    for i, line in enumerate(lines):
        fields = line.split(",")
        if len(fields) != 4:
            raise SensorFileError("sensor_unparsable",
                                  f"{path}: line {i + 1}: expected 4 columns, got {len(fields)}: {line[:80]!r}")
        try:
            rows[i] = [float(x) for x in fields]
        except ValueError:
            raise SensorFileError("sensor_unparsable",
                                  f"{path}: line {i + 1}: non-numeric value: {line[:80]!r}") from None
    ts, vals = rows[:, 0], rows[:, 1:]
    with np.errstate(over="ignore"):
        vals32 = vals.astype(np.float32)  # a value beyond float32 range becomes inf, caught below
    bad = ~(np.isfinite(rows).all(axis=1) & np.isfinite(vals32).all(axis=1))
    if bad.any():
        i = int(np.argmax(bad))
        raise SensorFileError("sensor_non_finite", f"{path}: line {i + 1}: NaN or infinite value: {lines[i][:80]!r}")
    d = np.diff(ts)
    if (d <= 0).any():
        i = int(np.argmax(d <= 0)) + 1
        raise SensorFileError("sensor_non_monotonic",
                              f"{path}: line {i + 1}: timestamp {ts[i]!r} not after {ts[i - 1]!r} (line {i})")
    const = [ax for j, ax in enumerate("xyz") if vals32[:, j].min() == vals32[:, j].max()]
    if const:
        raise SensorFileError("sensor_constant_axis",
                              f"{path}: axis {','.join(const)} constant over {len(ts)} rows")
    return ts.copy(), np.ascontiguousarray(vals32)


def load_class_list(path: str | os.PathLike | None) -> tuple[str, ...]:
    """Class names from a file (one per line, '#' comments) or the 33 Mu-MAE classes."""
    if path is None:
        from mumae_jax.data.synthetic import CLASSES
        return tuple(CLASSES)
    p = Path(path)
    if not p.is_file():
        raise LayoutError(f"--classes file not found: {p}")
    names = [ln.split("#", 1)[0].strip() for ln in p.read_text(encoding="utf-8").splitlines()]
    names = [n for n in names if n]
    if not names:
        raise LayoutError(f"--classes file {p} lists no class names")
    return tuple(names)

