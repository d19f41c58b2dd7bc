"""One-shot episodes as data: `Episode`, `EpisodeList`, MMAct clip names, and episode-list files.

File format (`save_episode_list` / `load_episode_list`), JSON, one episode per line:

    {"header": {"format": "mumae_jax.episodes", "version": 1, "way": 5, "shot": 1,
                "protocol": "official", "queries": 1, "distinct_instances": true, "seed": 0,
                "num_episodes": 10000, "classes": [...], "class_to_id": {...},
                "num_clips": 11678, "clips_sha256": "<sha256 of the sorted clip names, '\\n'-joined>",
                "generator": "numpy.random.default_rng(seed) (PCG64)"},
     "episodes": [
      {"classes":[...],"global_labels":[...],"support":[...],"support_labels":[...],"query":[...],"query_labels":[...]},
      ...
     ]}

Same inputs and seed -> byte-identical file. `verify_episode_list` checks a list against the current
records (every clip still exists and belongs to its episode class). `accuracy_with_ci` gives the
official "mean accuracy +- 95% CI" (1.96 * population std / sqrt(n), in percentage points).
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
from typing import Any, Iterable, Mapping, Optional, Sequence, Union

from etils import epath

import numpy as np

from mumae_jax.data.splits import ClipRecord, clip_name, instance_name

FORMAT_NAME = "mumae_jax.episodes"
FORMAT_VERSION = 1
PROTOCOLS = ("official", "trx")
GENERATOR = "numpy.random.default_rng(seed) (PCG64)"
_HEADER_KEYS = ("format", "version", "way", "shot", "protocol", "queries", "distinct_instances", "seed",
                "num_episodes", "classes", "class_to_id", "num_clips", "clips_sha256", "generator")
_EPISODE_KEYS = ("classes", "global_labels", "support", "support_labels", "query", "query_labels")
_CLIP_RE = re.compile(r"^subject(\d+)_cam(\d+)_scene(\d+)_session(\d+)_(.+)$")

PathLike = Union[str, os.PathLike]


def _check_int(name: str, value: Any, lo: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < lo:
        raise ValueError(f"{name} must be an int >= {lo}, got {value!r}")
    return int(value)


def _check_options(way, shot, protocol, queries) -> tuple[int, int, int]:
    if protocol not in PROTOCOLS:
        raise ValueError(f"unknown protocol {protocol!r}; expected one of {', '.join(PROTOCOLS)}")
    return _check_int("way", way, 1), _check_int("shot", shot, 1), _check_int("queries", queries, 1)


# ----------------------------------------------------------------------------------------------------
# Clip names
# ----------------------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class ClipId:
    """A clip record (`splits.ClipRecord`) parsed from an MMAct clip name."""
    action: str
    subject: int
    scene: int
    session: int
    camera: int


def parse_clip_name(name: str) -> ClipId:
    """Parse `subject{N}_cam{K}_scene{S}_session{T}_{action}` (a leading `action/` folder and a file
    extension such as `.mp4` are accepted and dropped). ValueError if it does not match."""
    stem = os.path.basename(name.strip())
    stem = re.sub(r"\.(mp4|avi|csv)$", "", stem)
    m = _CLIP_RE.match(stem)
    if not m:
        raise ValueError(f"not an MMAct clip name (subjectN_camK_sceneS_sessionT_action): {name!r}")
    s, c, sc, se, a = m.groups()
    return ClipId(action=a, subject=int(s), scene=int(sc), session=int(se), camera=int(c))


def instance_of_clip(name: str) -> str:
    """The recording (sensor-file stem, `splits.instance_name`) of a clip name: the clip name without
    its `_cam{K}` token. Names that are not MMAct clip names are their own recording."""
    try:
        return instance_name(parse_clip_name(name))
    except ValueError:
        return name


def clips_fingerprint(clip_names: Iterable[str]) -> str:
    """sha256 hex digest of the sorted, de-duplicated clip names joined by '\\n'."""
    return hashlib.sha256("\n".join(sorted(set(clip_names))).encode("utf-8")).hexdigest()


# ----------------------------------------------------------------------------------------------------
# Episodes
# ----------------------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Episode:
    """One N-way K-shot task.

    support: N*K clip names, ordered by episode label then shot; support_labels: their episode labels
    (0..N-1); query / query_labels: the query clip names and their episode labels; classes: the N class
    names in episode-label order; global_labels: the global class ids of `classes`
    (official `real_target_labels`)."""
    support: tuple[str, ...]
    support_labels: tuple[int, ...]
    query: tuple[str, ...]
    query_labels: tuple[int, ...]
    classes: tuple[str, ...]
    global_labels: tuple[int, ...]

    def __post_init__(self):
        for f in dataclasses.fields(self):
            object.__setattr__(self, f.name, tuple(getattr(self, f.name)))

    @property
    def way(self) -> int:
        return len(self.classes)

    @property
    def query_global_labels(self) -> tuple[int, ...]:
        """Global class ids of the queries."""
        return tuple(self.global_labels[y] for y in self.query_labels)

    def to_dict(self) -> dict[str, list]:
        return {k: list(getattr(self, k)) for k in _EPISODE_KEYS}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "Episode":
        if not isinstance(d, Mapping) or set(d) != set(_EPISODE_KEYS):
            got = sorted(d) if isinstance(d, Mapping) else type(d).__name__
            raise ValueError(f"an episode must have exactly the keys {list(_EPISODE_KEYS)}, got {got}")
        return cls(**{k: d[k] for k in _EPISODE_KEYS})

    def check(self, shot: Optional[int] = None) -> None:
        """Structural checks (ValueError): distinct classes, labels in range and consistent, support
        ordered by label then shot, `shot` per class, support and query disjoint."""
        n = len(self.classes)
        problems = []
        if len(set(self.classes)) != n or len(self.global_labels) != n:
            problems.append("classes must be distinct and match global_labels")
        if len(self.support) != len(self.support_labels) or len(self.query) != len(self.query_labels):
            problems.append("clip and label lists differ in length")
        if any(not isinstance(y, int) or not 0 <= y < n for y in self.support_labels + self.query_labels):
            problems.append(f"labels must be ints in 0..{n - 1}")
        elif n:
            k = shot if shot is not None else len(self.support) // n
            if tuple(self.support_labels) != tuple(y for y in range(n) for _ in range(k)):
                problems.append(f"support must be {k} clip(s) per class, ordered by episode label")
        if set(self.support) & set(self.query) or len(set(self.support + self.query)) != len(
                self.support) + len(self.query):
            problems.append("support and query clips must all be distinct")
        if not self.query:
            problems.append("no query")
        if problems:
            raise ValueError(f"invalid episode ({'; '.join(problems)}): {self.to_dict()}")


class EpisodeList(list):
    """A list of `Episode`s with `meta`, the header it was drawn with (see module docstring)."""

    def __init__(self, episodes: Iterable[Episode] = (), meta: Optional[Mapping[str, Any]] = None):
        super().__init__(episodes)
        self.meta: dict[str, Any] = dict(meta or {})


# ----------------------------------------------------------------------------------------------------
# Files
# ----------------------------------------------------------------------------------------------------

def _check_meta(meta: Mapping[str, Any], episodes: Sequence[Episode], where: str) -> None:
    errors = []
    missing = [k for k in _HEADER_KEYS if k not in meta]
    extra = sorted(str(k) for k in meta if k not in _HEADER_KEYS)
    if missing:
        errors.append(f"header is missing keys {missing}")
    if extra:
        errors.append(f"header has unknown keys {extra}")
    if meta.get("format") != FORMAT_NAME:
        errors.append(f"format is {meta.get('format')!r}, expected {FORMAT_NAME!r}")
    elif meta.get("version") != FORMAT_VERSION:
        errors.append(f"format version {meta.get('version')!r} is not supported (expected {FORMAT_VERSION})")
    if errors:
        raise ValueError(f"{where}: not a valid episode list: " + "; ".join(errors))
    try:
        _check_options(meta["way"], meta["shot"], meta["protocol"], meta["queries"])
    except ValueError as e:
        errors.append(str(e))
    if meta["num_episodes"] != len(episodes):
        errors.append(f"header says {meta['num_episodes']} episodes, list has {len(episodes)}")
    classes = set(meta["classes"])
    ids = meta["class_to_id"]
    for i, ep in enumerate(episodes):
        if len(errors) > 10:
            break
        try:
            ep.check(meta["shot"])
        except ValueError as e:
            errors.append(f"episode {i}: {e}")
            continue
        bad = [c for c in ep.classes if c not in classes]
        if ep.way != meta["way"] or bad:
            errors.append(f"episode {i}: {ep.way} classes (expected {meta['way']}); not in the class list: {bad}")
        elif [ids.get(c) for c in ep.classes] != list(ep.global_labels):
            errors.append(f"episode {i}: global_labels {list(ep.global_labels)} do not match class_to_id")
        nq = len(ep.query)
        if meta["protocol"] == "official":
            ok = nq == meta["queries"] and len(set(ep.query_labels)) == 1
        else:
            ok = list(ep.query_labels) == [y for y in range(ep.way) for _ in range(meta["queries"])]
        if not ok:
            errors.append(f"episode {i}: queries {list(ep.query_labels)} do not follow protocol "
                          f"{meta['protocol']!r} with queries={meta['queries']}")
    if errors:
        raise ValueError(f"{where}: invalid episode list: " + "; ".join(errors[:10]))


def save_episode_list(path: PathLike, episodes: Sequence[Episode],
                      meta: Optional[Mapping[str, Any]] = None) -> None:
    """Write `episodes` with the header `meta` (default: `episodes.meta` of an `EpisodeList`). The
    header and episodes are validated first. Deterministic: same content -> same bytes."""
    if meta is None:
        meta = getattr(episodes, "meta", None)
        if not meta:
            raise ValueError("no header: pass meta= or an EpisodeList from make_episode_list")
    meta = dict(meta)
    episodes = list(episodes)
    _check_meta(meta, episodes, os.fspath(path))
    header = json.dumps(meta, sort_keys=True, indent=2, ensure_ascii=True)
    lines = [json.dumps(ep.to_dict(), separators=(",", ":"), ensure_ascii=True) for ep in episodes]
    text = '{"header": ' + header + ',\n"episodes": [\n' + ",\n".join(lines) + ("\n" if lines else "") + "]}\n"
    path = epath.Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(text.encode("utf-8"))  # bytes: the same file on every OS, local or gs://
    tmp.replace(path)


def load_episode_list(path: PathLike) -> EpisodeList:
    """Read a file written by `save_episode_list`; verify its format, version and consistency
    (ValueError naming the problem)."""
    where = os.fspath(path)
    with epath.Path(path).open(encoding="utf-8") as f:
        try:
            data = json.load(f)
        except json.JSONDecodeError as e:
            raise ValueError(f"{where}: not valid JSON: {e}") from None
    if not isinstance(data, dict) or set(data) != {"header", "episodes"} or not isinstance(
            data["header"], dict) or not isinstance(data["episodes"], list):
        raise ValueError(f"{where}: not an episode list (expected {{'header': {{...}}, 'episodes': [...]}})")
    try:
        episodes = [Episode.from_dict(d) for d in data["episodes"]]
    except (ValueError, TypeError) as e:
        raise ValueError(f"{where}: {e}") from None
    try:
        _check_meta(data["header"], episodes, where)
    except (TypeError, KeyError, AttributeError) as e:
        raise ValueError(f"{where}: malformed header: {e!r}") from None
    return EpisodeList(episodes, data["header"])


def verify_episode_list(episodes_or_path: Union[PathLike, Sequence[Episode]],
                        records: Iterable[ClipRecord]) -> dict[str, Any]:
    """Check that every clip of the list exists in `records` and belongs to its episode's class.
    Raises ValueError naming the missing (or misfiled) clips. Returns a summary dict: num_episodes,
    num_clips_used, and `fingerprint_matches` (whether the records' clips of the list's classes are
    exactly those the list was drawn from; None without a header) -- a mismatch with all clips present
    (e.g. clips were added) is allowed but worth logging."""
    if isinstance(episodes_or_path, (str, os.PathLike)):
        episodes = load_episode_list(episodes_or_path)
    else:
        episodes = episodes_or_path
    meta = getattr(episodes, "meta", None) or {}
    action_of = {}
    for r in records:
        action_of[clip_name(r)] = r.action
    missing, misfiled, used = set(), set(), set()
    for ep in episodes:
        for clips, labels in ((ep.support, ep.support_labels), (ep.query, ep.query_labels)):
            for c, y in zip(clips, labels):
                used.add(c)
                if c not in action_of:
                    missing.add(c)
                elif action_of[c] != ep.classes[y]:
                    misfiled.add(f"{c} (is {action_of[c]!r}, episode says {ep.classes[y]!r})")
    if missing or misfiled:
        parts = []
        for what, items in (("missing from the records", missing), ("in the wrong class", misfiled)):
            if items:
                s = sorted(items)
                parts.append(f"{len(s)} clip(s) {what}: {', '.join(s[:20])}" + (" ..." if len(s) > 20 else ""))
        raise ValueError("episode list does not match the records: " + "; ".join(parts))
    fp = None
    if meta.get("classes") is not None and meta.get("clips_sha256"):
        wanted = set(meta["classes"])
        fp = clips_fingerprint(n for n, a in action_of.items() if a in wanted) == meta["clips_sha256"]
    return {"num_episodes": len(episodes), "num_clips_used": len(used), "fingerprint_matches": fp}
