"""The ``antlr-snn`` command line: one subcommand per experiment of the paper.

Each subcommand lives in ``antlr_snn.experiments.<module>``, which provides
``add_arguments(parser)`` and ``run(args) -> int``. A user error (a :class:`UserError`: bad
flags, missing or corrupt files; a file system that is full, read-only or denies access; not
enough memory) prints one line and exits with status 2, without a traceback. Any other
exception is a bug in antlr-snn: it keeps its traceback and exits with status 1.
"""
from __future__ import annotations

import argparse
import errno
import importlib
import sys

from antlr_snn.errors import UserError, allocation_failure, one_line

# name -> (module, one-line help); modules are imported only when their subcommand runs
SUBCOMMANDS = {
    "train": ("antlr_snn.experiments.train", "latency-coded image classification (Fig. 7, 8)"),
    "evaluate": ("antlr_snn.experiments.evaluate", "score a checkpoint on a test split"),
    "sweep": ("antlr_snn.experiments.sweep", "search the settings for the accuracy-spike front"),
    "spike-train": ("antlr_snn.experiments.spike_train", "random spike-train matching (Fig. 6)"),
    "landscape": ("antlr_snn.experiments.landscape", "estimated loss landscapes (Fig. 5)"),
    "export": ("antlr_snn.experiments.export", "a checkpoint's network as a NIR graph (hardware)"),
}

#: Errors of the file system or the machine, not of antlr-snn: shown as one line (exit 2).
ENVIRONMENT_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EPERM, errno.EROFS,
                      errno.ENOENT, errno.EISDIR, errno.ENOTDIR, errno.EEXIST,
                      errno.ENAMETOOLONG, errno.EMFILE, errno.ENFILE, errno.EIO, errno.ENXIO,
                      errno.EBUSY, errno.ELOOP}


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


def user_message(exc: BaseException):
    """The one-line message for an error the user can act on, or ``None`` for a bug."""
    if isinstance(exc, UserError):
        return one_line(exc)
    if isinstance(exc, MemoryError) and str(exc).strip():
        return one_line(exc)  # raised by antlr-snn itself, naming what did not fit
    if isinstance(exc, (MemoryError, RuntimeError)):
        reason = allocation_failure(exc)
        if reason is None:
            return None
        detail = "" if reason == "out of memory" else f" ({reason})"
        return f"out of memory{detail}; use a smaller network, batch or number of time steps"
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        where = f" to write {exc.filename}" if exc.filename else ""
        what = "no space left on the device" if exc.errno == errno.ENOSPC else \
            "no space left in the disk quota"
        return f"{what}{where}; the files written before are intact (free some space and rerun)"
    if isinstance(exc, OSError) and exc.errno in ENVIRONMENT_ERRNOS:
        msg = one_line(exc)
        if exc.filename and str(exc.filename) not in msg:
            msg = f"{msg}: {exc.filename}"
        return msg
    return None


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0].startswith("-") and argv[0] not in ("-h", "--help"):
        argv = ["train"] + argv
    parser = build_parser(only=argv[0] if argv and argv[0] in SUBCOMMANDS else "")
    args = parser.parse_args(argv)
    try:
        return int(importlib.import_module(args._module).run(args) or 0)
    except KeyboardInterrupt as exc:  # a run's Interrupted says where it is and how to go on
        print(f"antlr-snn {args.command}: {one_line(exc) if str(exc) else 'interrupted'}",
              file=sys.stderr)
        return 130
    except Exception as exc:
        msg = user_message(exc)
        if msg is None:
            raise  # a bug in antlr-snn, not a user error: keep the traceback (exit status 1)
        print(f"antlr-snn {args.command}: error: {msg}", file=sys.stderr)
        return 2
