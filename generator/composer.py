"""The grounded composer: a report made only of sentences the retrieved reports contain.

No language model. Sentences of the retrieved reports are split per section and clustered:
two sentences merge only when their words overlap enough (Jaccard on words, on character
bigrams for Chinese) AND they agree on polarity ("No pleural effusion." never merges with
"Small pleural effusion.") and on the value of every clinical label both mention. A cluster's
weight is the summed retrieval similarity of the distinct reports that contain it.

Where the clusters disagree on a label (present in some, absent in others) only the side
with more weight is kept, and the draft says how many such contradictions it resolved.
Each section keeps its heaviest clusters, never one lighter than `min_share` of the
section's heaviest, and findings are then printed in reading order by anatomical topic.
"""
from __future__ import annotations

import json
import re
import statistics
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

from generator.base import Generator, register_generator
from generator.evidence import SECTIONS, has_cjk, report_sections, report_sources, split_sentences
from generator.placeholders import has_placeholder, redact
from rag.text.clinical_labels import NO_FINDING, label_report
from rag.text.negation import sentence_polarity
from rag.text.words import latin_words
from rag.types import Hit, Query, Record, Report, Sentence

PHRASES = Path(__file__).parent / "phrases"
PRESENT, ABSENT = 1, 0  # clinical label values; uncertain (-1) never counts as a contradiction
# The order findings are printed in: (English word patterns, Chinese terms) per topic. A
# sentence goes under the topic named earliest in it (the longest name on a tie, so 肺门 is
# hilar, not lung); one naming none goes last.
_TOPICS = (
    ("devices", r"(?:endotracheal|nasogastric|feeding|chest|tracheostomy|drainage|et|ng) tubes?|"
     r"catheters?|(?:picc|central|venous|arterial) lines?|pacemakers?|pacer|defibrillator|"
     r"stents?|sternotomy|wires?|clips?|drains?|devices?",
     "插管|导管|引流管|置管|胃管|起搏器|支架|导丝|金属"),
    ("lungs", r"lungs?|pulmonary|lobes?|lobar|lingula\w*|air-?space|parenchym\w*|opacit\w*|"
     r"consolidat\w*|atelecta\w*|pneumoni\w*|nodul\w*|mass(?:es)?|ground[- ]?glass|"
     r"bronch\w*|o?edema|emphysema\w*|interstiti\w*|infiltrat\w*|granuloma\w*|lesions?",
     "肺|支气管|气道|磨玻璃|毛玻璃|实变|结节|斑片|片状|网格|索条|条索|纹理|病灶|渗出"),
    ("pleura", r"pleur\w*|effusions?|pneumothora\w*|hydrothorax|costophrenic|"
     r"(?:bilateral|left|right) thora(?:x|ces)|thoracic cavit\w*",
     "胸膜|胸腔|积液|胸水|气胸|肋膈角"),
    ("heart", r"heart|cardi\w*|mediastin\w*|aort\w*|hil(?:a|um|ar)|lymph\w*|pericardi\w*|"
     r"trachea\w*",
     "心|纵隔|主动脉|肺门|淋巴结|气管"),
    ("bones", r"bon(?:e|es|y)|osseous|ribs?|spine|spinal|vertebra\w*|fractur\w*|"
     r"soft tissues?|thorax|chest wall|clavic\w*|shoulders?|stern(?:um|al)|skelet\w*",
     "骨|肋|椎|软组织|胸廓|胸壁"),
)
_TOPIC_PATTERNS = [(re.compile(r"\b(?:" + en + r")\b", re.IGNORECASE), re.compile(zh))
                   for _, en, zh in _TOPICS]


@cache
def phrases(lang: str) -> dict:
    path = PHRASES / f"{lang}.json"
    if not path.exists():
        known = ", ".join(p.stem for p in PHRASES.glob("*.json"))
        raise ValueError(f"no report phrases for language {lang!r}; available: {known}")
    return json.loads(path.read_text(encoding="utf-8"))


