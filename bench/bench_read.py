"""Corpus reading speed: what `corpus inspect` reads from each folder, and how fast.

    python bench/bench_read.py [FOLDER ...]    (default: every folder of ../shared/data)

For each folder: detected format(s), records by kind, problems, seconds and records/s.
Reading includes format detection, parsing every table / XML / JSON / DICOM header, the
duplicate and empty-text checks of `index`, and a cheap readability check of every image;
nothing is encoded. Add --peak to also print the process's peak resident memory.
"""
from __future__ import annotations

import argparse
import resource
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from corpora.inspect import inspect_corpus  # noqa: E402
from tests.conftest import shared_data_dir  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folders", type=Path, nargs="*")
    parser.add_argument("--peak", action="store_true", help="print peak resident memory")
    args = parser.parse_args()
    folders = args.folders or sorted(p for p in shared_data_dir().iterdir() if p.is_dir())
    print("| folder | formats | records by kind | problems | s | records/s |")
    print("|---|---|---|---:|---:|---:|")
    for folder in folders:
        report = inspect_corpus(folder)
        kinds = ", ".join(f"{kind} {sum(groups.values())}"
                          for kind, groups in report["by_kind"].items())
        print(f"| {folder.name} | {', '.join(report['formats'])} | {kinds} | "
              f"{len(report['problems'])} | {report['seconds']:.2f} | "
              f"{report['records_per_s']:,.0f} |", flush=True)
    if args.peak:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(f"peak resident memory: {peak:.0f} MiB")


if __name__ == "__main__":
    main()
