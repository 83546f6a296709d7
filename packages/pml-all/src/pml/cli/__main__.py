"""The ``pml`` command: ``pml train``, ``pml eval``, ``pml embed``, ``pml search``.

Each sub-command lives in ``pml.cli._cmd_<name>`` with ``add_parser(subparsers)`` and
``run(args) -> int``; a module that is missing is skipped. Bad input a user can fix
(:class:`~pml.cli._errors.UsageError`, and the parser's own errors) prints one line,
``pml: error: <message>``, on stderr and exits with status 2, without a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from typing import NoReturn

from pml.cli.__about__ import __version__
from pml.cli._errors import UsageError

__all__ = ["COMMANDS", "build_parser", "main"]

COMMANDS = ("train", "eval", "embed", "search")


class _Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one-line :class:`UsageError` s."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message} (see {self.prog} --help)")


def build_parser() -> argparse.ArgumentParser:
    """The parser of ``pml`` with one sub-parser per available command."""
    parser = _Parser(
        prog="pml",
        description="Deep metric learning from the command line: train, evaluate, embed, search.",
    )
    parser.add_argument("--version", action="version", version=f"pml {__version__}")
    subparsers = parser.add_subparsers(
        dest="command", metavar="COMMAND", parser_class=_Parser, required=True
    )
    for name in COMMANDS:
        try:
            module = importlib.import_module(f"pml.cli._cmd_{name}")
        except ModuleNotFoundError as err:
            if err.name != f"pml.cli._cmd_{name}":
                raise
            continue
        module.add_parser(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``pml`` with ``argv`` (default: ``sys.argv[1:]``); returns the exit status."""
    try:
        parser = build_parser()
        argv = list(sys.argv[1:] if argv is None else argv)
        args = parser.parse_args(argv)
        args.argv = argv
        return int(args.run(args) or 0)
    except UsageError as err:
        # one line, whatever the message wraps (e.g. a YAML parser's multi-line error)
        print(f"pml: error: {' '.join(str(err).split())}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("pml: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
