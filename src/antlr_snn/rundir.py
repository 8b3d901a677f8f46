"""Run folders: one run per folder, held under a lock, and nothing left behind by a failed start.

A :class:`RunFolder` is the output folder of one run of a command:

* **Automatic names never collide.** Without a name it is ``<prefix>-<date>-<time>``, with
  ``-2``, ``-3``, ... appended when that exists; the folder is made with one ``os.mkdir``,
  which fails if another process made it first, so two runs started in the same second get
  two folders.
* **One run at a time.** The run holds an exclusive advisory lock (``fcntl.flock``) on the
  file :data:`LOCK_NAME` inside the folder for its whole life; the file holds the process id.
  A second run on the folder is refused at once with one line naming the folder and that
  process. The kernel drops the lock when the holder dies, so a killed run leaves no stale
  lock (only the file, which the next run takes over).
* **A folder that holds a run** (``holds_run(folder)`` is true) is refused, unless the run is
  continued (``resume=True``) or replaced (``overwrite=True``).
* **A failed start leaves nothing.** A run that ends (fails) before :meth:`RunFolder.commit`
  (the moment it writes its first file) removes its lock file and every folder it created.
* **Ctrl-C** after the commit becomes an :class:`Interrupted` whose message names the folder
  and, where the command can continue a run, the exact command that does.

Example:
    >>> import os, tempfile
    >>> root = tempfile.mkdtemp()
    >>> with RunFolder(os.path.join(root, "a"), "runs/x") as run:
    ...     other = RunFolder(run.path, "runs/x")
    ...     try:
    ...         other.open()
    ...     except UserError as exc:
    ...         print(str(exc).replace(root, "ROOT").replace(str(os.getpid()), "PID"))
    ROOT/a is in use by another run (process PID); wait for it to end or choose another --out
    >>> os.path.exists(os.path.join(root, "a"))   # never committed: nothing left behind
    False
"""
from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import shlex
import socket
import time
from typing import Callable, Optional

from antlr_snn.errors import UserError

__all__ = ["RunFolder", "Interrupted", "LOCK_NAME", "automatic_name", "command_line",
           "lock_holder"]

#: The lock file inside a run folder.
LOCK_NAME = ".antlr-snn.lock"


class Interrupted(KeyboardInterrupt):
    """Ctrl-C during a run; the message says where the run is and how to continue it."""


def command_line(*args) -> str:
    """``args`` as one shell command line, quoted where needed.

    >>> command_line("antlr-snn", "train", "--out", "my runs/a")
    "antlr-snn train --out 'my runs/a'"
    """
    return " ".join(shlex.quote(str(a)) for a in args)


def automatic_name(prefix: str) -> str:
    """``<prefix>-<date>-<time>`` (the folder name before any ``-2`` suffix)."""
    return f"{prefix}-{time.strftime('%Y%m%d-%H%M%S')}"


def lock_holder(folder: str) -> str:
    """What the lock file of ``folder`` says about its holder: ``'process 123'`` (and the host
    when it is another one), or ``'process unknown'``."""
    try:
        with open(os.path.join(folder, LOCK_NAME), encoding="utf-8") as fh:
            parts = fh.read(200).split()
    except (OSError, UnicodeDecodeError):
        parts = []
    if not parts or not parts[0].isdigit():
        return "process unknown"
    host = parts[1] if len(parts) > 1 else ""
    return f"process {parts[0]}" + (f" on {host}" if host and host != socket.gethostname()
                                   else "")


def _not_writable(path: str, exc: OSError) -> UserError:
    reason = exc.strerror or exc.__class__.__name__
    return UserError(f"output folder {path!r} is not writable ({reason})")