def _tokens(sentence: str) -> frozenset[str]:
    if has_cjk(sentence):
        chars = [c for c in sentence if not c.isspace() and c not in "，。；：、！？,.;:"]
        return frozenset(a + b for a, b in zip(chars, chars[1:]))
    return frozenset(latin_words(sentence))


def _similarity(a: frozenset[str], b: frozenset[str]) -> float:
    return len(a & b) / len(a | b) if a and b else 0.0


def topic(sentence: str) -> int:
    """Where a findings sentence is printed: 0 devices, 1 lungs, 2 pleura, 3 heart and
    mediastinum, 4 bones and soft tissue, 5 anything else."""
    found = []
    for order, (english, chinese) in enumerate(_TOPIC_PATTERNS):
        match = (chinese if has_cjk(sentence) else english).search(sentence)
        if match:
            found.append((match.start(), -len(match.group()), order))
    return min(found)[2] if found else len(_TOPICS)


@dataclass
class _Cluster:
    """Sentences that say one thing: the first (from the most similar report) is printed."""
    section: str
    text: str
    tokens: frozenset[str]
    polarity: str
    labels: dict[str, int]  # clinical label -> 1 present, 0 absent, -1 uncertain
    order: tuple[int, int]  # (rank of the most similar report holding it, sentence index)
    cites: dict[str, float] = field(default_factory=dict)  # record id -> retrieval weight

    @property
    def weight(self) -> float:
        return sum(self.cites.values())

    def rank_key(self) -> tuple:
        # rounded so that float noise in the sums never beats the tie-breaks
        return -round(self.weight, 9), -len(self.cites), self.order

    def admits(self, other: _Cluster, similarity: float) -> bool:
        return (other.polarity == self.polarity
                and _similarity(self.tokens, other.tokens) >= similarity
                and all(self.labels[k] == v for k, v in other.labels.items() if k in self.labels))


