"""Fixed, seeded, saved one-shot episode lists (N-way K-shot). numpy, the standard library, etils.epath.

The official Mu-MAE code (docs/official_code.md §3.1, §3.4, §5-I/K) draws 10,000 *fresh* random meta-test episodes at
every evaluation, so two runs never score the same tasks. Here an episode list is drawn once from a
seed, written to a JSON file with a header that records how it was drawn and a fingerprint of the
clips it was drawn from, and re-read by every evaluation.

Protocols (`sample_episode`):
- 'official' (Mu-MAE, docs/official_code.md §3.1): `way` distinct classes; `shot` support clips per class with episode
  labels 0..way-1; ONE class is flagged at random and `queries` query clips (official default 1) are
  drawn from that class only. So a 5-way 1-shot episode has 5 support clips and 1 query.
- 'trx' (TRX): `queries` query clips from every one of the `way` classes.
Support and query clips are always distinct clips. Support is stored ordered by episode label, then
shot (the official code shuffles the support order; the model's cross-sample attention is
permutation-equivariant, and a consumer that wants a shuffled order can permute it).

`distinct_instances` (default **True**, our choice): in MMAct the 4 camera clips of one recording
(`splits.instance_name`) share the same sensor CSVs, so the official code can pair a query with a
support clip of the same recording (p ~ 3/1168 per episode), in which case the query's 4 sensor inputs
are *identical* to the support's -- a leak that inflates accuracy. With True a query never shares its
recording with a support clip of its class (queries are drawn from the clips of the other recordings of
the class); pass False for the official behaviour. Its effect on the score is ~0.3% of episodes.

Classes with too few clips are never chosen: a class is usable if it has at least `shot + queries`
clips (and, with distinct_instances, at least `shot + queries` distinct recordings, which guarantees a
leak-free draw). Fewer than `way` usable classes raise a ValueError naming the counts.

Determinism: `make_episode_list` sorts and de-duplicates clip names first, so the result depends only
on (the set of clip names, the classes, the options, the seed), not on the record order. It uses
`numpy.random.default_rng(seed)` (PCG64); the saved file, not the generator, is the reference --
numpy does not promise identical streams across major versions, hence the saved list.

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

Command line (records from list files of clip names, e.g. the official testlist03.txt):

    python -m mumae_jax.data.episodes --records testlist03.txt --split split3 --part novel \\
        --way 5 --shot 1 --protocol official --queries 1 --num-episodes 10000 --seed 0 --out episodes.json
    python -m mumae_jax.data.episodes --records list.txt --class-split my_split.json --part validation ...

`--class-split FILE` draws from a user's class split (`splits.ClassSplit.from_file`; global ids = its
`class_to_id`); a class of the drawn part (or of `--classes`) that is not in the file or in none of the
records is an error naming the file.
"""
from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import math
import os
import re
import sys
from typing import Any, Callable, Iterable, Mapping, Optional, Sequence, Union

import numpy as np
from etils import epath

from mumae_jax.data import splits
from mumae_jax.data.splits import ClassSplit, ClipRecord, clip_name, instance_name

__all__ = [
    "FORMAT_NAME", "FORMAT_VERSION", "PROTOCOLS", "Episode", "EpisodeList", "ClipId", "parse_clip_name",
    "instance_of_clip", "clips_fingerprint", "sample_episode", "make_episode_list", "save_episode_list",
    "load_episode_list", "verify_episode_list", "accuracy_with_ci", "main",
]

FORMAT_NAME = "mumae_jax.episodes"
FORMAT_VERSION = 1
PROTOCOLS = ("official", "trx")
GENERATOR = "numpy.random.default_rng(seed) (PCG64)"
_HEADER_KEYS = ("format", "version", "way", "shot", "protocol", "queries", "distinct_instances", "seed",
                "num_episodes", "classes", "class_to_id", "num_clips", "clips_sha256", "generator")
_EPISODE_KEYS = ("classes", "global_labels", "support", "support_labels", "query", "query_labels")
_CLIP_RE = re.compile(r"^subject(\d+)_cam(\d+)_scene(\d+)_session(\d+)_(.+)$")

PathLike = Union[str, os.PathLike]


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


