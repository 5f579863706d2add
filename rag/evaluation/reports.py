"""`eval report`: how good are the drafted reports, against the corpus's own reports.

For each image of the evaluated split: retrieve from an index of the training split (built
here, never holding the test studies), draft a report with each generator, and score it
against the study's reference report in that language:
- BLEU-1..4, ROUGE-L, METEOR (exact + stem), CIDEr-D (rag.evaluation.metrics); Chinese on
  characters and on jieba words;
- clinical label F1 (rag.text.clinical_labels, uncertain counted as positive);
- the share of sentences the support check flags, and citations of no retrieved case.
Beside the generators, as FactMM-RAG reports them: the top-1 retrieved report, the oracle
(the retrieved report closest to the reference by ROUGE-L: what a perfect picker of the
retrieved reports would score) and a random training report.
"""
from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from corpora.reading import read_records
from corpora.splits import split_records
from generator.base import GeneratorCrashed
from generator.evidence import report_sections, report_sources
from rag.building import training_index
from rag.types import InputError, Record, Report

log = logging.getLogger(__name__)

SPLITS = ("test", "val", "train", "all")
BASELINES = ("top1", "oracle", "random")


@dataclass
class Item:
    image: Record
    reference: str  # the study's report in the evaluated language, findings then impression


def reference_text(record: Record) -> str:
    sections = report_sections(record)
    return " ".join(sections[name] for name in ("findings", "impression") if name in sections)


def eval_items(records: list[Record], split: str, lang: str, limit: int | None) -> list[Item]:
    """The images of `split` whose study has a report in `lang`, in a stable order."""
    splits = split_records(records)
    reports: dict[str, Record] = {}
    for rec in records:
        if rec.kind == "report" and rec.lang == lang and rec.study and rec.text.strip():
            reports.setdefault(rec.study, rec)
    items = [Item(rec, reference_text(reports[rec.study])) for rec in sorted(records, key=lambda r: r.id)
             if rec.kind == "image" and rec.study in reports
             and (split == "all" or splits[rec.id] == split)]
    return items[:limit] if limit else items


def _oracle(hits, lang: str, reference: str, tokens) -> str:
    from rag.evaluation.metrics import rouge_l

    texts = [reference_text(rec) for rec, _, _ in report_sources(hits, lang)]
    if not texts:
        return ""
    ref = tokens(reference)
    return max(texts, key=lambda text: rouge_l(tokens(text), ref))


def _score(hypotheses: list[str], references: list[str], lang: str) -> dict:
    from rag.text.clinical_labels import label_f1
    from rag.evaluation.metrics import nlg_scores

    scores = {"nlg": nlg_scores(hypotheses, references, lang, "char" if lang == "zh" else "word")}
    if lang == "zh":
        scores["nlg_jieba"] = nlg_scores(hypotheses, references, lang, "jieba")
    labels = label_f1(hypotheses, references, lang)
    scores["labels"] = {key: labels[key] for key in ("micro_f1", "macro_f1", "micro_precision",
                                                     "micro_recall")}
    scores["empty"] = sum(not h.strip() for h in hypotheses)
    return scores