@register_generator("composer")
@register_generator("grounded")
class GroundedComposer(Generator):
    def __init__(self, low_confidence: float = 0.3, max_findings: int = 5,
                 max_impression: int = 2, similarity: float = 0.5, min_share: float = 0.25,
                 support=None):
        super().__init__(support)
        self.low_confidence = low_confidence
        self.limits = {"findings": max_findings, "impression": max_impression}
        self.similarity = similarity
        self.min_share = min_share  # a cluster lighter than this share of its section's top is cut

    def _generate(self, hits: list[Hit], query: Query, lang: str) -> Report:
        words = phrases(lang)
        report = Report(lang=lang, model="grounded-composer")
        if not hits:
            report.warnings.append(words["no_hits"])
            return report
        sources = [(rec, weight) for rec, weight, _ in report_sources(hits, lang)]
        if not sources:
            fallback = [(rec, weight) for rec, weight, _ in report_sources(hits, None)]
            if fallback:
                langs = [rec.lang for rec, _ in fallback]
                source_lang = max(dict.fromkeys(langs), key=langs.count)
                sources = [(rec, weight) for rec, weight in fallback if rec.lang == source_lang]
                names = words["lang_names"]
                report.warnings.append(words["no_lang_source"].format(
                    lang_name=names.get(lang, lang),
                    source_lang_name=names.get(source_lang, source_lang)))
        if not sources:
            report.warnings.append(words["no_reports"])
            return report
        # confidence of the hits the text comes from: a perfect image match with no report
        # (e.g. the query image itself) must not hide weak report matches
        best = max(weight for _, weight in sources)
        if best < self.low_confidence:
            report.warnings.insert(0, words["low_confidence"].format(
                score=best, threshold=self.low_confidence))
        found, redacted = self._cluster(sources)
        clusters, resolved = _resolve_contradictions(found)
        if redacted:
            report.warnings.append(words["placeholders"].format(count=redacted))
        if resolved:
            report.warnings.append(words["contradictions"].format(count=resolved))
        single = 0
        for section in SECTIONS:
            lengths = [len(text) for rec, _ in sources
                       if (text := report_sections(rec).get(section, "").strip())]
            budget = 1.5 * statistics.median(lengths) if lengths else 0
            kept = self._select([c for c in clusters if c.section == section], section, budget)
            if section == "findings":  # weight chose them; reading order prints them
                kept.sort(key=lambda c: topic(c.text))
            report.sections[section] = [Sentence(c.text, list(c.cites)) for c in kept]
            single += sum(len(c.cites) == 1 for c in kept)
        if single and len(sources) > 1:
            report.warnings.append(words["single_source"].format(count=single))
        return report

    def _cluster(self, sources: list[tuple[Record, float]]) -> tuple[list[_Cluster], int]:
        """The sources' sentences clustered, and how many held a de-identification placeholder
        (generator/placeholders.py: the clause, or the sentence, is left out)."""
        clusters: list[_Cluster] = []
        redacted = 0
        ranked = sorted(sources, key=lambda item: -item[1])
        for rank, (record, weight) in enumerate(ranked):
            sections = report_sections(record)
            for section in SECTIONS:
                for index, quoted in enumerate(split_sentences(sections.get(section, ""))):
                    redacted += has_placeholder(quoted)
                    if not (sentence := redact(quoted)):
                        continue
                    labels = {k: v for k, v in label_report(sentence).items() if k != NO_FINDING}
                    new = _Cluster(section, sentence, _tokens(sentence),
                                   sentence_polarity(sentence), labels, (rank, index))
                    match = next((c for c in clusters if c.section == section
                                  and c.admits(new, self.similarity)), None)
                    if match is None:
                        clusters.append(match := new)
                    match.cites.setdefault(record.id, weight)
        return clusters, redacted

    def _select(self, clusters: list[_Cluster], section: str, budget: float) -> list[_Cluster]:
        """The heaviest clusters, up to the section's limit, none lighter than `min_share` of
        the heaviest (which is always kept): a lone weak report's sentence stays out when
        stronger consensus exists. Sentences stop once the draft is 1.5 times as long as the
        median source report's section (`budget`, characters): a draft of five sources' long
        sentences is five reports, not one."""
        ranked = sorted(clusters, key=_Cluster.rank_key)
        if not ranked:
            return []
        floor = self.min_share * ranked[0].weight
        kept, length = [], 0
        for i, cluster in enumerate(ranked):
            if len(kept) == self.limits[section] or (kept and length >= budget):
                break
            if i == 0 or cluster.weight >= floor:
                kept.append(cluster)
                length += len(cluster.text)
        return kept


def _resolve_contradictions(clusters: list[_Cluster]) -> tuple[list[_Cluster], int]:
    """The clusters without the losing side of every label stated both present and absent,
    and how many labels were resolved so.

    A side weighs the retrieval weights of the distinct reports holding it; a report on both
    sides ("no right effusion. Small left effusion.") counts for neither. A tie keeps the
    present side: a finding left out costs more than one a reader checks and rejects.
    """
    losers: set[int] = set()
    resolved = 0
    for label in sorted({k for c in clusters for k in c.labels}):
        sides: dict[int, dict[str, float]] = {PRESENT: {}, ABSENT: {}}
        for cluster in clusters:
            if id(cluster) not in losers and cluster.labels.get(label) in sides:
                sides[cluster.labels[label]].update(cluster.cites)
        if not sides[PRESENT] or not sides[ABSENT]:
            continue
        shared = sides[PRESENT].keys() & sides[ABSENT].keys()
        present, absent = (sum(w for rid, w in sides[value].items() if rid not in shared)
                           for value in (PRESENT, ABSENT))
        loser = ABSENT if round(present, 9) >= round(absent, 9) else PRESENT
        losers |= {id(c) for c in clusters if c.labels.get(label) == loser}
        resolved += 1
    return [c for c in clusters if id(c) not in losers], resolved
