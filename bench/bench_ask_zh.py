"""Chinese reports from an English-only index: how many sentences come out Chinese, cited and
free of de-identification placeholders, and how long each default (`auto`) ask takes.

    python cli.py index ../shared/data/medpix-2.0 --index /tmp/idx-medpix
    python bench/bench_ask_zh.py --index /tmp/idx-medpix --images ../shared/data/medpix-2.0/images

Images are drawn with a fixed seed. Run it twice to see the cost once the model's translations
are cached (~/.cache/caselens/translation_memory.sqlite, or CASELENS_TRANSLATIONS).
"""
from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from generator.evidence import has_cjk  # noqa: E402
from generator.placeholders import has_placeholder  # noqa: E402
from rag import open_index  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--index", type=Path, required=True)
    parser.add_argument("--images", type=Path, required=True, help="folder of query images")
    parser.add_argument("--count", type=int, default=6)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--lang", default="zh")
    args = parser.parse_args()
    images = sorted(p for p in args.images.iterdir() if p.suffix.lower() in
                    (".jpg", ".jpeg", ".png", ".dcm"))
    random.Random(args.seed).shuffle(images)
    rows = []
    with open_index(args.index) as index:
        for image in images[:args.count]:
            started = time.perf_counter()
            answer = index.ask(image=str(image), lang=args.lang)
            seconds = time.perf_counter() - started
            sentences = answer.report.sentences()
            rows.append({"image": image.name, "seconds": round(seconds, 1),
                         "sentences": len(sentences),
                         "in_lang": sum(has_cjk(s.text) == (args.lang == "zh") for s in sentences),
                         "cited": sum(bool(s.cites) for s in sentences),
                         "placeholders": sum(has_placeholder(s.text) for s in sentences),
                         "model": answer.report.model})
            print(json.dumps(rows[-1], ensure_ascii=False), flush=True)
    total = sum(row["sentences"] for row in rows) or 1
    print(json.dumps({"asks": len(rows), "sentences": total,
                      "in_lang_share": round(sum(r["in_lang"] for r in rows) / total, 3),
                      "cited_share": round(sum(r["cited"] for r in rows) / total, 3),
                      "placeholders": sum(r["placeholders"] for r in rows),
                      "median_s": statistics.median(r["seconds"] for r in rows) if rows else None}))


if __name__ == "__main__":
    main()
