"""A sentence-level English -> Chinese translation memory, made from the bilingual reports a
corpus already holds.

COV-CTR gives every study a Chinese and an English report, Open-i's XrayGLM rewrites come in
zh/en pairs: their sentences, aligned, are translations a radiologist (or at least the corpus)
wrote. The `auto` generator looks each sentence of an English draft up here before it asks a
language model, so a covered report is Chinese at once, and a translated sentence keeps the
citations of its English one.

Alignment of one pair of reports: the same number of sentences on both sides -> by position
(COV-CTR's English is a sentence-by-sentence translation); otherwise greedily, best pair first,
by multilingual-e5 cosine plus glossary term overlap, each sentence used once and pairs never
crossing. A pair where either side holds a de-identification placeholder is left out.

Lookup: an exact match (case, spaces and final punctuation ignored) is used as is. A near
match must clear three bars, because e5 puts any two chest-report sentences close together
(generator/support.py): cosine >= `near` (0.95), the same glossary terms (findings, anatomy,
sides: "left" never stands for "right"), the same polarity ("no effusion" never stands for
"small effusion") and the same numbers.

Two memories are read: the index's own (`<index>/translation_memory.sqlite`, written by
`index`), and a user-level one any index uses (`CASELENS_TRANSLATIONS`, default
`~/.cache/caselens/translation_memory.sqlite`, filled by `python cli.py translations add
CORPUS`), because an English-only corpus (MedPix, the demo) holds no pair of its own and the
repository never ships report data. The user file also caches the language model's sentence
translations, so a sentence is translated once.
"""
from __future__ import annotations

import logging
import os
import re
import sqlite3
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from generator.evidence import SECTIONS, has_cjk, report_sections, split_sentences
from generator.glossary import terms_in
from generator.placeholders import has_placeholder
from rag.text.negation import sentence_polarity
from rag.text.words import numbers
from rag.types import Record

log = logging.getLogger(__name__)
Embed = Callable[[list[str]], np.ndarray]
INDEX_FILE = "translation_memory.sqlite"
_SCHEMA = """
CREATE TABLE IF NOT EXISTS pairs (key TEXT PRIMARY KEY, en TEXT NOT NULL, zh TEXT NOT NULL,
                                  source TEXT, vector BLOB);
CREATE TABLE IF NOT EXISTS cache (key TEXT NOT NULL, model TEXT NOT NULL, zh TEXT NOT NULL,
                                  PRIMARY KEY (key, model));
"""


def sentence_key(sentence: str) -> str:
    """What an exact match compares: lower case, single spaces, no final punctuation."""
    return re.sub(r"\s+", " ", sentence.lower()).strip().rstrip(".!?;:。！？；： ").strip()


def _unit(vectors: np.ndarray) -> np.ndarray:
    vectors = np.asarray(vectors, dtype=np.float32)
    return vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)


def _signature(sentence: str, lang: str) -> tuple:
    """What a near match must share with the sentence: glossary terms, polarity, numbers."""
    return (frozenset(t.en for t in terms_in(sentence, lang)), sentence_polarity(sentence, lang),
            tuple(numbers(sentence)))


def align(english: str, chinese: str, embed: Embed | None = None,
          floor: float = 0.85) -> list[tuple[str, str]]:
    """(English sentence, Chinese sentence) pairs of one report and its translation."""
    en = split_sentences(english)
    zh = split_sentences(chinese)
    if not en or not zh:
        return []
    if len(en) == len(zh):
        pairs = list(zip(en, zh))
    elif embed is None:
        return []
    else:
        pairs = _greedy(en, zh, embed, floor)
    return [(e, z) for e, z in pairs
            if has_cjk(z) and not has_cjk(e) and not has_placeholder(e + z)]


