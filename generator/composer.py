"""The grounded composer: a report made only of sentences the retrieved reports contain.

No language model: sentences of the retrieved reports are split per section, clustered by
lexical overlap, and the clusters most retrieved reports agree on (weighted by retrieval
similarity) become the draft, each sentence citing every report that supports it.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

from generator.base import Generator, register_generator
from rag.types import Hit, Query, Record, Report, Sentence

PHRASES = Path(__file__).parent / "phrases"
SECTIONS = ("findings", "impression")
_CJK = re.compile(r"[\u3400-\u9fff]")
_SPLIT = re.compile(r"(?<=[.!?])\s+|(?<=[。！？；])")


@cache
def phrases(lang: str) -> dict:
    path = PHRASES / f"{lang}.json"
    if not path.exists():
        known = ", ".join(p.stem for p in PHRASES.glob("*.json"))
        raise ValueError(f"no report phrases for language {lang!r}; available: {known}")
    return json.loads(path.read_text(encoding="utf-8"))


def split_sentences(text: str) -> list[str]:
    return [s.strip() for s in _SPLIT.split(text or "") if len(s.strip()) > 2]


def _tokens(sentence: str) -> frozenset[str]:
    if _CJK.search(sentence):
        chars = [c for c in sentence if not c.isspace() and c not in "，。；：、！？,.;:"]
        return frozenset(a + b for a, b in zip(chars, chars[1:]))
    return frozenset(re.findall(r"[a-z0-9]+", sentence.lower()))


def _similarity(a: frozenset[str], b: frozenset[str]) -> float:
    return len(a & b) / len(a | b) if a and b else 0.0


@dataclass
class _Cluster:
    text: str
    tokens: frozenset[str]
    cites: list[str] = field(default_factory=list)
    weight: float = 0.0


def report_sections(record: Record) -> dict[str, str]:
    sections = record.meta.get("sections") or {}
    found = {name: sections.get(name, "") for name in SECTIONS if sections.get(name)}
    return found or {"findings": record.text}


@register_generator("composer")
class GroundedComposer(Generator):
    def __init__(self, low_confidence: float = 0.3, max_findings: int = 5,
                 max_impression: int = 2, similarity: float = 0.5):
        self.low_confidence = low_confidence
        self.limits = {"findings": max_findings, "impression": max_impression}
        self.similarity = similarity

    def generate(self, hits: list[Hit], query: Query, lang: str) -> Report:
        words = phrases(lang)
        report = Report(lang=lang, model="grounded-composer")
        if not hits:
            report.warnings.append(words["no_hits"])
            return report
        sources = self._sources(hits, lang)
        if not sources:
            fallback = self._sources(hits, None)
            if fallback:
                source_lang = max({r.lang for r, _ in fallback},
                                  key=lambda code: sum(r.lang == code for r, _ in fallback))
                sources = [(r, w) for r, w in fallback if r.lang == source_lang]
                names = words["lang_names"]
                report.warnings.append(words["no_lang_source"].format(
                    lang_name=names.get(lang, lang), source_lang_name=names.get(source_lang,
                                                                                source_lang)))
        if not sources:
            report.warnings.append(words["no_reports"])
            return report
        # confidence of the hits the text comes from: a perfect image match with no report
        # (e.g. the query image itself) must not hide weak report matches
        best = max(weight for _, weight in sources)
        if best < self.low_confidence:
            report.warnings.insert(0, words["low_confidence"].format(
                score=best, threshold=self.low_confidence))
        single = 0
        for section in SECTIONS:
            clusters = self._cluster(sources, section)[:self.limits[section]]
            report.sections[section] = [Sentence(c.text, c.cites) for c in clusters]
            single += sum(len(c.cites) == 1 for c in clusters)
        if single and len(sources) > 1:
            report.warnings.append(words["single_source"].format(count=single))
        return report

    @staticmethod
    def _sources(hits: list[Hit], lang: str | None) -> list[tuple[Record, float]]:
        """Report records reachable from the hits (the hit itself or its study's reports), one
        per study and language: two versions of one study's report are one voice, not two."""
        seen: set[tuple[str, str]] = set()
        out = []
        for hit in hits:
            weight = hit.cosine if hit.cosine is not None else hit.score
            for rec in [hit.record, *hit.linked]:
                key = (rec.study or rec.id, rec.lang)
                if rec.kind != "report" or key in seen or not rec.text.strip():
                    continue
                if lang is None or rec.lang == lang:
                    seen.add(key)
                    out.append((rec, max(weight, 1e-3)))
        return out

    def _cluster(self, sources: list[tuple[Record, float]], section: str) -> list[_Cluster]:
        clusters: list[_Cluster] = []
        for record, weight in sorted(sources, key=lambda item: -item[1]):
            for sentence in split_sentences(report_sections(record).get(section, "")):
                tokens = _tokens(sentence)
                match = next((c for c in clusters
                              if _similarity(c.tokens, tokens) >= self.similarity), None)
                if match is None:
                    match = _Cluster(sentence, tokens)
                    clusters.append(match)
                if record.id not in match.cites:
                    match.cites.append(record.id)
                    match.weight += weight
        return sorted(clusters, key=lambda c: (-len(c.cites), -c.weight))