def evaluate_reports(corpus: str | Path, split: str = "test", lang: str = "en",
                     generators: Sequence[str] = ("grounded",), index_dir: str | Path | None = None,
                     limit: int | None = None, k: int | str = "auto", encoder: str = "default",
                     options: dict[str, dict] | None = None, work_dir: str | Path = "runs/eval-report",
                     progress: Callable[[int, int | None], None] | None = None, seed: int = 0,
                     keep_examples: int = 3, shuffle_cases: bool = False) -> dict:
    """Score each generator's drafts (and the baselines) on the images of one split.

    With `shuffle_cases`, each image gets the retrieved cases of another study of the split
    (retrieval made wrong on purpose): a generator that copies its cases then scores low
    against the reference and high on `copy_rouge_l` (its ROUGE-L to the closest given case)."""
    from rag import pipeline
    from rag.evaluation.metrics import tokens as tokenize

    if split not in SPLITS:
        raise InputError(f"split must be one of {', '.join(SPLITS)}, not {split!r}")
    if split == "all" and index_dir is None:
        raise InputError("--split all evaluates a corpus kept apart from an index: give --index DIR")
    corpus = Path(corpus)
    records, _, formats = read_records(corpus, None)
    every = eval_items(records, split, lang, None)
    items = every[:limit] if limit else every
    if not items:
        raise InputError(f"no image of the {split!r} split of {corpus} has a {lang!r} report")
    index_dir = Path(index_dir) if index_dir else training_index(corpus, encoder, Path(work_dir))
    session = pipeline.open_session(index_dir, check_support=False)
    writers = {name: pipeline.make_generator(name, session.encoder.low_confidence, True,
                                             **(options or {}).get(name, {}))
               for name in generators}
    pool = [reference_text(r) for r in pipeline.training_reports(session, lang)]
    rng = random.Random(seed)
    outputs: dict[str, list[str]] = {name: [] for name in (*generators, *BASELINES)}
    stats = {name: {"sentences": 0, "unsupported": 0, "citation_errors": 0, "seconds": 0.0,
                    "failed": 0} for name in generators}
    failures: list[dict] = []  # drafts a crashed model worker never wrote (scored as empty)
    examples, retrieve_seconds = [], 0.0
    copies: dict[str, list[float]] = {name: [] for name in outputs}
    swap = _other_studies(items, every, rng) if shuffle_cases else None
    wrong: dict[int, list] = {}

    def tokens(text: str) -> list[str]:
        return tokenize(text, lang, "char" if lang == "zh" else "word")

    try:
        for done, item in enumerate(items, 1):
            query = pipeline.make_query(str(item.image.image_path()), None, ("image", "report"), k,
                                        lang)
            started = time.perf_counter()
            hits = pipeline.search(session, query)
            retrieve_seconds += time.perf_counter() - started
            if swap is not None:  # the cases of another study instead of this image's own
                other = every[swap[done - 1]]
                if swap[done - 1] not in wrong:
                    wrong[swap[done - 1]] = pipeline.search(session, pipeline.make_query(
                        str(other.image.image_path()), None, ("image", "report"), k, lang))
                hits = wrong[swap[done - 1]]
            given = [tokens(reference_text(rec)) for rec, _, _ in report_sources(hits, lang)]
            sources = report_sources(hits, lang)
            outputs["top1"].append(reference_text(sources[0][0]) if sources else "")
            outputs["oracle"].append(_oracle(hits, lang, item.reference, tokens))
            outputs["random"].append(rng.choice(pool) if pool else "")
            for name, writer in writers.items():
                started = time.perf_counter()
                stat = stats[name]
                try:
                    report = writer.generate(hits, query, lang)
                except GeneratorCrashed as exc:  # only its worker died: record it, go on
                    log.warning("%s on %s: %s", name, item.image.id, exc)
                    stat["failed"] += 1
                    failures.append({"image": item.image.id, "generator": name, "error": str(exc)})
                    report = Report(lang=lang, model=name)
                stat["seconds"] += time.perf_counter() - started
                stat["sentences"] += len(report.sentences())
                stat["unsupported"] += report.unsupported
                stat["citation_errors"] += len(report.errors)
                outputs[name].append(report.text())
                copies[name].append(_copy_score(tokens(report.text()), given))
                if len(examples) < keep_examples * len(generators) and done <= keep_examples:
                    examples.append({"image": item.image.id, "generator": name,
                                     "reference": item.reference, "report": report.to_dict()})
            for name in BASELINES:
                copies[name].append(_copy_score(tokens(outputs[name][-1]), given))
            if progress:
                progress(done, len(items))
    finally:
        for writer in writers.values():
            writer.close()
        session.close()
    references = [item.reference for item in items]
    systems = {}
    for name, hypotheses in outputs.items():
        systems[name] = _score(hypotheses, references, lang)
        systems[name]["copy_rouge_l"] = round(sum(copies[name]) / max(len(copies[name]), 1), 4)
        if name in stats:
            stat = stats[name]
            systems[name].update(
                unsupported_share=round(stat["unsupported"] / max(stat["sentences"], 1), 4),
                citation_errors=stat["citation_errors"], failed=stat["failed"],
                seconds_per_report=round(stat["seconds"] / len(items), 3))
    return {"corpus": str(corpus), "formats": formats, "split": split, "lang": lang,
            "pairs": len(items), "index": str(index_dir), "k": k, "shuffled_cases": shuffle_cases,
            "retrieve_seconds": round(retrieve_seconds / len(items), 3),
            "systems": systems, "failures": failures, "examples": examples}