def _greedy(en: list[str], zh: list[str], embed: Embed, floor: float) -> list[tuple[str, str]]:
    vectors = _unit(embed(en + zh))
    cosine = vectors[:len(en)] @ vectors[len(en):].T  # (E, Z)
    terms_en = [{t.en for t in terms_in(s, "en")} for s in en]
    terms_zh = [{t.en for t in terms_in(s, "zh")} for s in zh]
    scored = []
    for i, j in np.ndindex(cosine.shape):
        union = terms_en[i] | terms_zh[j]
        overlap = len(terms_en[i] & terms_zh[j]) / len(union) if union else 0.5
        if cosine[i, j] >= floor and (not union or overlap >= 0.5):
            scored.append((cosine[i, j] + 0.5 * overlap, i, j))
    taken: list[tuple[int, int]] = []
    for _, i, j in sorted(scored, reverse=True):
        if all(i != a and j != b and (i < a) == (j < b) for a, b in taken):
            taken.append((i, j))
    return [(en[i], zh[j]) for i, j in sorted(taken)]


def _section_texts(record: Record) -> dict[str, str]:
    return {name: text for name, text in report_sections(record).items() if text.strip()}


def bilingual_pairs(records: Iterable[Record]) -> Iterator[tuple[str, str, str]]:
    """(English text, Chinese text, source) of every study that has a report in both languages
    from one source: section by section where both sides have the same sections, else the
    whole texts. Several versions of a side (Open-i's rewrites) pair by order."""
    groups: dict[tuple[str, str], dict[str, list[Record]]] = defaultdict(lambda: defaultdict(list))
    for record in records:
        if record.kind == "report" and record.lang in ("en", "zh") and record.study:
            groups[(record.study, record.source or "")][record.lang].append(record)
    for (_, source), sides in groups.items():
        for en, zh in zip(sides.get("en", []), sides.get("zh", [])):
            en_sections, zh_sections = _section_texts(en), _section_texts(zh)
            if set(en_sections) == set(zh_sections):
                for name in SECTIONS:
                    if name in en_sections:
                        yield en_sections[name], zh_sections[name], source
            else:
                yield en.text, zh.text, source


@dataclass
class Match:
    zh: str
    en: str  # the memory's English sentence
    kind: str  # "exact" or "near"
    score: float


