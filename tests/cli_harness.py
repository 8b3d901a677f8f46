"""What the CLI tests that run ``antlr-snn`` in a child process share."""
import os
import signal

import pytest

ENV = {**os.environ, "OMP_NUM_THREADS": "1"}
#: a train run of a few seconds
TINY = ["--hidden", "20", "--num-steps", "30", "--batch-size", "8", "--max-train", "32",
        "--max-eval", "16", "--epochs", "1", "--checkpoint-every", "2", "--quiet"]

#: ``python -c PAUSING_CLI N ARGS...``: the CLI with training.train_step wrapped so that it
#: prints "PAUSED N" after step N and sleeps (until a signal ends it)
PAUSING_CLI = """
import sys, time
import antlr_snn.training as training
pause_at, done, step = int(sys.argv[1]), [0], training.train_step
def pausing_step(*args, **kwargs):
    out = step(*args, **kwargs)
    done[0] += 1
    if done[0] == pause_at:
        print("PAUSED", done[0], flush=True)
        time.sleep(3600)
    return out
training.train_step = pausing_step
from antlr_snn.cli import main
sys.exit(main(sys.argv[2:]))
"""


def as_from_a_terminal():
    """Ctrl-C as a terminal delivers it: a suite started in the background (``cmd &``) passes
    SIGINT on ignored, and Python then never raises KeyboardInterrupt."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def sigkill_when_paused(proc, what: str = "the run") -> None:
    """Wait for the child's "PAUSED" line, SIGKILL it there and reap it; its pipes are closed."""
    try:
        for line in proc.stdout:
            if line.startswith("PAUSED"):
                break
        else:
            err = proc.stderr.read()[-2000:] if proc.stderr else ""
            pytest.fail(f"{what} ended (rc {proc.wait()}) without pausing {err}")
        proc.send_signal(signal.SIGKILL)
        assert proc.wait(timeout=30) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
        for pipe in (proc.stdout, proc.stderr):
            if pipe is not None:
                pipe.close()
