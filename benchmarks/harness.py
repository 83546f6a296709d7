"""Side-by-side benchmark harness: pml against the reference, one fresh process per measurement.

A suite module ``benchmarks/cases_<area>.py`` defines ``TITLE`` and ``SUITE``: a list of dicts

    {"name": "TripletMarginLoss all triplets", "params": {"n": 1024, "d": 128, "per_class": 8},
     "pml": "benchmarks.cases_losses:triplet_pml", "ref": "benchmarks.cases_losses:triplet_ref",
     "repeats": 3, "ref_skip": None | "why the reference is not run"}

``pml``/``ref`` name functions ``f(**params) -> step`` (setup done, ``step()`` does the work,
e.g. forward + backward). :func:`run_suite` measures both and writes a Markdown table to
``benchmarks/results/<area>.md``.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"


def measure(target: str, params: dict[str, Any], repeats: int = 3, timeout: int = 900) -> dict:
    """Run ``target(**params)`` in a fresh interpreter; time and peak memory of ``step()``."""
    cmd = [sys.executable, "-m", "benchmarks._worker", target, json.dumps(params), str(repeats)]
    try:
        proc = subprocess.run(
            cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout, check=False
        )
    except subprocess.TimeoutExpired:
        return {"error": f"timeout after {timeout}s"}
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if not lines:
        tail = (proc.stderr or "").strip().splitlines()[-1:] or [f"exit {proc.returncode}"]
        return {"error": f"crashed: {tail[0][:200]}"}
    return json.loads(lines[-1])


def _fmt_time(r: dict | None) -> str:
    if r is None:
        return "—"
    if "error" in r:
        return f"error: {r['error']}"
    return f"{r['time_s'] * 1000:.1f} ms"


def _fmt_mem(r: dict | None) -> str:
    if r is None or "error" in r:
        return "—"
    return f"{r['peak_mb']:.0f} MB"


def _combine(runs: list[dict]) -> dict:
    """One result from several rounds: the median of their times, the largest peak."""
    if not runs or any("error" in r for r in runs):
        return next((r for r in runs if "error" in r), {"error": "no run"})
    times = sorted(r["time_s"] for r in runs)
    return {"time_s": times[len(times) // 2], "peak_mb": max(r["peak_mb"] for r in runs)}


def _committed_reference(path: Path) -> tuple[dict[tuple[str, str], dict[str, str]], str]:
    """The reference columns of a committed table, by (case, parameters), and its date."""
    if not path.exists():
        return {}, ""
    text = path.read_text()
    measured = next((ln for ln in text.splitlines() if ln.startswith("Measured ")), "")
    date = " ".join(measured.split()[1:4]) if measured else "an earlier run"
    found = {}
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 7 and cells[0] not in ("case", "---"):
            found[(cells[0], cells[1])] = {"time": cells[3], "peak": cells[6]}
    return found, date


def _time_of(cell: str) -> float | None:
    """Seconds from a table cell such as ``"114.3 ms"`` (None for anything else)."""
    parts = cell.split()
    if len(parts) == 2 and parts[1] == "ms":
        try:
            return float(parts[0]) / 1000
        except ValueError:
            return None
    return None


def run_suite(
    area: str,
    title: str,
    suite: list[dict[str, Any]],
    only: str | None = None,
    reuse_reference: bool = False,
) -> Path:
    """Measure every case of ``suite`` and write ``benchmarks/results/<area>.md``.

    With ``reuse_reference`` only pml is measured; the reference columns are carried over from
    the committed table (the reference does not change), which the header then says.
    """
    committed, committed_date = _committed_reference(RESULTS / f"{area}.md")
    rows = []
    for case in suite:
        if only and only.lower() not in case["name"].lower():
            continue
        if only and os.environ.get("PML_BENCH_EXACT") and only != case["name"]:
            continue
        repeats = case.get("repeats", 3)
        print(f"[{area}] {case['name']} {case['params']}", flush=True)
        params = ", ".join(f"{k}={v}" for k, v in case["params"].items())
        old_ref = committed.get((case["name"], params)) if reuse_reference else None
        with_ref = bool(case.get("ref")) and not case.get("ref_skip") and old_ref is None
        runs: list[tuple[dict, dict | None]] = []
        for _ in range(case.get("rounds", 1)):  # alternate the libraries, fresh processes
            ours_run = measure(case["pml"], case["params"], repeats)
            runs.append(
                (ours_run, measure(case["ref"], case["params"], repeats) if with_ref else None)
            )
        ours = _combine([o for o, _ in runs])
        ref = _combine([r for _, r in runs if r is not None]) if with_ref else None
        ratio = "—"
        if ref and "error" not in ref and "error" not in ours:
            ratio = f"{ref['time_s'] / ours['time_s']:.1f}x"
        ref_time = f"not run: {case['ref_skip']}" if case.get("ref_skip") else _fmt_time(ref)
        ref_peak = _fmt_mem(ref)
        if old_ref is not None:
            ref_time, ref_peak = old_ref["time"], old_ref["peak"]
            old_s = _time_of(ref_time)
            if old_s is not None and "error" not in ours:
                ratio = f"{old_s / ours['time_s']:.1f}x"
        rows.append(
            f"| {case['name']} | {params} | {_fmt_time(ours)} | {ref_time} | {ratio} "
            f"| {_fmt_mem(ours)} | {ref_peak} |"
        )
        print("   ", rows[-1], flush=True)
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{area}.md"
    header = [
        f"# {title}",
        "",
        f"Measured {datetime.now(UTC):%Y-%m-%d %H:%M} UTC on {platform.machine()}, "
        f"{os.cpu_count()} CPU cores, Python {platform.python_version()}; "
        "`hatch run bench:run` regenerates this file.",
        "Time: median of repeated `step()` calls after one warm-up call, each library in its own",
        "fresh process (cases with several rounds alternate the libraries, one fresh process per",
        "round, and report the median round). Peak: resident-memory high-water mark during the",
        "warm-up call above the memory held after setup. Speed-up = reference time / pml time.",
        *(
            [
                f"Reference columns carried over from the table measured {committed_date} "
                "(`--reuse-reference`: the reference does not change); pml measured now."
            ]
            if reuse_reference and committed
            else []
        ),
        "",
        "| case | parameters | pml | reference 2.9 | speed-up | pml peak | reference peak |",
        "|---|---|---|---|---|---|---|",
    ]
    path.write_text("\n".join(header + rows) + "\n")
    return path
