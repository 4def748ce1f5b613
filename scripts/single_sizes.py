"""Experiment: which sizes of lone emoji an eval run's single prompts pass.

    python scripts/single_sizes.py runs/demo/eval/package runs/demo/eval/draw-hires

Reads each `pixart eval` folder's report.json and prints, per run, how many single-emoji prompts pass out of how
many ask for a large, a medium and a small emoji (the prompt set's size words; at 256 px 108, 77 and 51 px).

Not a test: a measurement for docs/demo-model.md.
"""

from __future__ import annotations

import argparse
import collections
import json
from pathlib import Path

SIZES = ("large", "medium", "small")


def by_size(report: dict) -> dict[str, tuple[int, int]]:
    """{size word: (passed, asked)} over the report's single prompts."""
    asked, passed = collections.Counter(), collections.Counter()
    for image in report["images"]:
        if image["kind"] == "single":
            size = image["scene"]["objects"][0]["size_word"]
            asked[size] += 1
            passed[size] += bool(image["passed"])
    return {size: (passed[size], asked[size]) for size in SIZES}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", help="`pixart eval` output folders")
    args = parser.parse_args(argv)
    print("| run | " + " | ".join(SIZES) + " |")
    print("|---|" + "---:|" * len(SIZES))
    for run in args.runs:
        counts = by_size(json.loads((Path(run) / "report.json").read_text()))
        print(f"| {run} | " + " | ".join(f"{p}/{n}" for p, n in counts.values()) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
