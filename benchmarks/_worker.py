"""Run one benchmark case in this (fresh) process and print one JSON line.

Usage: python -m benchmarks._worker <module:function> '<json params>' <repeats>

``function(**params)`` does the setup and returns a zero-argument ``step`` callable. Peak
memory is the resident-set high-water mark during the first ``step()`` above the resident
set after setup (Linux: the mark is reset through /proc/self/clear_refs).
"""

from __future__ import annotations

import contextlib
import gc
import importlib
import json
import sys
import time
from pathlib import Path


def _status(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    return 0


def _reset_peak() -> None:
    with contextlib.suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")


def main() -> None:
    target, params, repeats = sys.argv[1], json.loads(sys.argv[2]), int(sys.argv[3])
    module, func = target.split(":")
    try:
        step = getattr(importlib.import_module(module), func)(**params)
        gc.collect()
        _reset_peak()
        base = _status("VmRSS")
        t0 = time.perf_counter()
        step()
        first = time.perf_counter() - t0
        peak = max(_status("VmHWM") - base, 0)
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            step()
            times.append(time.perf_counter() - t0)
        times.sort()
        out = {
            "time_s": times[len(times) // 2] if times else first,
            "first_s": first,
            "peak_mb": peak / 2**20,
        }
    except Exception as exc:  # reported in the table, not raised
        out = {"error": f"{type(exc).__name__}: {str(exc)[:200]}"}
    print(json.dumps(out))


if __name__ == "__main__":
    main()
