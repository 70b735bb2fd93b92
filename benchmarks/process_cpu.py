"""CPU time of a process tree, read from /proc: what a benchmark's way used, Spark's JVM and Python
workers included, on a machine shared with other people's processes."""
from __future__ import annotations

import os
from pathlib import Path


def cpu_seconds(pid: int, skip: frozenset = frozenset()) -> float:
    """CPU time of `pid` and its descendants (and their reaped children), leaving out `skip`."""
    tick = os.sysconf("SC_CLK_TCK")
    parents, times = {}, {}
    for entry in filter(str.isdigit, os.listdir("/proc")):
        try:
            fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        parents[int(entry)] = int(fields[1])
        times[int(entry)] = sum(int(f) for f in fields[11:15]) / tick
    total, todo = 0.0, [pid]
    while todo:
        current = todo.pop()
        if current not in skip:
            total += times.get(current, 0.0)
            todo += [child for child, parent in parents.items() if parent == current]
    return total
