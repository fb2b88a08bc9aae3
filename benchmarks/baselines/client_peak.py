"""Run one kennel command in this process and write its own peak memory (``VmHWM``, the
process alone: not the Dask workers it starts, which ``wait4`` would fold in).

    python client_peak.py OUT.json predict --model-uri ... resource.cluster=local:2
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def main() -> int:
    from kennel.cli.manager import main as kennel_main

    out = Path(sys.argv[1])
    code = kennel_main(sys.argv[2:])
    status = Path("/proc/self/status").read_text()
    hwm = next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmHWM:"))
    out.write_text(json.dumps({"code": code, "vmhwm_kb": hwm}))
    return int(code or 0)


if __name__ == "__main__":
    sys.exit(main())
