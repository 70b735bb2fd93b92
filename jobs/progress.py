"""One concise log line per stage (rows, time, rate, failures) and one per committed batch (with an ETA).
Spark's UI shows the rest."""
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

    def batch(self, name: str, done: int, total: int, failed: int, seconds: float) -> str:
        """The line after a committed batch: rows done / total, the rate over the run's batches so
        far (`seconds` of them), failures, and the time the rest takes at that rate."""
        rate = done / max(seconds, 1e-9)
        eta = f"{(total - done) / rate:.0f} s" if rate > 0 else "unknown"
        share = f" ({100 * done / total:.0f}%)" if total else ""
        line = (f"[vidlake] {name} committed: {done}/{total} rows{share}, {rate:.3g} rows/s, "
                f"{failed} failed, ETA {eta}")
        print(line, file=sys.stderr, flush=True)
        return line
