"""What every generator shares: the retrieved cases numbered for a prompt, and the reading of
a model's free text back into a Report whose sentences cite those numbers.

A model sees the cases as [1], [2]...; its answer cites them as `[n]` (or `[1, 3]`, `[1][3]`).
`read_report` maps each number back to the record id of its case; a number that names no
case is an error of the report, never silently dropped.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from generator.placeholders import has_placeholder, redact, redact_text
from rag.text.words import char_pairs, cjk_characters, has_cjk, latin_words
from rag.types import Hit, Record, Report, Sentence

SECTIONS = ("findings", "impression")
_SPLIT = re.compile(r"(?<=[.!?])\s+(?=\S)|(?<=[。！？；])")
_CITE = re.compile(r"\s*[\[【［]\s*(\d+(?:\s*[,，、;；\-–]\s*\d+)*)\s*[\]】］]")
# a heading at the start of a line: "Findings:", "**IMPRESSION**", "影像表现：", "诊断意见："
_HEADINGS = {
    "findings": r"findings?|影像表现|影像所见|表现|所见",
    "impression": r"impressions?|conclusions?|diagnosis|诊断意见|诊断|印象|结论|意见",
}
_HEADING = re.compile(
    r"^\s*[#*\s]*(?P<name>" + "|".join(f"(?P<{k}>{v})" for k, v in _HEADINGS.items())
    + r")\s*[*]*\s*(?:[:：]|$)\s*[*]*", re.IGNORECASE)  # no colon needed on a line of its own


def split_sentences(text: str) -> list[str]:
    return [s.strip() for s in _SPLIT.split(text or "") if len(s.strip()) > 2]


def report_sections(record: Record) -> dict[str, str]:
    """A report record's findings and impression (its whole text as findings when the corpus
    gave no sections)."""
    sections = record.meta.get("sections") or {}
    found = {name: sections.get(name, "") for name in SECTIONS if sections.get(name)}
    return found or {"findings": record.text}


@dataclass
class Case:
    """One retrieved case as a model sees it: its number in the prompt, the report it
    contributes, how similar it was, and the image of the hit when there was one."""
    number: int
    record: Record
    score: float
    image: str | None = None

    def text(self) -> str:
        """The case's report as a prompt shows it: de-identification placeholders left out, so
        that a model never learns to copy them."""
        sections = report_sections(self.record)
        text = " ".join(sections[name] for name in SECTIONS if name in sections)
        return redact_text(text, split_sentences)[0]


def report_sources(hits: list[Hit], lang: str | None) -> list[tuple[Record, float, Hit]]:
    """Report records reachable from the hits (the hit itself or its study's reports), one per
    study and language, with the hit's similarity: two versions of one study's report are one
    voice, not two. `lang` None keeps every language."""
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
                out.append((rec, max(float(weight), 1e-3), hit))
    return out


def number_cases(hits: list[Hit], lang: str, limit: int = 5) -> list[Case]:
    """The best `limit` retrieved reports, one per study, numbered from 1 in retrieval order:
    in `lang` where the study has a report in it, else in the language it has (a model writing
    Chinese may read an English case; the glossary keeps its terms right)."""
    chosen: dict[str, tuple[Record, float, Hit]] = {}
    for rec, weight, hit in report_sources(hits, None):
        study = rec.study or rec.id
        if study not in chosen or (rec.lang == lang and chosen[study][0].lang != lang):
            chosen[study] = (rec, weight, hit)
    ordered = sorted(chosen.values(), key=lambda item: -item[1])[:limit]
    return [Case(n, rec, weight, hit.record.image if hit.record.kind == "image" else None)
            for n, (rec, weight, hit) in enumerate(ordered, start=1)]


def parse_citations(sentence: str) -> tuple[str, list[int]]:
    """The sentence without its citation marks, and the case numbers it cites ("[2-4]" is
    2, 3, 4)."""
    numbers: list[int] = []
    for match in _CITE.finditer(sentence):
        for part in re.split(r"\s*[,，、;；]\s*", match.group(1)):
            if re.fullmatch(r"\d+\s*[\-–]\s*\d+", part):
                low, high = (int(x) for x in re.split(r"\s*[\-–]\s*", part))
                numbers += list(range(low, min(high, low + 20) + 1))
            elif part.strip().isdigit():
                numbers.append(int(part))
    text = _CITE.sub("", sentence).strip()
    text = re.sub(r"\s+([.,;:!?。，；：！？])", r"\1", text)
    text = re.sub(r"^[,;:：，；、.。\s]+", "", text)  # "[1]：双肺..." cites before the sentence
    return text, list(dict.fromkeys(numbers))


def split_output(text: str) -> dict[str, list[str]]:
    """A model's answer cut into sections by their headings (text before any heading counts
    as findings) and into sentences. Markdown bullets and numbering are dropped. Citations
    written once for a line of several sentences ("A. B. [2]", "[2] A. B.") cover each
    sentence of the line that cites nothing itself."""
    found: dict[str, list[str]] = {name: [] for name in SECTIONS}
    current = "findings"
    # a heading in mid-line ("... [1]. Impression: ...") starts a line of its own
    text = re.sub(r"(?<=[.。!?！？\]】])\s*(?=(?:\*\*)?(?:" + "|".join(_HEADINGS.values())
                  + r")\s*(?:\*\*)?\s*[:：])", "\n", text or "", flags=re.IGNORECASE)
    for line in text.splitlines():
        heading = _HEADING.match(line)
        if heading:
            current = next(name for name in SECTIONS if heading.group(name))
            line = line[heading.end():]
        line = re.sub(r"^\s*(?:[-*•]|\d+[.)、])\s+", "", line).strip()
        if line:
            found[current] += _line_sentences(line)
    return {name: sentences for name, sentences in found.items() if sentences}


def _line_sentences(line: str) -> list[str]:
    sentences = _sentences(line)
    marks = "".join(f"[{n}]" for n in dict.fromkeys(
        n for s in sentences for n in parse_citations(s)[1]))
    if not marks:
        return sentences
    return [s if _CITE.search(s) else f"{s} {marks}" for s in sentences]


def _sentences(text: str) -> list[str]:
    # a citation after the full stop ("... effusion. [2]") belongs to the sentence before it
    text = re.sub(r"([.。!?！？])\s*((?:[\[【［]\s*[\d,，、\-–\s]+[\]】］]\s*)+)", r" \2\1 ", text)
    return split_sentences(text)


def read_report(text: str, cases: list[Case], lang: str, model: str) -> Report:
    """A Report from a model's answer: sections, sentences, and the record ids their `[n]`
    cite. Citations of a number with no case are listed in `report.errors`."""
    by_number = {case.number: case.record.id for case in cases}
    report = Report(lang=lang, model=model)
    redacted = 0
    for section, sentences in split_output(text).items():
        out = []
        for raw in sentences:
            clean, numbers = parse_citations(raw)
            if has_placeholder(clean):
                redacted += 1
                clean = redact(clean) or ""
            if not clean or not re.search(r"\w", clean):
                continue
            bad = [n for n in numbers if n not in by_number]
            if bad:
                report.errors.append(
                    f"sentence {clean!r} cites case(s) {bad} but only "
                    f"{len(cases)} case(s) were retrieved")
            cites = [by_number[n] for n in numbers if n in by_number]
            same = next((s for s in out if s.text == clean), None)
            if same:  # a sentence said again for another case is one sentence citing both
                same.cites += [c for c in cites if c not in same.cites]
            else:
                out.append(Sentence(clean, cites))
        if out:
            report.sections[section] = out
    if redacted:
        report.warnings.append(placeholder_warning(lang, redacted))
    return report


def placeholder_warning(lang: str, count: int) -> str:
    from generator.composer import phrases  # the composer imports this module

    return phrases(lang)["placeholders"].format(count=count)


def _words(text: str) -> set[str]:
    if has_cjk(text):
        return set(char_pairs(cjk_characters(text)))
    return set(latin_words(text)) - _STOPWORDS


_STOPWORDS = {"the", "a", "an", "of", "is", "are", "and", "in", "on", "with", "to", "there",
              "no", "not", "be", "as", "at", "by", "for", "or", "was", "were", "seen"}


def attribute(report: Report, cases: list[Case], share: float = 0.6) -> int:
    """Cite the cases a sentence that cites nothing is visibly taken from: at least `share` of
    its words (character pairs for Chinese) in the case's text; the best two at most. Returns
    how many sentences got citations this way (a model that quotes without citing)."""
    words = [(case, _words(case.text())) for case in cases]
    matched = 0
    for sentence in report.sentences():
        own = _words(sentence.text)
        if sentence.cites or len(own) < 2:
            continue
        scored = sorted(((len(own & theirs) / len(own), case.number, case.record.id)
                         for case, theirs in words), key=lambda item: (-item[0], item[1]))
        sentence.cites = [rid for value, _, rid in scored[:2] if value >= share]
        matched += bool(sentence.cites)
    return matched
