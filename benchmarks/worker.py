"""A benchmark worker process: systems of :mod:`benchmarks.systems` in their own
environment (an older checkout's ``src`` first on ``PYTHONPATH``, or SpikingJelly's
``SJ_LIF_CUDA_IMPLEMENTATION``), served one JSON request per line on stdin:

    {"cmd": "build", "key", "name", "cfg", "device", "scales"}  -> scales, rates, module
    {"cmd": "time", "key", "what": "step" | "infer"}            -> t: [seconds, page faults]
    {"cmd": "memory", "key"} / {"cmd": "drop", "key"} / {"cmd": "quit"}

Answers go to the real stdout; everything the libraries print goes to stderr.
"""
from __future__ import annotations

import json
import sys
import traceback


def main() -> None:
    proto, sys.stdout = sys.stdout, sys.stderr
    from benchmarks.common import Local
    local = Local()
    for line in sys.stdin:
        req = json.loads(line)
        try:
            cmd = req["cmd"]
            if cmd == "quit":
                ans = {}
            elif cmd == "build":
                ans = local.build(req["key"], req["name"], req["cfg"], req["device"],
                                  req.get("scales"))
            elif cmd == "time":
                ans = {"t": local.time(req["key"], req["what"])}
            elif cmd == "memory":
                ans = {"memory": local.memory(req["key"])}
            elif cmd == "drop":
                local.drop(req["key"])
                ans = {}
            else:
                ans = {"error": f"unknown command {cmd!r}"}
        except Exception as exc:  # noqa: BLE001 (reported to the driver)
            traceback.print_exc()
            ans = {"error": f"{type(exc).__name__}: {exc}"}
        proto.write(json.dumps(ans) + "\n")
        proto.flush()
        if req.get("cmd") == "quit":
            return


if __name__ == "__main__":
    main()
