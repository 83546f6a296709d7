"""Run benchmark suites: ``python -m benchmarks.run [area ...] [--only SUBSTRING]``.

Areas are the ``benchmarks/cases_<area>.py`` modules; none given runs all of them.
"""

from __future__ import annotations

import argparse
import importlib
from pathlib import Path

from benchmarks.harness import run_suite


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("areas", nargs="*", help="suites to run (default: all)")
    parser.add_argument("--only", help="run only cases whose name contains this")
    parser.add_argument(
        "--reuse-reference",
        action="store_true",
        help="measure pml only; carry the reference columns over from the committed tables",
    )
    args = parser.parse_args()
    here = Path(__file__).parent
    areas = args.areas or sorted(p.stem.removeprefix("cases_") for p in here.glob("cases_*.py"))
    for area in areas:
        mod = importlib.import_module(f"benchmarks.cases_{area}")
        path = run_suite(
            area, mod.TITLE, mod.SUITE, only=args.only, reuse_reference=args.reuse_reference
        )
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
