"""The command-line conventions every entry point shares (docs/commands.md).

- Flags are `--name=value` with underscores: absl's style, which `main.py --config.x=y` needs; the argparse
  commands also take `--name value`, and an old dashed spelling (`--video-dir`) still parses.
- Every flag's help states its default.
- A user error (a bad flag or config field, a missing file, an invalid value) ends the command with one
  `error: ...` line on stderr and exit status 2, not a traceback; `--verbose` re-raises it (traceback) and
  shows the libraries' INFO logs (TensorFlow, TFDS, orbax, jax), which are hidden by default.

    def parser():  p = cli.parser("python -m mumae_jax.x", __doc__); p.add_argument(...); return p
    def main(argv=None) -> int:  return cli.run(_run, parser().parse_args(argv))   # argparse
    if __name__ == "__main__":  cli.run_absl(main)                                  # absl (+ config_flags)
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
import warnings
from typing import Callable, NoReturn, Optional, Sequence

# what a user can cause and fix: bad values, files that are missing, taken or unreadable, a missing extra
USER_ERRORS = (ValueError, OSError, ImportError)
# library loggers -> their level unless --verbose: TFDS and orbax log through absl, and their WARNINGs are advice
# to library developers (deprecations, "Using custom data configuration: <repr>", checkpoint timing hints)
CHATTY_LOGGERS = {"absl": logging.ERROR, "tensorflow": logging.ERROR, "tensorflow_datasets": logging.ERROR,
                  "orbax": logging.ERROR, "jax": logging.WARNING}


def quiet_environment() -> None:
    """Before TensorFlow is imported: no C++ INFO/WARNING lines, and no oneDNN graph rewrites (their notice
    ignores TF_CPP_MIN_LOG_LEVEL; TensorFlow only decodes and resizes here, which oneDNN does not change).
    An explicit environment setting wins."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")


def configure_logging(verbose: bool = False) -> None:
    """This package's INFO lines always; the libraries' INFO and deprecation warnings only when `verbose`."""
    logging.getLogger("mumae_jax").setLevel(logging.INFO)
    for name, level in CHATTY_LOGGERS.items():
        logging.getLogger(name).setLevel(logging.INFO if verbose else level)
    if not verbose:
        for category in (DeprecationWarning, FutureWarning):
            warnings.filterwarnings("ignore", category=category, module=r"(tensorflow|tensorflow_datasets|orbax)")
    if not logging.getLogger().handlers and "absl.logging" not in sys.modules:
        logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")


def on_terminal() -> bool:
    """Whether stderr is a terminal: progress bars that redraw (nested ones move the cursor) only there, so
    a redirected log holds no cursor codes."""
    return sys.stderr.isatty()


def message(e: BaseException) -> str:
    """An exception as one line: wrapped exceptions unwrapped, a KeyError's text without its quotes, lines
    joined with '; '."""
    while len(e.args) == 1 and isinstance(e.args[0], BaseException):
        e = e.args[0]
    text = str(e.args[0]) if isinstance(e, KeyError) and e.args else str(e)
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    if any(ln.startswith("Traceback (most recent call last)") for ln in lines):  # ml_collections embeds one
        lines = [lines[0].rstrip(":;") + ":", lines[-1]]
    return "; ".join(lines).replace(":;", ":") or type(e).__name__


def fail(e: BaseException | str, prefix: str = "") -> NoReturn:
    """Print `error: <prefix><message>` on stderr and exit 2."""
    print(f"error: {prefix}{e if isinstance(e, str) else message(e)}", file=sys.stderr, flush=True)
    sys.exit(2)


class _HelpFormatter(argparse.HelpFormatter):
    """Appends "(default: X)" to a flag's help unless the text already names its default."""

    def _get_help_string(self, action):
        text = action.help or ""
        if "default" in text or action.default in (None, argparse.SUPPRESS, False) or not action.option_strings:
            return text
        return f"{text} (default: %(default)s)"


class Parser(argparse.ArgumentParser):
    """argparse with the package's conventions: `--verbose`, defaults in the help, dashed spellings of the
    underscore flags accepted, and a usage error as one line (exit 2)."""

    def __init__(self, prog: str, description: Optional[str] = None, **kw):
        first = (description or "").strip().split("\n\n")[0].replace("\n", " ")
        super().__init__(prog=prog, description=first or None, formatter_class=_HelpFormatter,
                         allow_abbrev=False, **kw)
        self.add_argument("--verbose", action="store_true",
                          help="show the libraries' INFO logs and the traceback of an error")

    def parse_known_args(self, args=None, namespace=None):
        argv = list(sys.argv[1:] if args is None else args)
        return super().parse_known_args([_underscored(a) for a in argv], namespace)

    def error(self, text: str) -> NoReturn:
        fail(f"{text} (python -m {self.prog.split()[-1]} --help lists the flags)"
             if self.prog.startswith("python -m") else text)


def _underscored(arg: str) -> str:
    """`--video-dir=x` -> `--video_dir=x` (flag names only, never values)."""
    if not arg.startswith("--") or len(arg) < 3:
        return arg
    name, eq, value = arg.partition("=")
    return "--" + name[2:].replace("-", "_") + eq + value


def parser(prog: str, description: Optional[str] = None) -> Parser:
    return Parser(prog, description)


def run(fn: Callable[[argparse.Namespace], Optional[int]], args: argparse.Namespace) -> int:
    """`fn(args)` with the package's logging; a USER_ERRORS exception becomes one `error:` line and 2
    (re-raised with --verbose)."""
    configure_logging(getattr(args, "verbose", False))
    try:
        return int(fn(args) or 0)
    except USER_ERRORS as e:
        if getattr(args, "verbose", False):
            raise
        print(f"error: {message(e)}", file=sys.stderr, flush=True)
        return 2


def run_absl(main: Callable[[Sequence[str]], object]) -> None:
    """absl's `app.run(main)` with the package's conventions: a bad flag or config override (e.g.
    `--config.total_step=60`) and a USER_ERRORS exception in `main` are one `error:` line and exit 2;
    `--verbose` for the libraries' logs and tracebacks."""
    from absl import app, flags

    if "verbose" not in flags.FLAGS:
        flags.DEFINE_bool("verbose", False, "show the libraries' INFO logs and the traceback of an error")

    def parse(argv):
        try:
            return flags.FLAGS(argv)
        except (flags.Error, AttributeError, KeyError, TypeError, *USER_ERRORS) as e:
            if "--verbose" in argv:
                raise
            fail(e, "unknown config field " if isinstance(e, (AttributeError, KeyError)) else "")

    def wrapped(argv):
        verbose = flags.FLAGS.verbose
        configure_logging(verbose)
        try:
            return main(argv)
        except (app.UsageError, *USER_ERRORS) as e:
            if verbose:
                raise
            fail(e)

    app.run(wrapped, flags_parser=parse)
