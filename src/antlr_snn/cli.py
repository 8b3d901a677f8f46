"""The ``antlr-snn`` command line: one subcommand per experiment of the paper.

Each subcommand lives in ``antlr_snn.experiments.<module>``, which provides
``add_arguments(parser)`` and ``run(args) -> int``. User errors (bad flags, missing or corrupt
files, unwritable folders) print one line and exit with status 2; no traceback is shown.
"""
from __future__ import annotations

import argparse
import importlib
import sys

# name -> (module, one-line help); modules are imported only when their subcommand runs
SUBCOMMANDS = {
    "train": ("antlr_snn.experiments.train", "latency-coded image classification (Fig. 7, 8)"),
    "evaluate": ("antlr_snn.experiments.evaluate", "score a checkpoint on a test split"),
    "spike-train": ("antlr_snn.experiments.spike_train", "random spike-train matching (Fig. 6)"),
    "landscape": ("antlr_snn.experiments.landscape", "estimated loss landscapes (Fig. 5)"),
}

USER_ERRORS = (ValueError, FileNotFoundError, PermissionError, IsADirectoryError,
               NotADirectoryError, OSError)


class UserError(Exception):
    """An error caused by the user's input; shown as one line without a traceback."""


def build_parser(only=None) -> argparse.ArgumentParser:
    """The parser; with ``only``, just that subcommand's module is imported (a broken or slow
    experiment module then cannot affect the others)."""
    parser = argparse.ArgumentParser(
        prog="antlr-snn",
        description="Train spiking networks with few spikes (ANTLR, NeurIPS 2020). "
                    "Without a subcommand, `train` runs on the embedded MNIST digits.")
    sub = parser.add_subparsers(dest="command")
    for name, (module, help_text) in SUBCOMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.set_defaults(_module=module)
        if only is None or name == only:
            importlib.import_module(module).add_arguments(p)
    return parser


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0].startswith("-") and argv[0] not in ("-h", "--help"):
        argv = ["train"] + argv
    parser = build_parser(only=argv[0] if argv and argv[0] in SUBCOMMANDS else "")
    args = parser.parse_args(argv)
    try:
        return int(importlib.import_module(args._module).run(args) or 0)
    except KeyboardInterrupt:
        print("antlr-snn: interrupted", file=sys.stderr)
        return 130
    except (UserError, MemoryError, RuntimeError) + USER_ERRORS as exc:
        from antlr_snn.experiments.common import allocation_failure, one_line
        if isinstance(exc, MemoryError) and str(exc).strip():
            msg = one_line(exc)  # raised by antlr-snn itself, naming what did not fit
        elif isinstance(exc, (MemoryError, RuntimeError)) and not isinstance(exc, USER_ERRORS):
            reason = allocation_failure(exc)
            if reason is None:
                raise  # a bug, not a user error: keep the traceback
            detail = "" if reason == "out of memory" else f" ({reason})"
            msg = (f"out of memory{detail}; use a smaller network, batch or number of time "
                   f"steps")
        else:
            msg = one_line(exc)
        if isinstance(exc, OSError) and exc.filename and str(exc.filename) not in msg:
            msg = f"{msg}: {exc.filename}"
        print(f"antlr-snn {args.command}: error: {msg}", file=sys.stderr)
        return 2
