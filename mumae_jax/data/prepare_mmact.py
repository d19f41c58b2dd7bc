"""Prepare MMAct (trimmed release) into sharded TFRecords: decode each video once, pair it with its sensors.

    python -m mumae_jax.data.prepare_mmact --src /data/mmact --out /data/mmact_prepared \
        [--video_dir DIR|TAR] [--sensors acc_phone,acc_watch,gyro,orientation] [--sensor_root NAME=DIR|TAR]
        [--short_side 256] [--jpeg_quality 90] [--min_frames 16] [--shard_size 64] [--workers N]
        [--classes FILE|auto] [--allow_unknown_classes] [--cameras 1,2,3,4] [--no_progress]

Input (see data/MMACT.md): `<src>/video/subjectN/camK/sceneS/sessionT/<action>.mp4` and
`<src>/<sensor>_clip/subjectN/sceneS/sessionT/<action>.csv`, each tree either a directory or a
`.tar.gz` next to where the directory would be (extracted safely into `<out>/_work/`).

Output in `--out`:
- `clips-XXXXX-of-YYYYY.tfrecord`: one `tf.train.Example` per kept clip (`FEATURES` documents them);
  `read_prepared(out)` reads them back as decoded dicts.
- `clips-XXXXX-of-YYYYY.json`: a shard's sidecar (options, clip list, manifest lines). It is written
  after the shard and marks the shard as finished: a rerun with the same options and clips skips it.
- `manifest.jsonl` (one line per clip, per orphan sensor recording and per unrecognised file),
  `summary.json` (counts per reason, kept totals, throughput, options).

Clips are sorted by name and cut into shards of `--shard_size` before any decoding, so the
assignment of clips to shards is deterministic; clips that are dropped later leave a shard short.
Checks per clip, first failure wins: class known, sensor files present, each sensor CSV valid, video
opens, video decodes fully, enough frames (reasons: `mmact_layout.REASONS`).

The clip format, the decoding workers and the shard reader and writer are `mmact_shards.py` (its public names
are re-exported here).
"""
from __future__ import annotations

import collections
import concurrent.futures
import concurrent.futures.process
import json
import math
import multiprocessing
import os
import re
import sys
import time
from pathlib import Path
from typing import Any, Mapping, Sequence

from mumae_jax.core import cli
from mumae_jax.data import mmact_layout as L
from mumae_jax.data.mmact_shards import (FEATURES, FORMAT_VERSION, SHARD_PATTERN, _SHARD_RE, _atomic_write_bytes,
                                         _worker_init, _write_shard, decode_video, parsing_spec, process_clip,
                                         read_prepared, serialize_example, shard_paths)

__all__ = ["FEATURES", "FORMAT_VERSION", "SHARD_PATTERN", "WORK_DIR", "PrepareError", "decode_video",
           "format_summary", "main", "parsing_spec", "prepare", "process_clip", "read_prepared", "serialize_example",
           "shard_paths"]

WORK_DIR = "_work"


CLASSES_FILE = "classes.txt"  # the class list `--classes auto` took from the tree
# What to change when one drop reason empties the result (the error names the most frequent one).
FIXES = {
    "unknown_class": "pass the dataset's class names: --classes FILE (one per line) or --classes auto (the names "
                     "found in the tree), or keep them unlabelled with --allow_unknown_classes",
    "camera_excluded": "--cameras excludes them",
    "no_sensors": "no sensor recording matches the videos: check --sensors / --sensor_root",
    "sensor_missing": "a listed sensor is missing: list only the sensors every clip has in --sensors",
    "unrecognised_path": "the paths are not subjectN/[camK/]sceneS/sessionT/<action>.mp4 (see data/MMACT.md)",
    "too_few_frames": "the videos are shorter than --min_frames",
}


class PrepareError(L.LayoutError):
    """Bad command-line input or input layout; the message names the path."""


# ----------------------------------------------------------------------------------------------------
# The command
# ----------------------------------------------------------------------------------------------------

def _entry(clip: str, *, status=None, reason=None, detail=None, video=None, sensors=None, shard=None,
           num_frames=None, **meta) -> dict:
    e = {"clip": clip, "status": status, "reason": reason, "detail": detail, "video": video,
         "sensors": sensors or {}, "shard": shard, "num_frames": num_frames}
    e.update(meta)
    return e


