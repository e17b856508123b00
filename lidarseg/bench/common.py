"""Timing helpers shared by the benchmarks: medians of repeated runs, printed as a table with ratios."""
from __future__ import annotations

import statistics
import time
from typing import Callable


def time_call(fn: Callable[[], object], repeat: int = 7, warmup: int = 1, sync: Callable[[], None] | None = None):
    """Run `fn` `warmup` times untimed, then `repeat` times; return the list of wall times in seconds."""
    for _ in range(warmup):
        fn()
        if sync:
            sync()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        if sync:
            sync()
        times.append(time.perf_counter() - t0)
    return times


def median_ms(times) -> float:
    return 1000.0 * statistics.median(times)


def print_table(rows, headers):
    """Print rows (lists of str) as a fixed-width table."""
    widths = [max(len(str(h)), *(len(str(r[i])) for r in rows)) for i, h in enumerate(headers)]
    line = "  ".join(str(h).ljust(w) for h, w in zip(headers, widths))
    print(line)
    print("-" * len(line))
    for r in rows:
        print("  ".join(str(c).ljust(w) for c, w in zip(r, widths)))
