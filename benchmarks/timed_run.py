"""Run one command and print its wall time and peak memory as JSON; standard library only.

The speed benchmark starts every measured process through this small launcher instead of
directly. Linux carries the parent's peak RSS into a child's ru_maxrss across fork and exec,
so a child of the large benchmark process would report at least the benchmark's own peak.
This launcher is a fresh, small interpreter, so its children report their own peak.

Usage: python -I timed_run.py '{"command": [...], "stdout": PATH}'  (stdout is optional)
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time


def main() -> int:
    request = json.loads(sys.argv[1])
    output_path = request.get("stdout")
    with open(output_path or os.devnull, "wb") as output:
        started = time.perf_counter()
        process = subprocess.Popen(request["command"], stdin=subprocess.DEVNULL, stdout=output)
        # wait4 returns the resource usage of this one child; Linux reports ru_maxrss in KiB.
        _, status, usage = os.wait4(process.pid, 0)
        seconds = time.perf_counter() - started
    json.dump({"seconds": seconds, "exit_status": os.waitstatus_to_exitcode(status),
               "peak_rss_bytes": usage.ru_maxrss * 1024}, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
