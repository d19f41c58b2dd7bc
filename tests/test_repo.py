"""Repository contracts: CI runs the README's test command; core modules import without TensorFlow."""
import os
import re
import subprocess
import sys

sys.path.insert(0, os.path.dirname(__file__))
from tf_block import BLOCK_TENSORFLOW  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _readme_commands():
    text = open(os.path.join(ROOT, "README.md"), encoding="utf-8").read()
    return re.findall(r"```bash\n(.*?)\n```", text, flags=re.S)


def test_ci_runs_the_readme_test_command():
    main_cmd, test_cmd = _readme_commands()[:2]
    assert "main.py --config=configs/pretrain.py" in main_cmd
    assert "pytest" in test_cmd
    ci = open(os.path.join(ROOT, ".ci", "run"), encoding="utf-8").read()
    assert test_cmd in ci.splitlines()


def test_core_imports_without_tensorflow():
    code = (
        BLOCK_TENSORFLOW +
        "import mumae_jax.models.mae, mumae_jax.models.masking, mumae_jax.objectives.mae_loss, mumae_jax.steps.pretraining_step\n"
        "import mumae_jax.trainers.pretraining, mumae_jax.core.checkpointing, mumae_jax.data\n"
        "assert 'tensorflow' not in sys.modules\n"
        "print('ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-2000:]