def _check_int(name: str, value: Any, lo: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < lo:
        raise ValueError(f"{name} must be an int >= {lo}, got {value!r}")
    return int(value)


def _check_options(way, shot, protocol, queries) -> tuple[int, int, int]:
    if protocol not in PROTOCOLS:
        raise ValueError(f"unknown protocol {protocol!r}; expected one of {', '.join(PROTOCOLS)}")
    return _check_int("way", way, 1), _check_int("shot", shot, 1), _check_int("queries", queries, 1)


def _usable(clips: Sequence[str], need: int, distinct_instances: bool,
            instance_of: Callable[[str], str]) -> bool:
    if len(clips) < need:
        return False
    return not distinct_instances or len({instance_of(c) for c in clips}) >= need


def _usable_classes(by_class: Mapping[str, Sequence[str]], need: int, way: int, distinct_instances: bool,
                    instance_of: Callable[[str], str]) -> list[str]:
    usable = [c for c in sorted(by_class) if _usable(by_class[c], need, distinct_instances, instance_of)]
    if len(usable) < way:
        counts = ", ".join(f"{c}: {len(by_class[c])}" for c in sorted(by_class)) or "none"
        extra = (f" and >= {need} distinct recordings (distinct_instances=True)" if distinct_instances else "")
        raise ValueError(f"need {way} usable classes for a {way}-way episode but only {len(usable)} of "
                         f"{len(by_class)} have >= {need} clips (shot + queries){extra}. Clips per "
                         f"class: {counts}")
    return usable


def _draw(rng: np.random.Generator, clips: Sequence[str], shot: int, nq: int, distinct_instances: bool,
          instance_of: Callable[[str], str]) -> tuple[list[str], list[str]]:
    """`shot` support and `nq` query clips of one class (sorted clip list), all distinct."""
    if not distinct_instances:
        idx = rng.choice(len(clips), size=shot + nq, replace=False)
        picked = [clips[int(i)] for i in idx]
        return picked[:shot], picked[shot:]
    sup_idx = rng.choice(len(clips), size=shot, replace=False)
    support = [clips[int(i)] for i in sup_idx]
    if nq == 0:
        return support, []
    taken = {instance_of(c) for c in support}
    pool = [c for c in clips if instance_of(c) not in taken]
    if len(pool) < nq:  # cannot happen for classes passing _usable; kept as a guard
        raise ValueError(f"not enough leak-free query clips ({len(pool)} < {nq}) for support {support}")
    q_idx = rng.choice(len(pool), size=nq, replace=False)
    return support, [pool[int(i)] for i in q_idx]


def sample_episode(rng: np.random.Generator, clips_by_class: Mapping[str, Sequence[str]], way: int = 5,
                   shot: int = 1, protocol: str = "official", queries: int = 1, *,
                   distinct_instances: bool = True, class_to_id: Optional[Mapping[str, int]] = None,
                   instance_of: Callable[[str], str] = instance_of_clip) -> Episode:
    """Draw one episode from `clips_by_class` ({class name: clip names}).

    protocol='official': `queries` queries from ONE randomly flagged class; 'trx': `queries` from every
    class. Classes are considered in sorted order and their clips in sorted order, so the result depends
    only on the rng state and the mapping's content. `class_to_id` gives the global labels (default:
    index in the sorted class names of `clips_by_class`). `instance_of` maps a clip name to its
    recording (default: drop the `_cam{K}` token) for `distinct_instances` (see module docstring)."""
    way, shot, queries = _check_options(way, shot, protocol, queries)
    by_class = {c: sorted(set(v)) for c, v in clips_by_class.items()}
    if class_to_id is None:
        class_to_id = {c: i for i, c in enumerate(sorted(by_class))}
    usable = _usable_classes(by_class, shot + queries, way, distinct_instances, instance_of)
    return _sample(rng, by_class, usable, way, shot, protocol, queries, distinct_instances, class_to_id,
                   instance_of)


def _sample(rng, by_class, usable, way, shot, protocol, queries, distinct_instances, class_to_id,
            instance_of) -> Episode:
    chosen = [usable[int(i)] for i in rng.choice(len(usable), size=way, replace=False)]
    flag = int(rng.integers(way)) if protocol == "official" else -1
    support, support_labels, query, query_labels = [], [], [], []
    for label, cls in enumerate(chosen):
        nq = queries if protocol == "trx" or label == flag else 0
        s, q = _draw(rng, by_class[cls], shot, nq, distinct_instances, instance_of)
        support += s
        support_labels += [label] * shot
        query += q
        query_labels += [label] * len(q)
    missing = [c for c in chosen if c not in class_to_id]
    if missing:
        raise ValueError(f"class_to_id has no global id for classes {missing}")
    return Episode(support=support, support_labels=support_labels, query=query, query_labels=query_labels,
                   classes=chosen, global_labels=[int(class_to_id[c]) for c in chosen])


def _resolve_classes(classes: Union[ClassSplit, Iterable[str], None], part: Optional[str],
                     class_to_id: Optional[Mapping[str, int]], records: Sequence[ClipRecord]
                     ) -> tuple[list[str], dict[str, int]]:
    if isinstance(classes, ClassSplit):
        pool = sorted(classes.classes(part or "novel"))
        ids = dict(class_to_id) if class_to_id is not None else classes.class_to_id
    else:
        if part is not None:
            raise ValueError("part= is only meaningful when classes is a ClassSplit")
        if isinstance(classes, str):
            raise ValueError("classes must be a ClassSplit or a list of class names, not a single string")
        pool = sorted(set(classes)) if classes is not None else sorted({r.action for r in records})
        ids = dict(class_to_id) if class_to_id is not None else {c: i for i, c in enumerate(pool)}
    missing = [c for c in pool if c not in ids]
    if missing:
        raise ValueError(f"class_to_id has no global id for classes {missing}")
    return pool, {c: int(ids[c]) for c in pool}


def make_episode_list(records: Iterable[ClipRecord], classes: Union[ClassSplit, Iterable[str], None], *,
                      way: int = 5, shot: int = 1, protocol: str = "official", queries: int = 1,
                      num_episodes: int = 10000, seed: int = 0, distinct_instances: bool = True,
                      part: Optional[str] = None, class_to_id: Optional[Mapping[str, int]] = None
                      ) -> EpisodeList:
    """A deterministic list of `num_episodes` episodes drawn from the records of `classes`.

    classes: a list of class names (records of other classes are ignored; None = every class in the
    records), or a `ClassSplit` together with `part` (default 'novel'); then the global ids are the
    split's `class_to_id` (the official rule), otherwise the index in the sorted class list unless
    `class_to_id` is given. The records are reduced to their sorted, de-duplicated clip names first, so
    the list depends only on (clip names, classes, options, seed). The returned `EpisodeList.meta` is the
    file header (`save_episode_list`)."""
    way, shot, queries = _check_options(way, shot, protocol, queries)
    num_episodes = _check_int("num_episodes", num_episodes, 0)
    seed = _check_int("seed", seed, 0)
    records = list(records)
    pool, ids = _resolve_classes(classes, part, class_to_id, records)
    wanted = set(pool)
    by_class: dict[str, set[str]] = {c: set() for c in pool}
    for r in records:
        if r.action in wanted:
            by_class[r.action].add(clip_name(r))
    by_class_sorted = {c: sorted(v) for c, v in by_class.items()}
    names = [n for c in pool for n in by_class_sorted[c]]
    instance_of = {clip_name(r): instance_name(r) for r in records if r.action in wanted}.__getitem__
    usable = _usable_classes(by_class_sorted, shot + queries, way, distinct_instances, instance_of)
    rng = np.random.default_rng(seed)
    episodes = [_sample(rng, by_class_sorted, usable, way, shot, protocol, queries, distinct_instances, ids,
                        instance_of) for _ in range(num_episodes)]
    meta = {"format": FORMAT_NAME, "version": FORMAT_VERSION, "way": way, "shot": shot, "protocol": protocol,
            "queries": queries, "distinct_instances": bool(distinct_instances), "seed": seed,
            "num_episodes": num_episodes, "classes": pool, "class_to_id": ids, "num_clips": len(names),
            "clips_sha256": clips_fingerprint(names), "generator": GENERATOR}
    return EpisodeList(episodes, meta)


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


# ----------------------------------------------------------------------------------------------------
# Accuracy
# ----------------------------------------------------------------------------------------------------

def accuracy_with_ci(hits: Iterable[Union[bool, int, float]]) -> tuple[float, float]:
    """(mean accuracy %, 95% CI half-width in percentage points) of per-query 0/1 hits:
    `100 * mean` and `1.96 * 100 * std / sqrt(n)` with the population std (numpy's default, as in the
    official code's `196 * std / sqrt(n)`)."""
    h = np.asarray(list(hits), dtype=np.float64).reshape(-1)
    if h.size == 0:
        raise ValueError("accuracy_with_ci needs at least one hit value")
    mean = float(h.mean()) * 100.0
    ci = 1.96 * float(h.std()) * 100.0 / math.sqrt(h.size)
    return mean, ci


# ----------------------------------------------------------------------------------------------------
# Command line
# ----------------------------------------------------------------------------------------------------

def read_clip_list(path: PathLike) -> list[ClipId]:
    """Clip records from a list file: one clip per line, the first whitespace-separated token is
    `[action/]subjectN_camK_sceneS_sessionT_action[.mp4]` (official {train,test}list0X.txt and the
    pretraining CSVs `path label`). Blank lines and lines starting with '#' are skipped."""
    out = []
    with open(path, encoding="utf-8") as f:
        for i, line in enumerate(f, 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            try:
                out.append(parse_clip_name(line.split()[0]))
            except ValueError as e:
                raise ValueError(f"{os.fspath(path)}:{i}: {e}") from None
    return out


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m mumae_jax.data.episodes",
                                description="Draw a fixed, seeded one-shot episode list and save it as JSON.")
    p.add_argument("--records", nargs="+", required=True, help="clip list file(s) (e.g. testlist03.txt)")
    p.add_argument("--out", required=True, help="output JSON file")
    p.add_argument("--split", choices=("split3", "split3_val", "none"), default=None,
                   help="class split giving the classes of --part and the global ids (default split3; "
                        "'none' = classes from --classes or the records, ids = sorted index)")
    p.add_argument("--class-split", default=None, metavar="FILE",
                   help="a class split JSON file (splits.ClassSplit.from_file) instead of --split")
    p.add_argument("--part", choices=splits.CLASS_PARTS, default="novel",
                   help="class part of the class split (default novel)")
    p.add_argument("--classes", default=None, help="comma-separated class names (overrides --part)")
    p.add_argument("--way", type=int, default=5, help="classes per episode")
    p.add_argument("--shot", type=int, default=1, help="support clips per class")
    p.add_argument("--protocol", choices=PROTOCOLS, default="official",
                   help="official: the queries come from one class; trx: from every class")
    p.add_argument("--queries", type=int, default=1, help="queries per episode (official) or per class (trx)")
    p.add_argument("--num-episodes", type=int, default=10000, help="episodes to draw")
    p.add_argument("--seed", type=int, default=0, help="seed of the draw")
    p.add_argument("--allow-instance-leak", action="store_true",
                   help="official behaviour: a query may share its sensor recording with a support clip")
    a = p.parse_args(argv)
    try:
        return _run(a)
    except (ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


def _class_split_file(path: str, records: Sequence[ClipRecord], part: str,
                      classes: Optional[Sequence[str]]) -> ClassSplit:
    """The split of a `--class-split` file; its classes that are drawn (`classes`, else those of `part`) must
    be in the file and in the records (ValueError naming the file)."""
    cs = ClassSplit.from_file(path)  # its own errors name the file
    drawn = list(classes) if classes else list(cs.classes(part))
    outside = [c for c in drawn if c not in cs.class_to_id]
    if outside:
        raise ValueError(f"{path}: --classes {outside} are not in this class split")
    present = {r.action for r in records}
    unknown = [c for c in drawn if c not in present]
    if unknown:
        where = f"part {part!r}" if not classes else "--classes"
        raise ValueError(f"{path}: classes {unknown} ({where}) are in none of the records; the records have "
                         f"{len(present)} classes: {', '.join(sorted(present))}")
    return cs


def _run(a: argparse.Namespace) -> int:
    records = [r for path in a.records for r in read_clip_list(path)]
    classes = [c.strip() for c in a.classes.split(",") if c.strip()] if a.classes else None
    if a.class_split and a.split:
        raise ValueError("--split and --class-split both name a class split; give one")
    if a.class_split:
        split = _class_split_file(a.class_split, records, a.part, classes)
    else:
        split = {"split3": splits.mumae_split3, "split3_val": splits.mumae_split3_with_validation,
                 "none": lambda: None}[a.split or "split3"]()
    if classes:
        kw = dict(class_to_id=split.class_to_id) if split is not None else {}
        eps = make_episode_list(records, classes, **kw, way=a.way, shot=a.shot, protocol=a.protocol,
                                queries=a.queries, num_episodes=a.num_episodes, seed=a.seed,
                                distinct_instances=not a.allow_instance_leak)
    else:
        eps = make_episode_list(records, split, part=a.part if split is not None else None, way=a.way,
                                shot=a.shot, protocol=a.protocol, queries=a.queries,
                                num_episodes=a.num_episodes, seed=a.seed,
                                distinct_instances=not a.allow_instance_leak)
    save_episode_list(a.out, eps)
    m = eps.meta
    print(f"wrote {len(eps)} {m['way']}-way {m['shot']}-shot {m['protocol']} episodes "
          f"({len(m['classes'])} classes, {m['num_clips']} clips, sha256 {m['clips_sha256'][:12]}) to {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
