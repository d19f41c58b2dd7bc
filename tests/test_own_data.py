"""Your own data (README, "Your own data"): a tree that is not MMAct — videos under `trimmed/`, two sensors named
`acc` (100 Hz) and `gyro` (50 Hz) under `Sensor_trimmed/`, six classes with other names — goes through exactly the
README's commands: prepare -> pretraining -> frozen probes -> one-shot stage. The test reads the commands from the
README and adds documented flags only: `tiny` sizes, a few steps, 2-way episodes (six classes, two per part)."""
import json
import os
import re
import shlex
import shutil
from pathlib import Path

import numpy as np
import pytest

av = pytest.importorskip("av")

from mumae_jax.core import config_files  # noqa: E402
from mumae_jax.data import prepare_mmact, synthetic_export  # noqa: E402
from mumae_jax.evaluators import frozen  # noqa: E402
from mumae_jax.trainers import oneshot_training, pretraining  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
CLASSES = {"walking": "stroll", "kicking": "kick", "jumping": "hop", "running": "sprint", "throwing": "toss",
           "waving_hand": "wave"}  # synthetic class -> the name in this dataset
FOLDERS = {"video": "trimmed", "acc_watch_clip": "Sensor_trimmed/acc_clip", "gyro_clip": "Sensor_trimmed/gyro_clip"}
FAST = {  # documented flags the test adds to each README command
    "prepare": ["--short_side=48", "--no_progress"],
    "pretrain": ["--config.total_steps=2", "--config.checkpoint_every_steps=2"],
    "probes": ["--way=2", "--num_episodes=8", "--modalities=all,sensors"],
    "oneshot": ["--config.episodes.way=2", "--config.episodes.num_frames=2", "--config.episodes.image_size=32",
                "--config.episodes.resize_to=36", "--config.model.fused_dim=64", "--config.model.channels=16",
                "--config.model.sensor_dim=8", "--config.total_tasks=8", "--config.evals.episodes.every_tasks=8",
                "--config.evals.episodes.val_episodes=4", "--config.evals.episodes.test_episodes=4",
                "--config.progress_bar=False", "--config.write_tensorboard=False"],
}


def readme_section():
    """(class split mapping, [argv of each command]) of the README's "Your own data" section."""
    text = (ROOT / "README.md").read_text(encoding="utf-8").split("\n## Your own data\n", 1)[1].split("\n## ", 1)[0]
    split = json.loads(re.search(r"```json\n(.*?)\n```", text, re.S).group(1))
    lines = re.search(r"```bash\n(.*?)\n```", text, re.S).group(1).splitlines()
    return split, [shlex.split(line) for line in lines if line.startswith("python")]


def write_tree(root: Path) -> None:
    """The synthetic release tree, moved to other folder names, with two of its four sensors and renamed classes."""
    raw = root.with_name(root.name + "_raw")
    synthetic_export.write_release_tree(raw, list(CLASSES), num_subjects=2, num_cameras=2, size=(48, 64), fps=10)
    for f in sorted(p for p in raw.rglob("*") if p.is_file()):
        rel = f.relative_to(raw)
        if rel.parts[0] in FOLDERS:
            dst = root / FOLDERS[rel.parts[0]] / Path(*rel.parts[1:-1]) / (CLASSES[f.stem] + f.suffix)
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(str(f), dst)
    shutil.rmtree(raw)


def main_py(argv, extra, size="tiny"):
    """What `python main.py ARGV` does, in this process: the config file with its overrides, then the trainer."""
    args = dict(a.split("=", 1) for a in argv if a.startswith("--") and not a.startswith("--config."))
    spec = str(ROOT / args["--config"]).replace(":runlocal", f":{size}" if size else ":runlocal")
    config = config_files.load_config_file(spec, [a for a in argv if a.startswith("--config.")] + extra)
    trainer = {"pretrain": pretraining, "oneshot": oneshot_training}[config.trainer]
    return config, trainer.train_and_evaluate(config, args["--workdir"])


def test_the_readme_commands_take_a_non_mmact_tree_through_every_stage(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    split, cmds = readme_section()
    assert [c[1:3] if c[1] == "-m" else c[1:2] for c in cmds] == [
        ["-m", "mumae_jax.data.prepare_mmact"], ["main.py"], ["-m", "mumae_jax.evaluators.frozen"], ["main.py"]]
    assert sorted(split["base"] + split["validation"] + split["novel"]) == sorted(CLASSES.values())
    write_tree(tmp_path / "mydata")
    Path("my_split.json").write_text(json.dumps(split), encoding="utf-8")

    assert prepare_mmact.main(cmds[0][3:] + FAST["prepare"]) == 0  # finds trimmed/ and Sensor_trimmed/*_clip
    assert Path("mydata_prepared/classes.txt").read_text().split() == sorted(CLASSES.values())
    summary = json.loads(Path("mydata_prepared/summary.json").read_text())
    assert summary["kept"] == 24 and summary["dropped"] == 0, summary  # 6 classes x 2 subjects x 2 cameras

    config, pre = main_py(cmds[1][2:], FAST["pretrain"])
    assert list(config.modalities) == ["video", "acc", "gyro"] and pre["step"] == 2
    assert np.isfinite(pre["history"][-1]["loss"]) and os.path.exists("workdirs/mine/summary.json")

    assert frozen.main(cmds[2][3:] + FAST["probes"] + ["--out=probes.json"]) == 0
    probes = json.loads(Path("probes.json").read_text())
    assert probes["num_episodes"] == 8 and probes["modalities"] == {
        "all": ["video", "acc", "gyro"], "sensors": ["acc", "gyro"]}, probes["modalities"]
    assert all(0 <= probes["groups"][g]["prototype"]["accuracy"] <= 100 for g in ("all", "sensors"))

    config, shot = main_py(cmds[3][2:], FAST["oneshot"], size="")
    assert list(config.sensors) == ["acc", "gyro"] and oneshot_training.num_classes(config) == 6
    report = json.loads(Path("workdirs/mine_oneshot/report.json").read_text())
    assert report["final"]["num_queries"] == 4 * 2 and 0 <= report["final"]["accuracy"] <= 100, report
    init = json.loads(Path("workdirs/mine_oneshot/init_report.json").read_text())
    assert init["model_init"] == "workdirs/mine" and init["step"] == 2, init
