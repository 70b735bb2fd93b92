"""One concise log line per stage: rows, time, rate, failures. Spark's UI shows the rest."""
from __future__ import annotations

import sys
import time


class StageLog:
    """Times a stage from its creation and prints its summary line on `done`."""

    def __init__(self, stage: str):
        self.stage = stage
        self.started = time.monotonic()

    def elapsed(self) -> float:
        """Seconds since the stage started."""
        return time.monotonic() - self.started

    def note(self, message: str) -> None:
        print(f"[vidlake] {self.stage}: {message}", file=sys.stderr, flush=True)

    def done(self, rows: int, failed: int = 0, **extra: object) -> str:
        seconds = max(time.monotonic() - self.started, 1e-9)
        parts = [f"{rows} rows in {seconds:.1f} s ({rows / seconds:.1f} rows/s)", f"{failed} failed"]
        parts += [f"{key}={value}" for key, value in extra.items()]
        line = f"[vidlake] {self.stage}: " + ", ".join(parts)
        print(line, flush=True)
        return line
