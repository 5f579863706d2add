"""End-to-end timings: index a corpus, then image and text queries through search and ask.

    python bench/bench_pipeline.py corpora/demo --index /tmp/bench-index [--encoder default]

Prints build time and records/s, and p50 / p95 latency of `search` (image -> reports, text ->
reports) and `ask` (image -> cited report), each over --repeat queries on one warm session.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rag import pipeline
from rag.store import RecordStore
from rag.types import Query


def timed(call, repeat: int) -> tuple[float, float]:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        call()
        times.append((time.perf_counter() - start) * 1000)
    times.sort()
    return statistics.median(times), times[min(len(times) - 1, int(len(times) * 0.95))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("corpus", type=Path)
    parser.add_argument("--index", type=Path, default=Path("/tmp/caselens-bench-index"))
    parser.add_argument("--encoder", default="default")
    parser.add_argument("--backend", default="faiss")
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--skip-build", action="store_true")
    parser.add_argument("--image", help="query image (default: the index's first image)")
    args = parser.parse_args()

    if not args.skip_build:
        summary = pipeline.index(args.corpus, args.index, args.encoder)
        total = sum(sum(d.values()) for d in summary.counts.values())
        print(f"build: {summary.seconds:.1f} s for {total} records "
              f"({total / summary.seconds:.1f} records/s), {len(summary.problems)} problems, "
              f"backends {', '.join(summary.backends)}")
    image = args.image
    if image is None:
        store = RecordStore(args.index / "records.sqlite", readonly=True)
        rowid = store.ids_where("image")[0]
        image = str(store.get([rowid])[rowid].image_path())
        store.close()
    print(f"query image: {image}")
    started = time.perf_counter()
    session = pipeline.open_session(args.index, backend=args.backend)
    print(f"open session (load encoder + index): {time.perf_counter() - started:.2f} s")
    cases = {
        "search image->reports": lambda: pipeline.search(session, Query(image=image)),
        "search text->reports": lambda: pipeline.search(
            session, Query(text="small left pleural effusion", to=("report",))),
        "ask image (zh)": lambda: pipeline.ask(session, Query(image=image, lang="zh", k="auto",
                                                              to=("image", "report")), "zh"),
    }
    for name, call in cases.items():
        p50, p95 = timed(call, args.repeat)
        print(f"{name:<24} p50 {p50:7.1f} ms   p95 {p95:7.1f} ms   ({args.backend})")
    session.close()


if __name__ == "__main__":
    main()
