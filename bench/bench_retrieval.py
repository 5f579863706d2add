"""Retrieval quality on held-out pairs: domain routing, hybrid text search, adaptive k.

    python bench/bench_retrieval.py [--corpora DIR ...] [--index /tmp/caselens-mixed]
                                    [--limit 400] [--skip-build]

Default corpora: COV-CTR, MedPix 2.0 and the COVID-19 collection from ../shared/data, indexed
together (read in place through a folder of links) with the default encoder. Queries are the
test split of training (by patient / case group, the split the encoder never trained on);
the gallery is the whole index. Prints markdown tables:
- image -> report: Recall@1/5/10, MRR with and without domain routing; routing accuracy
  (the query image's own vector never votes);
- adaptive k (k=auto) against fixed k = 5 and 10: mean hits kept and hit rate;
- text -> report: dense only, lexical only and hybrid (RRF) for MedPix caption -> case report
  (English -> English) and COV-CTR Chinese -> English report.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rag import pipeline  # noqa: E402
from corpora.splits import group_of, split_of  # noqa: E402
from tests.conftest import shared_data_dir  # noqa: E402

DEFAULT = ("cov-ctr", "medpix-2.0", "covid-chestxray")


def rank_of(hits, study: str, lang: str | None = None) -> int | None:
    for position, hit in enumerate(hits, 1):
        if hit.record.study == study and (lang is None or hit.record.lang == lang):
            return position
    return None


def summary(ranks: list[int | None]) -> str:
    n = len(ranks)
    recall = [sum(1 for r in ranks if r is not None and r <= k) / n for k in (1, 5, 10)]
    mrr = sum(1 / r for r in ranks if r is not None) / n
    return " | ".join(f"{x:.3f}" for x in (*recall, mrr))


def test_records(session, kind: str, limit: int):
    rows = session.store.db.execute("SELECT rowid FROM records WHERE kind = ? ORDER BY id",
                                    (kind,)).fetchall()
    records = session.store.get(r[0] for r in rows)
    chosen = []
    for rowid, rec in sorted(records.items(), key=lambda item: item[1].id):
        if split_of(group_of(rec)) == "test":
            chosen.append((rowid, rec))
    return chosen[:limit]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpora", type=Path, nargs="*")
    parser.add_argument("--index", type=Path, default=Path("/tmp/caselens-mixed"))
    parser.add_argument("--limit", type=int, default=400)
    parser.add_argument("--skip-build", action="store_true")
    args = parser.parse_args()
    corpora = args.corpora or [shared_data_dir() / name for name in DEFAULT]
    if not args.skip_build:
        parts = Path(tempfile.mkdtemp(prefix="caselens-parts-"))
        for corpus in corpora:
            (parts / corpus.name).symlink_to(corpus.resolve(), target_is_directory=True)
        summary_ = pipeline.index(parts, args.index, backends=("faiss",))
        print(f"index {args.index}: {summary_.counts} in {summary_.seconds:.0f} s "
              f"(incremental: {summary_.incremental})")
    routed = pipeline.open_index(args.index, route=True)
    plain = pipeline.open_index(args.index, route=False)
    router = routed.retriever.router
    images = test_records(routed, "image", args.limit)

    ranks = {"no routing": [], "routing": []}
    correct, widened = 0, 0
    cuts = {"auto": [], "5": [], "10": []}
    for rowid, rec in images:
        vector = plain.retriever.query_vector(pipeline.make_query(
            str(rec.image_path()), None, "reports", 10, "en"))
        route = router.route(vector, exclude=frozenset({rowid}))
        correct += bool(route.domains) and route.domains[0] == rec.domain
        widened += route.widened
        hits = plain.search(image=str(rec.image_path()), to="reports", k=10)
        ranks["no routing"].append(rank_of(hits, rec.study))
        domain = route.domains or None
        hits = plain.search(image=str(rec.image_path()), to="reports", k=10, domain=domain)
        ranks["routing"].append(rank_of(hits, rec.study))
        for k in cuts:
            kept = plain.search(image=str(rec.image_path()), to="reports",
                                k=k if k == "auto" else int(k))
            cuts[k].append((len(kept), rank_of(kept, rec.study) is not None))
    n = len(images)
    print(f"\nimage -> report, {n} held-out images, gallery = every report of the index")
    print("| search | R@1 | R@5 | R@10 | MRR |\n|---|---:|---:|---:|---:|")
    for name, found in ranks.items():
        print(f"| {name} | {summary(found)} |")
    print(f"\nrouting accuracy (own vector excluded from the vote): {correct / n:.3f}; "
          f"widened routes: {widened / n:.3f}")
    print("\n| k | mean hits kept | own report among them |\n|---|---:|---:|")
    for k, rows in cuts.items():
        print(f"| {k} | {statistics.mean(r[0] for r in rows):.2f} | "
              f"{sum(r[1] for r in rows) / n:.3f} |")

    print("\ntext -> report (same study)")
    print("| task | method | R@1 | R@5 | R@10 | MRR |\n|---|---|---:|---:|---:|---:|")
    tasks = []
    captions = [(rec.text, rec.study, "en") for _, rec in images
                if rec.source == "medpix" and rec.text.strip()]
    tasks.append(("MedPix caption -> case report (en)", captions))
    chinese = [(rec.text, rec.study, "en") for _, rec in test_records(routed, "report", 10**6)
               if rec.source == "cov-ctr" and rec.lang == "zh"][:args.limit]
    tasks.append(("COV-CTR zh report -> en report", chinese))
    for name, queries in tasks:
        if not queries:
            continue
        for method in ("dense", "lexical", "hybrid"):
            found = []
            for text, study, lang in queries:
                if method == "lexical":
                    rows = plain.store.lexical(text, "report", 10)
                    records = plain.store.get(r for r, _ in rows)
                    order = [records[r] for r, _ in rows if r in records]
                    position = next((i for i, r in enumerate(order, 1)
                                     if r.study == study and r.lang == lang), None)
                else:
                    plain.retriever.lexical = method == "hybrid"
                    hits = plain.search(text=text, to="reports", k=10, lang=lang)
                    position = rank_of(hits, study, lang)
                found.append(position)
            print(f"| {name} ({len(queries)}) | {method} | {summary(found)} |", flush=True)
    plain.retriever.lexical = True
    routed.close()
    plain.close()


if __name__ == "__main__":
    main()
