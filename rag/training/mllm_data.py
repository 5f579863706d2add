"""Training examples for the MLLM (`train mllm`), built from the corpora's training splits.

Each example is one training image, the reports of OTHER studies that retrieval finds for it
(its own study and patient group are removed: a model trained with its own report in the
prompt learns to copy), and the study's reference report as the answer, in each language the
study has (COV-CTR: English and Chinese). The answer's sentences cite the cases that state
the same thing (by words, and never a case that states a shared finding with the other
polarity); a sentence no case states stays uncited, as the image alone must carry it.

A share of examples (`shuffle_share`) gets the cases of another random study instead: the
cases then disagree with the image, and the answer is still the image's own report (MMed-RAG's
over-copying failure is what they train against).
"""
from __future__ import annotations

import json
import random
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from generator.evidence import Case, attribute, report_sections, split_sentences
from rag.types import InputError, Record, Report, Sentence

HEADINGS = {"en": ("Findings:", "Impression:"), "zh": ("影像表现：", "诊断意见：")}


@dataclass
class Example:
    corpus: str
    image: str  # absolute path of the image file
    study: str
    lang: str
    cases: list[tuple[int, str]]  # (number, clipped report text) as the prompt lists them
    answer: str  # the reference report with headings and [n] citations
    shuffled: bool = False
    case_ids: list[str] = field(default_factory=list)


def _agrees(sentence: str, case_text: str, lang: str) -> bool:
    """False when the case states a finding of the sentence with the other polarity."""
    from rag.text.clinical_labels import NO_FINDING, label_report

    own = {k: v != 0 for k, v in label_report(sentence, lang).items() if k != NO_FINDING}
    theirs = {k: v != 0 for k, v in label_report(case_text, lang).items() if k != NO_FINDING}
    return all(theirs[k] == v for k, v in own.items() if k in theirs)


def cited_answer(reference: Record, cases: list[Case], lang: str) -> str:
    """The reference report under its headings, each sentence ending with the numbers of the
    cases that state it (at least half its words in the case, no opposite finding)."""
    sections = report_sections(reference)
    report = Report(lang=lang, model="reference")
    for name in ("findings", "impression"):
        if sections.get(name):
            report.sections[name] = [Sentence(s, []) for s in split_sentences(sections[name])]
    attribute(report, cases, share=0.5)
    by_id = {case.record.id: case for case in cases}
    lines = []
    for name, heading in zip(("findings", "impression"), HEADINGS[lang], strict=True):
        if not report.sections.get(name):
            continue
        lines.append(heading)
        for sentence in report.sections[name]:
            numbers = [by_id[rid].number for rid in sentence.cites
                       if _agrees(sentence.text, by_id[rid].text(), lang)]
            marks = "".join(f"[{n}]" for n in sorted(numbers))
            lines.append(f"{sentence.text} {marks}".rstrip())
    return "\n".join(lines)


def _reports_by_study(records: list[Record]) -> dict[tuple[str, str], Record]:
    out: dict[tuple[str, str], Record] = {}
    for rec in records:
        if rec.kind == "report" and rec.study and rec.text.strip() and rec.lang in HEADINGS:
            out.setdefault((rec.study, rec.lang), rec)
    return out


def build_examples(corpus: str | Path, per_corpus: int = 200, cases: int = 2, case_words: int = 60,
                   shuffle_share: float = 0.2, encoder: str = "default",
                   work_dir: str | Path = "runs/eval-report", seed: int = 0,
                   progress: Callable[[int, int | None], None] | None = None) -> list[Example]:
    """Examples from up to `per_corpus` training images of one corpus (every language its
    study has a report in), retrieving from an index of the training split only."""
    from generator.evidence import number_cases
    from generator.prompts import clip_text
    from rag import pipeline
    from corpora.reading import read_records
    from corpora.splits import group_of, split_records
    from rag.building import training_index

    corpus = Path(corpus)
    records, _, _ = read_records(corpus, None)
    splits = split_records(records)
    reports = _reports_by_study(records)
    images = [rec for rec in sorted(records, key=lambda r: r.id)
              if rec.kind == "image" and splits[rec.id] == "train"
              and any((rec.study, lang) in reports for lang in HEADINGS)]
    rng = random.Random(seed)
    rng.shuffle(images)
    images = images[:per_corpus]
    if not images:
        raise InputError(f"{corpus} has no training image with an English or Chinese report")
    session = pipeline.open_session(training_index(corpus, encoder, Path(work_dir)),
                                    check_support=False)
    retrieved: list[tuple[Record, list]] = []
    try:
        for done, image in enumerate(images, 1):
            query = pipeline.make_query(str(image.image_path()), None, ("image", "report"), 12,
                                        "en")
            own = group_of(image)
            hits = [hit for hit in pipeline.search(session, query)
                    if group_of(hit.record) != own and hit.record.study != image.study]
            retrieved.append((image, hits))
            if progress:
                progress(done, len(images))
    finally:
        session.close()
    examples = []
    for image, hits in retrieved:
        shuffled = rng.random() < shuffle_share
        if shuffled:  # the cases of another study, picked at random: they disagree with the image
            other = rng.choice([item for item in retrieved if item[0].study != image.study])
            hits = [hit for hit in other[1] if hit.record.study != image.study]
        for lang in HEADINGS:
            reference = reports.get((image.study, lang))
            if reference is None:
                continue
            numbered = number_cases(hits, lang, cases)
            if not numbered:
                continue
            examples.append(Example(
                corpus=corpus.resolve().name, image=str(image.image_path()), study=image.study,
                lang=lang, cases=[(c.number, clip_text(c.text(), c.record.lang, case_words))
                                  for c in numbered],
                answer=cited_answer(reference, numbered, lang), shuffled=shuffled,
                case_ids=[c.record.id for c in numbered]))
    return examples


def save_examples(examples: Sequence[Example], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    work = path.with_suffix(".partial")
    with open(work, "w", encoding="utf-8") as out:
        for example in examples:
            out.write(json.dumps(asdict(example), ensure_ascii=False) + "\n")
    work.replace(path)


def load_examples(path: Path) -> list[Example]:
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]
    return [Example(**{**row, "cases": [tuple(c) for c in row["cases"]]}) for row in rows]
