"""A stage stand-in for tests/test_stage_zygote.py: reports the process it runs in.

Run as ``python -m workers.stage_child tests.zygote_probe run CONFIG --stages NAME``
(what a worker runs). Prints one JSON line; ``MKD_PROBE_HOLD`` (a file path): touch it,
then wait to be signalled; exits ``MKD_PROBE_EXIT`` (default 0).
"""

from __future__ import annotations

import json
import os
import sys
import time

report = {
    "pid": os.getpid(), "ppid": os.getppid(), "pgid": os.getpgid(0), "sid": os.getsid(0), "cwd": os.getcwd(),
    "argv": sys.argv[1:], "probe_env": os.environ.get("MKD_PROBE_ENV"), "progress": os.environ.get("MKD_PROGRESS_FILE"),
    "preloaded_decimal": "decimal" in sys.modules, "path0": sys.path[0],
}
print(json.dumps(report))
print("to stderr", file=sys.stderr)
hold = os.environ.get("MKD_PROBE_HOLD")
if hold:
    open(hold, "w").close()
    time.sleep(60)
raise SystemExit(int(os.environ.get("MKD_PROBE_EXIT", "0")))
