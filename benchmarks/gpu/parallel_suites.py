"""Run benchmark suites case by case in parallel (one copy of the repository per case).

For a machine with many idle cores: ``python benchmarks/gpu/parallel_suites.py losses_proxy
losses_ranking`` runs each case of each suite in its own copy (``--only`` the case's name,
one thread per worker as usual) and merges the rows back into
``benchmarks/results/<area>.md`` in suite order.
"""

from __future__ import annotations

import importlib
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def main() -> None:
    # "area" runs every case; "area:Name1,Name2" only those cases (rows merged into the table)
    wanted = {
        a.split(":")[0]: (a.split(":")[1].split(",") if ":" in a else None) for a in sys.argv[1:]
    }
    areas = list(wanted)
    jobs = []
    work = Path(tempfile.mkdtemp(prefix="pml-bench-"))
    for area in areas:
        suite = importlib.import_module(f"benchmarks.cases_{area}").SUITE
        names = list(dict.fromkeys(c["name"] for c in suite))
        names = [n for n in names if wanted[area] is None or n in wanted[area]]
        for i, name in enumerate(names):
            copy = work / f"{area}-{i}"
            shutil.copytree(ROOT, copy, ignore=shutil.ignore_patterns(".git", ".whl", "runs"))
            log = open(copy / "bench.log", "w")  # noqa: SIM115
            proc = subprocess.Popen(
                [sys.executable, "-m", "benchmarks.run", area, "--only", name],
                cwd=copy,
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, "PML_BENCH_EXACT": "1"},
            )
            jobs.append((area, name, copy, proc))
    for area, name, _copy, proc in jobs:
        rc = proc.wait()
        print(f"{area} / {name}: exit {rc}", flush=True)
    for area in areas:
        suite = importlib.import_module(f"benchmarks.cases_{area}").SUITE
        names = list(dict.fromkeys(c["name"] for c in suite))
        header: list[str] = []
        rows: dict[str, list[str]] = {}
        for area_, name, copy, _ in jobs:
            if area_ != area:
                continue
            table = copy / "benchmarks" / "results" / f"{area}.md"
            if not table.exists():
                continue
            lines = table.read_text().splitlines()
            first = next(i for i, line in enumerate(lines) if line.startswith("| case"))
            header = header or lines[: first + 2]
            for line in lines[first + 2 :]:
                if line.startswith("| ") and line.split("|")[1].strip() == name:
                    rows.setdefault(name, []).append(line)
        target = ROOT / "benchmarks" / "results" / f"{area}.md"
        if wanted[area] is not None and target.exists():
            # replace the re-measured rows (same case and parameters) in the committed table
            new = {tuple(c.strip() for c in r.split("|")[1:3]): r for v in rows.values() for r in v}
            old = target.read_text().splitlines()
            out = [new.get(tuple(c.strip() for c in r.split("|")[1:3]), r) for r in old]
        else:
            out = header + [line for n in names for line in dict.fromkeys(rows.get(n, []))]
        target.write_text("\n".join(out) + "\n")
        print(f"wrote benchmarks/results/{area}.md ({sum(len(v) for v in rows.values())} rows)")


if __name__ == "__main__":
    main()
