"""De-identification placeholders kept out of drafted sentences.

Public report corpora replace identifying words with a token: Open-i writes `XXXX` ("XXXX
opacities in the right lower lung"), MIMIC-CXR `___`, the older MIMIC notes `[**...**]`. A
draft that quotes one reads as broken and a translation of it is worse, so every generator
drops the clause that holds a token ("The heart is normal, XXXX are intact." -> "The heart is
normal."), or the whole sentence when the token sits in its first clause, where the subject
is: what is left would state a finding about nothing.
"""
from __future__ import annotations

import re

from rag.text.words import detect_language

# XXXX-style runs (not inside a word), runs of underscores, and [** ... **] brackets
PLACEHOLDER = re.compile(r"(?<![A-Za-z])X{3,}(?![A-Za-z])|_{3,}|\[\*\*.*?\*\*\]")
_CLAUSE = re.compile(r"(?<=[,;，；])\s*")
_END = re.compile(r"[.!?。！？；;]\s*$")


def has_placeholder(text: str) -> bool:
    return bool(PLACEHOLDER.search(text or ""))


def redact(sentence: str) -> str | None:
    """The sentence without its clauses that hold a placeholder; None when the first clause
    holds one (or nothing readable is left). A sentence without a token comes back as is."""
    if not has_placeholder(sentence):
        return sentence
    clauses = [c for c in _CLAUSE.split(sentence.strip()) if c]
    if not clauses or has_placeholder(clauses[0]):
        return None
    kept = [c for c in clauses if not has_placeholder(c)]
    end = _END.search(sentence)
    text = "".join(kept) if detect_language(sentence) == "zh" else " ".join(kept)
    text = re.sub(r"(?:\s*(?:,|;|，|；|\band\b|\bor\b))+\s*$", "", text).strip()
    if len(re.findall(r"\w", text)) < 3:
        return None
    mark = end.group().strip() if end else ""
    if mark in (";", "；"):
        mark = "。" if mark == "；" else "."
    return text if text.endswith(mark) else text + mark


def redact_text(text: str, split) -> tuple[str, int]:
    """A whole text with every sentence redacted (`split` cuts it into sentences), and how many
    sentences held a placeholder."""
    if not has_placeholder(text):
        return text, 0
    sentences = split(text)
    kept = [redact(s) for s in sentences]
    hit = sum(has_placeholder(s) for s in sentences)
    joiner = "" if detect_language(text) == "zh" else " "
    return joiner.join(s for s in kept if s), hit