class RunFolder:
    """The output folder of one run (see the module docstring).

    Args:
        out: the folder, or ``None`` for an automatic ``<prefix>-<date>-<time>``.
        prefix: e.g. ``"runs/train"``.
        holds_run: ``holds_run(folder) -> bool``: the folder already holds a run.
        resume: the run continues the one in ``out`` (which must then hold one).
        overwrite: a run in ``out`` may be replaced.
        command: the command line that started the run without its flags (for messages).
        resume_command: the command line that continues this run (see :func:`command_line`),
            or ``None`` where there is none.
        replace_hint: how to replace or continue a run (the end of the "already holds" line).
    """

    def __init__(self, out: Optional[str], prefix: str, *,
                 holds_run: Callable[[str], bool] = lambda folder: False, resume: bool = False,
                 overwrite: bool = False, command: str = "antlr-snn",
                 resume_command: Optional[str] = None,
                 replace_hint: str = "choose another --out"):
        if out is not None and not str(out).strip():
            raise UserError("--out is empty; give a folder name (or leave --out out for "
                             f"{prefix}-<date>-<time>)")
        self.out, self.prefix = (None if out is None else os.fspath(out)), prefix
        self.holds_run, self.resume, self.overwrite = holds_run, resume, overwrite
        self.command, self.resume_command, self.replace_hint = command, resume_command, replace_hint
        self.path: Optional[str] = None
        self.committed = False
        self._fd: Optional[int] = None
        self._created: list = []  # folders this run made, deepest last

    # ------------------------------------------------------------------ opening
    def _makedirs(self, path: str) -> None:
        """``os.makedirs`` that remembers which folders it made."""
        missing, p = [], os.path.abspath(path)
        while not os.path.isdir(p):
            missing.append(p)
            parent = os.path.dirname(p)
            if parent == p:
                break
            p = parent
        for p in reversed(missing):
            try:
                os.mkdir(p)
            except FileExistsError:
                if not os.path.isdir(p):
                    raise
                continue  # made by a run started at the same time: not ours to remove
            self._created.append(p)

    def _new_automatic(self) -> str:
        base = automatic_name(self.prefix)
        self._makedirs(os.path.dirname(base) or ".")
        for k in range(1, 10000):
            path = base if k == 1 else f"{base}-{k}"
            try:
                os.mkdir(path)  # atomic: exactly one process makes a given folder
            except FileExistsError:
                continue
            self._created.append(os.path.abspath(path))
            return path
        raise UserError(f"no free folder name {base}-N; give --out")

    def open(self) -> "RunFolder":
        """Make (or find) the folder and take its lock; one-line errors."""
        try:
            if self.out is None:
                self.path = self._new_automatic()
            else:
                self.path = self.out
                self._makedirs(self.path)
            self._lock()
        except OSError as exc:
            self._undo()
            raise _not_writable(self.path or self.out or self.prefix, exc) from None
        except BaseException:
            self._undo()
            raise
        try:
            if self.resume:
                pass  # the caller checks what it needs to continue
            elif self.holds_run(self.path) and not self.overwrite:
                raise UserError(f"{self.path} already holds a run; {self.replace_hint}")
        except BaseException:
            self._undo()
            raise
        return self

    def _lock(self) -> None:
        lock = os.path.join(self.path, LOCK_NAME)
        while True:
            fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                os.close(fd)
                if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    raise
                raise UserError(f"{self.path} is in use by another run ({lock_holder(self.path)})"
                                f"; wait for it to end or choose another --out") from None
            try:  # the file may have been removed by its last holder between open and flock
                same = os.path.samestat(os.fstat(fd), os.stat(lock))
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        self._fd = fd
        with contextlib.suppress(OSError):  # best effort: a full disk must not block a run
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()} {socket.gethostname()}\n".encode(), 0)

    # ------------------------------------------------------------------ the run
    def commit(self, announce: bool = True) -> None:
        """The run starts writing: from now on the folder stays, even when the run fails."""
        self.committed = True
        if announce:
            print(f"run folder: {self.path}", flush=True)

    def interrupted_message(self) -> str:
        where = f"interrupted; the run is in {self.path}"
        if self.resume_command is None:
            return (f"{where} (this command cannot continue a run: start it again with "
                    f"--overwrite --out {shlex.quote(self.path)})")
        return f"{where}; continue it with: {self.resume_command}"

    # ------------------------------------------------------------------ closing
    def _release(self) -> None:
        if self._fd is None:
            return
        with contextlib.suppress(OSError):
            os.unlink(os.path.join(self.path, LOCK_NAME))  # still held: no one else has it
        os.close(self._fd)
        self._fd = None

    def _undo(self) -> None:
        """Remove what an uncommitted run made: its lock file and the folders it created."""
        self._release()
        for p in reversed(self._created):
            with contextlib.suppress(OSError):
                os.rmdir(p)  # only if empty: never a file of anyone else
        self._created = []

    def close(self) -> None:
        """End the run: release the lock; a run that never committed leaves nothing."""
        if self.committed:
            self._release()
        else:
            self._undo()

    def __enter__(self) -> "RunFolder":
        return self.open()

    def __exit__(self, et, ev, tb):
        self.close()
        if isinstance(ev, KeyboardInterrupt) and not isinstance(ev, Interrupted) \
                and self.committed:
            raise Interrupted(self.interrupted_message()) from None
        return False