def _parse_sensor_list(text: str | Sequence[str]) -> list[str]:
    names = [s.strip() for s in (text.split(",") if isinstance(text, str) else text)]
    names = [s for s in names if s]
    if not names:
        raise PrepareError("--sensors is empty")
    for s in names:
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_\-]*", s):
            raise PrepareError(f"bad sensor name {s!r} in --sensors (letters, digits, '_', '-')")
    dup = [s for s, n in collections.Counter(names).items() if n > 1]
    if dup:
        raise PrepareError(f"sensor names repeated in --sensors: {dup}")
    return names


def prepare(out: str | os.PathLike, src: str | os.PathLike | None = None, *, video_dir=None,
            sensors: str | Sequence[str] = L.DEFAULT_SENSORS, sensor_roots: Mapping[str, str] | None = None,
            short_side: int = 256, jpeg_quality: int = 90, min_frames: int = 16, shard_size: int = 64,
            workers: int | None = None, classes: str | os.PathLike | None = None,
            allow_unknown_classes: bool = False, cameras: str | Sequence[int] | None = None, progress: bool = True, log=print) -> dict:
    """Run the preparation (see the module docstring). Returns the summary dict (also in summary.json).

    Raises PrepareError / mmact_layout.LayoutError (bad input, naming the path) and
    mmact_layout.UnsafeArchiveError (an archive member would escape the work dir).
    """
    t0 = time.time()
    if out is None or str(out) == "":
        raise PrepareError("--out is required")
    if src is None and video_dir is None:
        raise PrepareError("--src is required (or --video_dir together with --sensor_root for every sensor)")
    if src is not None and not Path(src).is_dir():
        raise PrepareError(f"--src {src} is not a directory")
    if short_side < 0 or not 1 <= jpeg_quality <= 100 or min_frames < 1 or shard_size < 1:
        raise PrepareError("need --short_side >= 0, 1 <= --jpeg_quality <= 100, --min_frames >= 1, "
                           "--shard_size >= 1")
    sensor_names = _parse_sensor_list(sensors)
    sensor_roots = dict(sensor_roots or {})
    extra = sorted(set(sensor_roots) - set(sensor_names))
    if extra:
        raise PrepareError(f"--sensor_root given for sensors not in --sensors: {extra}")
    if workers is None:
        workers = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    workers = int(workers)
    if workers < 1:
        raise PrepareError(f"--workers must be >= 1, got {workers}")
    if isinstance(cameras, str):
        try:
            cameras = [int(c) for c in cameras.split(",") if c.strip()]
        except ValueError:
            raise PrepareError(f"--cameras expects comma-separated integers, got {cameras!r}") from None
    camera_set = None if cameras is None else set(int(c) for c in cameras)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    work = out / WORK_DIR
    auto_classes = str(classes) == "auto"
    class_list = () if auto_classes else L.load_class_list(classes)

    # ---- locate (and safely extract) the trees --------------------------------------------------------
    vpath = Path(video_dir) if video_dir is not None else Path(src) / "video"
    video_root = L.resolve_tree(vpath, work, "video")
    if video_root is None and video_dir is None and src is not None:  # a release's own folder names
        if (video_root := L.find_video_tree(src)) is not None:
            log(f"video tree: {video_root} (found under --src; --video_dir overrides)")
    if video_root is None:
        raise PrepareError(f"video tree not found: {vpath} (a directory or {vpath}.tar.gz)")
    roots = {}
    for s in sensor_names:
        p = Path(sensor_roots[s]) if s in sensor_roots else (Path(src) / f"{s}_clip" if src is not None else None)
        if p is None:
            raise PrepareError(f"no --sensor_root for sensor {s!r} and no --src")
        r = L.resolve_tree(p, work, f"{s}_clip")
        if r is None and s not in sensor_roots and src is not None:
            if (r := L.find_sensor_tree(src, s)) is not None:
                log(f"{s} tree: {r} (found under --src; --sensor_root {s}=... overrides)")
        if r is None:
            raise PrepareError(f"sensor tree for {s!r} not found: {p} (a directory or {p}.tar.gz); "
                               "check --sensors")
        roots[s] = r

    videos, bad_videos = L.scan_videos(video_root)
    if not videos:
        raise PrepareError(f"no videos found under {video_root} (expected subjectN/camK/sceneS/sessionT/"
                           f"<action>.mp4{'; unrecognised: ' + bad_videos[0] if bad_videos else ''})")
    sensor_index, bad_sensor_files = {}, []
    for s in sensor_names:
        sensor_index[s], bad = L.scan_sensor_tree(roots[s])
        bad_sensor_files += bad
    log(f"found {len(videos)} videos under {video_root}; sensor recordings: "
        + ", ".join(f"{s}={len(sensor_index[s])}" for s in sensor_names))
    if auto_classes:  # the tree's action names, sorted; written beside the shards
        class_list = tuple(sorted({v.action for v in videos}))
        _atomic_write_bytes(out / CLASSES_FILE, ("\n".join(class_list) + "\n").encode())
        log(f"--classes auto: {len(class_list)} classes from the video names, written to {out / CLASSES_FILE}")
    class_id = {c: i for i, c in enumerate(class_list)}

    # ---- cheap checks and pairing ---------------------------------------------------------------------
    entries: list[dict] = []
    candidates: list[tuple[dict, list[tuple[str, str]]]] = []
    for p in bad_videos + bad_sensor_files:
        entries.append(_entry(p, status="dropped", reason="unrecognised_path",
                              detail=f"{p}: not subjectN/[camK/]sceneS/sessionT/<action>.(mp4|csv)",
                              video=p if p.lower().endswith(".mp4") else None))
    for v in videos:
        inst = v.instance
        have = {s: sensor_index[s][inst] for s in sensor_names if inst in sensor_index[s]}
        meta = dict(action=v.action, label=class_id.get(v.action, -1), subject=v.subject, camera=v.camera,
                    scene=v.scene, session=v.session)
        e = _entry(v.name, video=v.path, sensors=have, **meta)
        if camera_set is not None and v.camera not in camera_set:
            e.update(status="dropped", reason="camera_excluded",
                     detail=f"cam{v.camera} not in --cameras {','.join(map(str, sorted(camera_set)))}")
        elif v.action not in class_id and not allow_unknown_classes:
            e.update(status="dropped", reason="unknown_class",
                     detail=f"action {v.action!r} not in the class list ({len(class_list)} classes)")
        elif not have:
            e.update(status="dropped", reason="no_sensors",
                     detail=f"no sensor recording {inst.name} in any of {', '.join(sensor_names)}")
        elif len(have) < len(sensor_names):
            missing = [s for s in sensor_names if s not in have]
            e.update(status="dropped", reason="sensor_missing",
                     detail="missing " + ", ".join(f"{s}: {roots[s]}/subject{inst.subject}/scene{inst.scene}/"
                                                   f"session{inst.session}/{inst.action}.csv" for s in missing))
        else:
            if v.action not in class_id:
                e["detail"] = f"unknown class {v.action!r} kept (--allow_unknown_classes)"
            candidates.append((e, [(s, have[s]) for s in sensor_names]))
            continue
        entries.append(e)
    video_instances = {v.instance for v in videos}
    orphans = sorted({k for s in sensor_names for k in sensor_index[s]} - video_instances)
    for k in orphans:
        entries.append(_entry(k.name, status="dropped", reason="no_video",
                              detail=f"sensor recording {k.name} has no video in {video_root}",
                              sensors={s: sensor_index[s][k] for s in sensor_names if k in sensor_index[s]},
                              action=k.action, label=class_id.get(k.action, -1), subject=k.subject,
                              camera=None, scene=k.scene, session=k.session))

    # ---- deterministic shard assignment, resume ----------------------------------------------------------
    candidates.sort(key=lambda c: c[0]["clip"])
    num_shards = math.ceil(len(candidates) / shard_size)
    opts = {"format_version": FORMAT_VERSION, "sensors": sensor_names, "short_side": short_side,
            "jpeg_quality": jpeg_quality, "min_frames": min_frames, "classes": list(class_list)}
    shards = []
    for k in range(num_shards):
        name = SHARD_PATTERN.format(index=k, count=num_shards)
        members = candidates[k * shard_size:(k + 1) * shard_size]
        shards.append((name, members))
    keep_names = {n for n, _ in shards} | {n[:-len(".tfrecord")] + ".json" for n, _ in shards}
    for f in sorted(os.listdir(out)):
        m = _SHARD_RE.match(f)
        if m and (f not in keep_names or m.group(4)):
            os.remove(out / f)  # a temp file of an interrupted run, or a shard of another clip set
    pending, reused = [], 0
    for name, members in shards:
        side = out / (name[:-len(".tfrecord")] + ".json")
        done = None
        if side.is_file() and (out / name).is_file():
            try:
                done = json.loads(side.read_text())
            except (OSError, ValueError):
                done = None
        ident = json.loads(json.dumps([[e["clip"], e["video"], sp] for e, sp in members]))
        if done and done.get("options") == opts and done.get("clips") == ident:
            entries.extend(done["entries"])
            reused += 1
        else:
            pending.append((name, members))
    if reused:
        log(f"resuming: {reused}/{num_shards} shards already finished")

    # ---- decode (parallel), write shards in order ------------------------------------------------------
    jobs = [{"entry": e, "sensors": sp, "opts": opts, "shard": name} for name, members in pending
            for e, sp in members]
    decoded_clips = decoded_frames = 0
    t_dec = time.time()
    if jobs:
        from tqdm import tqdm

        bar = tqdm(total=len(jobs), unit="clip", desc="prepare", disable=not progress, file=sys.stderr)
        pool = None
        if workers > 1 and len(jobs) > 1:
            pool = concurrent.futures.ProcessPoolExecutor(
                min(workers, len(jobs)), mp_context=multiprocessing.get_context("spawn"), initializer=_worker_init)
            results = pool.map(process_clip, jobs, chunksize=1)  # in job order; a crashed worker raises
            import tensorflow  # noqa: F401  (imported while the workers start)
        else:
            _worker_init()
            results = map(process_clip, jobs)
        try:
            for name, members in pending:
                shard_entries, examples = [], []
                for _ in members:
                    try:
                        r = next(results)
                    except concurrent.futures.process.BrokenProcessPool as err:
                        raise PrepareError(
                            f"a decoding worker died while preparing shard {name} (a crash inside FFmpeg?); "
                            "finished shards are kept: rerun to resume, or use --workers 1 to find the clip"
                        ) from err
                    e = r["entry"]
                    decoded_clips += r["decoded"]
                    decoded_frames += r["decoded_frames"]
                    if r["record"] is not None:
                        examples.append(serialize_example(e, r["record"], sensor_names))
                    shard_entries.append(e)
                    bar.update(1)
                _write_shard(out / name, examples)
                side = {"options": opts, "clips": [[e["clip"], e["video"], sp] for e, sp in members],
                        "entries": shard_entries}
                _atomic_write_bytes(out / (name[:-len(".tfrecord")] + ".json"),
                                    json.dumps(side, indent=0).encode())
                entries.extend(shard_entries)
        finally:
            bar.close()
            if pool is not None:
                pool.shutdown(wait=True, cancel_futures=True)
    dt_dec = time.time() - t_dec

    # ---- manifest and summary ------------------------------------------------------------------------
    entries.sort(key=lambda e: (e["clip"], e["status"]))
    _atomic_write_bytes(out / "manifest.jsonl",
                        "".join(json.dumps(e, sort_keys=False) + "\n" for e in entries).encode())
    kept = [e for e in entries if e["status"] == "kept"]
    reasons = collections.Counter(e["reason"] for e in entries if e["status"] == "dropped")
    summary = {
        "videos_found": len(videos) + len(bad_videos),
        "kept": len(kept),
        "kept_frames": int(sum(e["num_frames"] for e in kept)),
        "kept_unknown_class": sum(1 for e in kept if e.get("label", 0) < 0),
        "dropped": sum(reasons.values()),
        "dropped_by_reason": dict(sorted(reasons.items())),
        "manifest_lines": len(entries),
        "shards": num_shards, "shards_reused": reused, "shards_written": len(pending),
        "decoded_clips": decoded_clips, "decoded_frames": decoded_frames,
        "decode_seconds": round(dt_dec, 3), "seconds": round(time.time() - t0, 3),
        "clips_per_s": round(len(jobs) / dt_dec, 2) if jobs and dt_dec > 0 else None,
        "frames_per_s": round(decoded_frames / dt_dec, 1) if jobs and dt_dec > 0 else None,
        "workers": workers,
        "options": {**opts, "shard_size": shard_size, "allow_unknown_classes": allow_unknown_classes,
                    "cameras": None if camera_set is None else sorted(camera_set),
                    "video_root": str(video_root), "sensor_roots": {s: str(r) for s, r in roots.items()}},
    }
    _atomic_write_bytes(out / "summary.json", json.dumps(summary, indent=1).encode())
    log(format_summary(summary))
    if not kept:
        top, n = reasons.most_common(1)[0]
        fix = FIXES.get(top) or L.REASONS.get(top, top)
        raise PrepareError(f"kept 0 of {len(entries)} clips: {n} dropped as {top!r}; {fix} "
                           f"({out / 'manifest.jsonl'} lists every clip and why)")
    return summary


