"""Run one command and write its wall time, exit code and peak RSS as JSON (``run_child``).

    python -I -S _launch.py RESULT.json TIMEOUT_S CMD [ARG ...]

Why a process of its own: Linux carries the spawning process's peak RSS into the child
through ``exec`` (the high-water mark of the address space the child starts in), so a child
started straight from a benchmark that holds a gigabyte of generated data reports at least
that gigabyte from ``wait4``. This launcher is a few MiB of standard library, so a child's
``ru_maxrss`` is its own peak (and its waited-for children's), above a floor of the
launcher's ~10 MiB. Standard streams and the environment pass through unchanged.
"""

import json
import os
import subprocess
import sys
import time


def main() -> None:
    result_path, timeout, cmd = sys.argv[1], float(sys.argv[2]), sys.argv[3:]
    started = time.perf_counter()
    proc = subprocess.Popen(cmd)
    deadline = started + timeout
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            break
        if time.perf_counter() > deadline:
            proc.kill()
            pid, status, usage = os.wait4(proc.pid, 0)
            break
        time.sleep(0.005)
    wall = time.perf_counter() - started
    with open(result_path, "w") as handle:
        json.dump(
            {
                "wall_s": wall,
                "rc": os.waitstatus_to_exitcode(status),
                "maxrss_kib": usage.ru_maxrss,  # Linux: KiB
            },
            handle,
        )


if __name__ == "__main__":
    main()