def _copy_score(output: list[str], given: list[list[str]]) -> float:
    """ROUGE-L of an output to the closest of the cases it was given (1.0: a verbatim copy)."""
    from rag.evaluation.metrics import rouge_l

    return max((rouge_l(output, case) for case in given), default=0.0) if output else 0.0


def _other_studies(items: list[Item], every: list[Item], rng: random.Random) -> list[int]:
    """For each item, a random item of the whole split from another study (whose retrieved
    cases it gets)."""
    picks = []
    for item in items:
        others = [j for j, other in enumerate(every) if other.image.study != item.image.study]
        if not others:
            raise InputError("cannot shuffle the cases: the split holds one study only")
        picks.append(rng.choice(others))
    return picks


_COLUMNS = (("BLEU-1", "nlg", "bleu_1"), ("BLEU-4", "nlg", "bleu_4"), ("ROUGE-L", "nlg", "rouge_l"),
            ("METEOR", "nlg", "meteor"), ("CIDEr-D", "nlg", "cider_d"),
            ("label F1 micro", "labels", "micro_f1"), ("label F1 macro", "labels", "macro_f1"))


def to_markdown(result: dict) -> str:
    """The result as a markdown table: one row per system (generators, then baselines)."""
    zh = result["lang"] == "zh"
    head = [name for name, _, _ in _COLUMNS]
    head += ["BLEU-4 (jieba)", "ROUGE-L (jieba)"] if zh else []
    head += ["copy ROUGE-L", "unsupported", "cite errors", "s / report"]
    shuffled = ", cases of another study (shuffled)" if result.get("shuffled_cases") else ""
    lines = [f"`eval report`: {result['corpus']}, split {result['split']}{shuffled}, "
             f"{result['lang']}, {result['pairs']} images (Chinese scored on characters; "
             "jieba columns on words)"
             if zh else f"`eval report`: {result['corpus']}, split "
             f"{result['split']}{shuffled}, {result['lang']}, {result['pairs']} images", "",
             "| system | " + " | ".join(head) + " |", "|---" * (len(head) + 1) + "|"]
    for name, scores in result["systems"].items():
        row = [f"{scores[group][key]:.3f}" for _, group, key in _COLUMNS]
        if zh:
            row += [f"{scores['nlg_jieba'][key]:.3f}" for key in ("bleu_4", "rouge_l")]
        row += [f"{scores.get('copy_rouge_l', 0):.3f}"]
        row += ([f"{scores['unsupported_share']:.1%}", str(scores["citation_errors"]),
                 f"{scores['seconds_per_report']:.2f}"] if "unsupported_share" in scores
                else ["-", "-", "-"])
        label = name if name not in BASELINES else f"*{name}*"
        lines.append(f"| {label} | " + " | ".join(row) + " |")
    for name, scores in result["systems"].items():
        if scores.get("failed"):
            lines.append(f"\n{name}: {scores['failed']} of {result['pairs']} drafts failed (its "
                         "model worker crashed; scored as empty reports)")
    return "\n".join(lines)