def format_summary(s: Mapping[str, Any]) -> str:
    lines = [f"kept {s['kept']} clips ({s['kept_frames']} frames) in {s['shards']} shards "
             f"({s['shards_reused']} reused, {s['shards_written']} written); dropped {s['dropped']}"]
    for r, n in s["dropped_by_reason"].items():
        lines.append(f"  {r:22s} {n}")
    if s["clips_per_s"] is not None:
        lines.append(f"decoded {s['decoded_clips']} clips / {s['decoded_frames']} frames in "
                     f"{s['decode_seconds']:.1f}s: {s['clips_per_s']} clips/s, {s['frames_per_s']} frames/s "
                     f"({s['workers']} workers)")
    return "\n".join(lines)


def parser() -> cli.Parser:
    p = cli.parser("python -m mumae_jax.data.prepare_mmact", "MMAct trimmed videos + sensor CSVs -> sharded "
                   "TFRecords, manifest.jsonl and summary.json (see data/MMACT.md).")
    p.add_argument("--src", help="MMAct root with video/ and <sensor>_clip/ (directories or .tar.gz)")
    p.add_argument("--out", help="output directory (shards, manifest, summary; archives extract to _work/)")
    p.add_argument("--video_dir", help="video tree (directory or .tar.gz); default <src>/video")
    p.add_argument("--sensors", default=",".join(L.DEFAULT_SENSORS),
                   help="comma-separated sensor names; tree <src>/<name>_clip")
    p.add_argument("--sensor_root", action="append", default=[], metavar="NAME=PATH",
                   help="tree of one sensor (directory or .tar.gz), overrides <src>/<name>_clip; repeatable")
    p.add_argument("--short_side", type=int, default=256, help="resize frames to this short side (0: keep)")
    p.add_argument("--jpeg_quality", type=int, default=90, help="JPEG quality of the stored frames")
    p.add_argument("--min_frames", type=int, default=16, help="clips with fewer decoded frames are dropped")
    p.add_argument("--shard_size", type=int, default=64, help="clips per shard")
    p.add_argument("--workers", type=int, default=None, help="decoding processes (default: cpu count)")
    p.add_argument("--classes", help="file with the known class names, one per line (default: the 33 "
                                     "Mu-MAE classes); line order gives the label; 'auto': the action names "
                                     "found in the tree, sorted (written to <out>/classes.txt)")
    p.add_argument("--allow_unknown_classes", action="store_true",
                   help="keep clips whose action is not in the class list (label -1)")
    p.add_argument("--cameras", help="comma-separated camera numbers to keep, e.g. 1,2,3,4 (default: all "
                                     "camK folders); others are listed as camera_excluded")
    p.add_argument("--no_progress", action="store_true", help="no progress bar")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    cli.quiet_environment()
    return cli.run(_run, parser().parse_args(argv))


def _run(args) -> int:
    roots = {}
    for item in args.sensor_root:
        if "=" not in item:
            raise PrepareError(f"--sensor_root expects NAME=PATH, got {item!r}")
        k, v = item.split("=", 1)
        roots[k.strip()] = v
    prepare(args.out, args.src, video_dir=args.video_dir, sensors=args.sensors, sensor_roots=roots,
            short_side=args.short_side, jpeg_quality=args.jpeg_quality, min_frames=args.min_frames,
            shard_size=args.shard_size, workers=args.workers, classes=args.classes,
            allow_unknown_classes=args.allow_unknown_classes, cameras=args.cameras, progress=not args.no_progress)
    return 0


if __name__ == "__main__":
    sys.exit(main())
