"""Stage marks: where an export's time and memory go, for bench/export.py.

With KERAS_RESNET_STAGE_MARKS=1 in the environment, `mark(stage)` writes one line to stderr
when an export stage ends: its name, seconds since the process started, the process's
resident memory now and its peak so far (VmRSS / VmHWM of /proc/self/status, Linux). Children
are not counted here: a forked child's peak (getrusage) includes the parent's pages it shared
until it exec'd, so bench/export.py measures the process tree itself. Without the variable it
does nothing.
"""

from __future__ import annotations

import json
import os
import sys
import time

ENABLED_BY = "KERAS_RESNET_STAGE_MARKS"
PREFIX = "keras_resnet-stage "


def _status_kib(field):
    """A field of /proc/self/status in KiB (None off Linux)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def _process_seconds():
    """Seconds since this process started (its start time in /proc/self/stat; else since import)."""
    try:
        with open("/proc/self/stat") as f:
            start_ticks = int(f.read().rsplit(")", 1)[1].split()[19])
        with open("/proc/uptime") as f:
            uptime = float(f.read().split()[0])
        return uptime - start_ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return time.monotonic() - _IMPORTED


_IMPORTED = time.monotonic()


def mark(stage):
    """Report that `stage` just ended (only when KERAS_RESNET_STAGE_MARKS is set)."""
    if not os.environ.get(ENABLED_BY):
        return
    rss, hwm = _status_kib("VmRSS"), _status_kib("VmHWM")
    line = {
        "stage": stage,
        "seconds": round(_process_seconds(), 3),
        "rss_mb": None if rss is None else round(rss / 1024, 1),
        "peak_mb": None if hwm is None else round(hwm / 1024, 1),
    }
    print(PREFIX + json.dumps(line), file=sys.stderr, flush=True)


def parse(text):
    """The marks in a process's stderr `text`, in order: [{"stage", "seconds", "rss_mb", ...}]."""
    return [json.loads(line[len(PREFIX) :]) for line in text.splitlines() if line.startswith(PREFIX)]
