"""One command-line style (mumae_jax/core/cli.py): underscore flags (dashed spellings still parse), every flag's
help says its default, a user error is one `error:` line with exit 2 (a traceback with --verbose)."""
import argparse
import os
import subprocess
import sys

import pytest

from mumae_jax.bench import ablations, readme_results
from mumae_jax.core import cli
from mumae_jax.data import episodes, prepare_mmact, synthetic_export
from mumae_jax.evaluators import anchors, frozen
from mumae_jax.faults import __main__ as faults
from mumae_jax.weights import convert, export

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PARSERS = {"bench.ablations": ablations.parser, "bench.readme_results": readme_results.parser,
           "data.episodes": episodes.parser,
           "data.prepare_mmact": prepare_mmact.parser, "data.synthetic_export": synthetic_export.parser,
           "evaluators.anchors": anchors.parser, "evaluators.frozen": frozen.parser, "faults": faults.parser,
           "weights.convert": convert.parser, "weights.export": export.parser}


@pytest.mark.parametrize("name", sorted(PARSERS))
def test_every_flag_is_underscored_and_has_help_stating_its_default(name):
    p = PARSERS[name]()
    fmt = p._get_formatter()
    for action in p._actions:
        if isinstance(action, argparse._HelpAction):
            continue
        for flag in action.option_strings:
            assert "-" not in flag[2:], f"{name}: {flag} (flags use underscores)"
        assert action.help, f"{name}: {action.option_strings} has no help"
        text = fmt._get_help_string(action) % {"default": action.default}
        if action.default not in (None, False, argparse.SUPPRESS):
            assert "default" in text, f"{name}: the help of {action.option_strings} does not state its default"


def test_dashed_spellings_parse_as_underscores_and_values_are_untouched():
    a = prepare_mmact.parser().parse_args(["--video-dir=a-b", "--short-side", "8", "--no-progress"])
    assert (a.video_dir, a.short_side, a.no_progress) == ("a-b", 8, True)
    assert cli._underscored("--class-split=x-y.json") == "--class_split=x-y.json"
    assert cli._underscored("-v") == "-v" and cli._underscored("--") == "--"


def test_messages_are_one_line():
    nested = AttributeError(KeyError("'total_step'\nDid you mean \"total_steps\"?"))
    assert cli.message(nested) == "'total_step'; Did you mean \"total_steps\"?"
    embedded = ValueError("flag --config=x: Error whilst parsing config file:\nTraceback (most recent call last):\n"
                          "  File \"x.py\", line 1\nValueError: config argument data='foo'")
    assert cli.message(embedded) == ("flag --config=x: Error whilst parsing config file: ValueError: config argument "
                                     "data='foo'")
    assert cli.message(KeyError("k")) == "k" and cli.message(OSError()) == "OSError"


def test_a_user_error_is_one_line_and_exit_2_and_verbose_shows_the_traceback(tmp_path, capsys):
    missing = str(tmp_path / "nothere.txt")
    assert episodes.main(["--records", missing, "--out", str(tmp_path / "e.json")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "nothere.txt" in err[0], err
    with pytest.raises(OSError):
        episodes.main(["--records", missing, "--out", str(tmp_path / "e.json"), "--verbose"])
    with pytest.raises(SystemExit) as e:  # a usage error: one line naming --help
        episodes.main(["--records", missing, "--out", "x", "--bogus_flag=1"])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--bogus_flag=1" in err[0] and "--help" in err[0], err
    # a bug is not a user error: it keeps its traceback
    with pytest.raises(ZeroDivisionError):
        cli.run(lambda a: 1 / 0, argparse.Namespace(verbose=False))


MAINS = {"bench.ablations": ablations.main, "bench.readme_results": readme_results.main, "data.episodes": episodes.main,
         "data.prepare_mmact": prepare_mmact.main, "data.synthetic_export": synthetic_export.main,
         "evaluators.anchors": anchors.main, "evaluators.frozen": frozen.main, "faults": faults.main,
         "weights.convert": convert.main, "weights.export": export.main}
BAD_VALUE = {  # a bad value that reaches the command's own checks -> (argv, a word the line must name)
    "bench.ablations": (["--workdir=W", "--config=nope.py"], "nope.py"),
    "bench.readme_results": (["--root=nothere"], "nothere"),
    "data.episodes": (["--records=nothere.txt", "--out=e.json"], "nothere.txt"),
    "data.prepare_mmact": (["--src=nothere", "--out=o"], "nothere"),
    "data.synthetic_export": (["--out=o", "--classes=dancing"], "dancing"),
    "evaluators.anchors": (["--config=nope.py"], "nope.py"),
    "evaluators.frozen": (["--pretrain_workdir=nothere"], "nothere"),
    "faults": (["--only=nothere"], "nothere"),
    "weights.convert": (["--src=nothere.pth", "--dst=d"], "nothere.pth"),
    "weights.export": (["--src=nothere", "--dst=x.pth"], "nothere"),
}


@pytest.mark.parametrize("name", sorted(MAINS))
def test_every_command_answers_a_bad_flag_and_a_bad_value_with_one_error_line(name, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    argv, word = BAD_VALUE[name]
    with pytest.raises(SystemExit) as e:
        MAINS[name](argv + ["--no_such_flag=1"])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "--no_such_flag" in err[0], err
    assert MAINS[name](argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and word in err[0], err


@pytest.mark.parametrize("module", ["main.py", "mumae_jax.bench", "mumae_jax.bench.input_speed",
                                    "mumae_jax.evaluators.pictures"])
def test_the_absl_commands_answer_a_bad_flag_with_one_error_line(module):
    argv = [module] if module.endswith(".py") else ["-m", module]
    out = subprocess.run([sys.executable, *argv, "--no_such_flag=1"], cwd=ROOT, capture_output=True, text=True,
                         timeout=120)
    lines = out.stderr.strip().splitlines()
    assert out.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: ") and "no_such_flag" in lines[0], (
        out.returncode, out.stderr[-2000:])


def test_main_py_turns_a_bad_config_override_into_one_line():
    out = subprocess.run([sys.executable, "main.py", "--config=configs/pretrain.py:tiny", "--config.total_step=60",
                          "--workdir=/nonexistent/never_written"], cwd=ROOT, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 2, out.stderr[-2000:]
    lines = out.stderr.strip().splitlines()
    assert lines == ["error: unknown config field 'total_step'; Did you mean \"total_steps\" instead of "
                     "\"total_step\"?"], out.stderr[-2000:]


def test_readme_results_rounds_wall_time_before_splitting_minutes():
    assert [readme_results.minutes(s) for s in (179.6, 59.4, 125.0, 0.2)] == [
        "3 min 00 s", "0 min 59 s", "2 min 05 s", "0 min 00 s"]