class TranslationMemory:
    """One memory file: aligned sentence pairs with the e5 vector of the English side, and the
    cache of model translations."""

    def __init__(self, path: str | Path, readonly: bool = False):
        self.path = Path(path)
        self.writable = not readonly
        if readonly:
            self.db = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True,
                                      check_same_thread=False)
        else:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.db = sqlite3.connect(self.path, check_same_thread=False)
            self.db.executescript(_SCHEMA)
        self._matrix: tuple[np.ndarray, list[tuple[str, str]]] | None = None

    def __len__(self) -> int:
        return self.db.execute("SELECT COUNT(*) FROM pairs").fetchone()[0]

    def add(self, pairs: Iterable[tuple[str, str, str]], embed: Embed | None = None,
            batch: int = 256) -> int:
        """Store (English sentence, Chinese sentence, source) pairs, first one per English
        sentence wins; vectors for the new English sentences. Returns how many were new."""
        known = {row[0] for row in self.db.execute("SELECT key FROM pairs")}
        fresh: dict[str, tuple[str, str, str]] = {}
        for en, zh, source in pairs:
            key = sentence_key(en)
            if key and key not in known and key not in fresh:
                fresh[key] = (en, zh, source)
        items = list(fresh.items())
        for start in range(0, len(items), batch):
            chunk = items[start:start + batch]
            vectors = (_unit(embed([en for _, (en, _, _) in chunk])).astype(np.float16)
                       if embed else [None] * len(chunk))
            self.db.executemany(
                "INSERT INTO pairs (key, en, zh, source, vector) VALUES (?, ?, ?, ?, ?)",
                [(key, en, zh, source, None if vec is None else vec.tobytes())
                 for (key, (en, zh, source)), vec in zip(chunk, vectors)])
            self.db.commit()
        self._matrix = None
        return len(items)

    def _vectors(self) -> tuple[np.ndarray, list[tuple[str, str]]]:
        if self._matrix is None:
            rows = self.db.execute(
                "SELECT en, zh, vector FROM pairs WHERE vector IS NOT NULL").fetchall()
            matrix = (np.frombuffer(b"".join(r[2] for r in rows), dtype=np.float16)
                      .reshape(len(rows), -1).astype(np.float32) if rows
                      else np.zeros((0, 1), np.float32))
            self._matrix = matrix, [(r[0], r[1]) for r in rows]
        return self._matrix

    def exact(self, sentence: str) -> Match | None:
        row = self.db.execute("SELECT en, zh FROM pairs WHERE key = ?",
                              (sentence_key(sentence),)).fetchone()
        return Match(row[1], row[0], "exact", 1.0) if row else None

    def near(self, sentence: str, vector: np.ndarray, threshold: float) -> Match | None:
        matrix, texts = self._vectors()
        if not texts:
            return None
        scores = matrix @ vector  # (N,)
        wanted = _signature(sentence, "en")
        for row in np.argsort(-scores)[:20]:
            if scores[row] < threshold:
                break
            en, zh = texts[row]
            if _signature(en, "en") == wanted:
                return Match(zh, en, "near", float(scores[row]))
        return None

    def cached(self, sentence: str, model: str) -> str | None:
        row = self.db.execute("SELECT zh FROM cache WHERE key = ? AND model = ?",
                              (sentence_key(sentence), model)).fetchone()
        return row[0] if row else None

    def remember(self, sentence: str, model: str, zh: str) -> None:
        self.db.execute("INSERT OR REPLACE INTO cache (key, model, zh) VALUES (?, ?, ?)",
                        (sentence_key(sentence), model, zh))
        self.db.commit()

    def close(self) -> None:
        self.db.close()


def lookup(memories: list[TranslationMemory], sentences: list[str], embed: Embed | None,
           near: float = 0.95) -> list[Match | None]:
    """The best memory match of each English sentence: exact in any memory first, then near
    (vectors are computed only for the sentences no memory holds exactly)."""
    found: list[Match | None] = [next((m for mem in memories if (m := mem.exact(s))), None)
                                 for s in sentences]
    missing = [i for i, match in enumerate(found) if match is None]
    if missing and embed is not None and any(len(mem) for mem in memories):
        vectors = _unit(embed([sentences[i] for i in missing]))
        for i, vector in zip(missing, vectors):
            found[i] = next((m for mem in memories
                             if (m := mem.near(sentences[i], vector, near))), None)
    return found


def build(records: Iterable[Record], path: str | Path, embed: Embed | None) -> int:
    """Write a memory of the records' bilingual pairs to `path` (whole, replacing any older
    file only once complete; the older file's vectors are reused). Returns its pair count;
    with no pair, no file is written and an older one is removed."""
    path = Path(path)
    sentences = [(en, zh, source) for english, chinese, source in bilingual_pairs(records)
                 for en, zh in align(english, chinese, embed)]
    if not sentences:
        path.unlink(missing_ok=True)
        return 0
    work = path.with_name(path.name + ".building")
    work.unlink(missing_ok=True)
    memory = TranslationMemory(work)
    if path.exists():  # reuse what an earlier build embedded
        old = TranslationMemory(path, readonly=True)
        keys = {sentence_key(en) for en, _, _ in sentences}
        rows = [r for r in old.db.execute("SELECT key, en, zh, source, vector FROM pairs")
                if r[0] in keys]
        memory.db.executemany("INSERT OR IGNORE INTO pairs VALUES (?, ?, ?, ?, ?)", rows)
        memory.db.commit()
        old.close()
    memory.add(sentences, embed)
    count = len(memory)
    memory.close()
    os.replace(work, path)
    log.info("translation memory: %d sentence pairs in %s", count, path)
    return count
