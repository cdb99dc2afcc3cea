"""Another process's CPU time, read from outside it.

Standard library only: ``dynamo_client_side.py`` imports it in Dynamo's venv too.
"""

from __future__ import annotations

import os
import time
from pathlib import Path


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of process ``pid``, every thread's (ended ones too): what
    ``/proc/PID/stat``'s utime + stime count, read from Linux's CPU clock of that process
    (nanoseconds, where ``/proc`` has clock ticks of 10 ms), else from ``/proc``."""
    try:
        return time.clock_gettime(((~pid) << 3) | 2)  # MAKE_PROCESS_CPUCLOCK(pid, SCHED)
    except OSError:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
