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
        if hasattr(mod, "COLUMNS"):
            relabel(path, mod.COLUMNS, getattr(mod, "NOTE", ""))
        print(f"wrote {path}")


def relabel(path: Path, columns: tuple[str, str], note: str) -> None:
    """Name a table's two compared columns (a suite comparing pml with pml, e.g. a feature).

    The suite's ``COLUMNS = (first, second)`` replace "pml" / "reference 2.9" and their peak
    and speed-up headings; ``NOTE`` is added above the table.
    """
    first, second = columns
    lines = path.read_text().splitlines()
    at = next(i for i, ln in enumerate(lines) if ln.startswith("| case |"))
    lines[at] = (
        f"| case | parameters | {first} | {second} | speed-up ({second} / {first}) "
        f"| {first} peak | {second} peak |"
    )
    if note:
        lines[at:at] = [note, ""]
    path.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
