"""Timing helpers shared by the benchmarks: medians of repeated runs (wall clock on CPU, CUDA events on a GPU),
printed as a table with ratios."""
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


def time_cuda(fn: Callable[[], object], repeat: int = 10, warmup: int = 2):
    """Like `time_call` on the current CUDA device, timed with CUDA events around each call (the GPU's own time
    from the first kernel launched to the last one finished; seconds)."""
    import torch

    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(repeat):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) / 1000.0)
    return times


def time_on(device, fn: Callable[[], object], repeat: int, warmup: int):
    """`time_cuda` on a CUDA device, else `time_call`."""
    if getattr(device, "type", device) == "cuda":
        return time_cuda(fn, repeat=repeat, warmup=warmup)
    return time_call(fn, repeat=repeat, warmup=warmup)


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
