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

The episode type and the file format: `episode_lists.py` (re-exported here).

Command line (records from list files of clip names, e.g. the official testlist03.txt):

    python -m mumae_jax.data.episodes --records testlist03.txt --split split3 --part novel \\
        --way 5 --shot 1 --protocol official --queries 1 --num_episodes 10000 --seed 0 --out episodes.json
    python -m mumae_jax.data.episodes --records list.txt --class_split_file my_split.json --part validation ...

`--class_split_file FILE` draws from a user's class split (`splits.ClassSplit.from_file`; global ids = its
`class_to_id`); a class of the drawn part (or of `--classes`) that is not in the file or in none of the
records is an error naming the file.
"""
from __future__ import annotations

import argparse
import math
import os
from typing import Callable, Iterable, Mapping, Optional, Sequence, Union

import numpy as np

from mumae_jax.core import cli
from mumae_jax.data import splits
from mumae_jax.data.splits import ClassSplit, ClipRecord, clip_name, instance_name

__all__ = [
    "FORMAT_NAME", "FORMAT_VERSION", "PROTOCOLS", "Episode", "EpisodeList", "ClipId", "parse_clip_name",
    "instance_of_clip", "clips_fingerprint", "sample_episode", "make_episode_list", "save_episode_list",
    "load_episode_list", "verify_episode_list", "accuracy_with_ci", "main",
]

from mumae_jax.data.episode_lists import (FORMAT_NAME, FORMAT_VERSION, GENERATOR, PROTOCOLS, ClipId, Episode,
                                          EpisodeList, PathLike, _check_int, _check_options, clips_fingerprint,
                                          instance_of_clip, load_episode_list, parse_clip_name, save_episode_list,
                                          verify_episode_list)


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


def paired_difference_with_ci(hits_a, hits_b) -> tuple[float, float]:
    """(accuracy of a minus accuracy of b in pp, 95% CI half-width in pp) of two models scored on the SAME
    episodes: hits [E, Q] each (0/1 per query). The CI is over episodes (per-episode mean differences,
    1.96 · std / sqrt(E)), so queries that share an episode's support are not counted as independent;
    far narrower than comparing two `accuracy_with_ci` intervals when the models err on the same queries."""
    a, b = (np.asarray(h, dtype=np.float64) for h in (hits_a, hits_b))
    if a.ndim != 2 or a.shape != b.shape or a.size == 0:
        raise ValueError(f"need two hit arrays [episodes, queries] of one shape; got {a.shape} and {b.shape}")
    d = (a - b).mean(axis=1) * 100.0  # per-episode difference, pp
    return float(d.mean()), 1.96 * float(d.std()) / math.sqrt(d.size)


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


def parser() -> cli.Parser:
    p = cli.parser("python -m mumae_jax.data.episodes", "Draw a fixed, seeded one-shot episode list and save it "
                   "as JSON.")
    p.add_argument("--records", nargs="+", required=True, help="clip list file(s) (e.g. testlist03.txt)")
    p.add_argument("--out", required=True, help="output JSON file")
    p.add_argument("--split", choices=("split3", "split3_val", "none"), default=None,
                   help="class split giving the classes of --part and the global ids (default split3; "
                        "'none' = classes from --classes or the records, ids = sorted index)")
    p.add_argument("--class_split_file", "--class_split", dest="class_split", default=None, metavar="FILE",
                   help="a class split JSON file (splits.ClassSplit.from_file) instead of --split; the name of "
                        "the config field (config.data.class_split_file) and of the other commands' flag")
    p.add_argument("--part", choices=splits.CLASS_PARTS, default="novel",
                   help="class part of the class split")
    p.add_argument("--classes", default=None, help="comma-separated class names (overrides --part)")
    p.add_argument("--way", type=int, default=5, help="classes per episode")
    p.add_argument("--shot", type=int, default=1, help="support clips per class")
    p.add_argument("--protocol", choices=PROTOCOLS, default="official",
                   help="official: the queries come from one class; trx: from every class")
    p.add_argument("--queries", type=int, default=1, help="queries per episode (official) or per class (trx)")
    p.add_argument("--num_episodes", type=int, default=10000, help="episodes to draw")
    p.add_argument("--seed", type=int, default=0, help="seed of the draw")
    p.add_argument("--allow_instance_leak", action="store_true",
                   help="official behaviour: a query may share its sensor recording with a support clip")
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    return cli.run(_run, parser().parse_args(argv))


def _class_split_file(path: str, records: Sequence[ClipRecord], part: str,
                      classes: Optional[Sequence[str]]) -> ClassSplit:
    """The split of a `--class_split_file` file; its classes that are drawn (`classes`, else those of `part`) must
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
        raise ValueError("--split and --class_split_file both name a class split; give one")
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
    raise SystemExit(main())
