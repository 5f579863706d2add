"""Words of English and Chinese text, and which language a text is in: the one home of the CJK
pattern and of jieba (one tokenizer, set up once, with the radiology lexicon in lexicon/).

Each way of cutting a text into tokens is a named function here, since each purpose keeps its
own: search words (`words`), metric tokens (`metric_words`, `metric_characters`,
`jieba_words`), the lower-case latin words that term overlap and lexical features compare
(`latin_words`), and what the service's text limit counts (`count_words`).
"""
from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from functools import cache
from pathlib import Path

# CJK Unified Ideographs Extension A, then the basic block; a character class body, for
# patterns that embed it (e.g. a Chinese header before a colon)
CJK_CHARS = "\u3400-\u4dbf\u4e00-\u9fff"
CJK = re.compile(f"[{CJK_CHARS}]")
LEXICON = Path(__file__).parent / "lexicon" / "zh_radiology.txt"

_WORD_CHAR = re.compile(r"\w")
LATIN_WORD = re.compile(r"[a-z0-9]+")  # public for matchers that need offsets (the glossary)
_NUMBER = re.compile(r"\d+(?:\.\d+)?")
_METRIC_WORD = re.compile(r"\d+(?:\.\d+)?|[a-z]+(?:'[a-z]+)?")
_METRIC_CHARACTER = re.compile(f"[{CJK_CHARS}]" + r"|\d+(?:\.\d+)?|[a-z]+")
# a Chinese character, or a run of other word characters
_COUNTED_WORD = re.compile(f"[{CJK_CHARS}]|[^\\W{CJK_CHARS}]+")


def has_cjk(text: str | None) -> bool:
    return bool(CJK.search(text or ""))


def detect_language(text: str) -> str:
    """"zh" when the text holds any Chinese character, else "en" (for a sentence or a term:
    one Chinese character means Chinese text around it)."""
    return "zh" if has_cjk(text) else "en"


def main_language(text: str, zh_share: float = 0.3) -> str:
    """The language a document is written in: "zh" when more than `zh_share` of its letters
    are Chinese characters, else "en" (an English report quoting one Chinese name stays
    English, a Chinese one full of English terms stays Chinese)."""
    letters = sum(c.isalpha() for c in text or "")
    return "zh" if letters and len(cjk_characters(text)) / letters > zh_share else "en"


def cjk_characters(text: str) -> list[str]:
    """The Chinese characters of a text, in order (what character pairs and language shares
    are made of)."""
    return CJK.findall(text or "")


def char_pairs(chars: Sequence[str]) -> list[str]:
    """Each two neighbouring characters: the "words" that Chinese text is compared on when it
    is not segmented."""
    return [a + b for a, b in zip(chars, chars[1:])]


@cache
def _jieba():
    """The project's one jieba tokenizer: its own instance, not jieba's global one, so that
    adding the lexicon changes no other segmentation and no result depends on call order."""
    import jieba

    jieba.setLogLevel(logging.WARNING)
    tokenizer = jieba.Tokenizer()
    for term in LEXICON.read_text(encoding="utf-8").split():
        tokenizer.add_word(term)
    return tokenizer


def words(text: str) -> list[str]:
    """Search words of a text: jieba's search-mode segmentation for Chinese (both the whole
    terms and their parts), lower-case word tokens otherwise."""
    if has_cjk(text):
        return [w for w in _jieba().cut_for_search(text) if _WORD_CHAR.match(w)]
    return re.findall(r"\w+", (text or "").lower())


def jieba_words(text: str) -> list[str]:
    """Metric tokens of Chinese by words: jieba's (accurate-mode) segmentation with the
    radiology lexicon, pieces holding no word character (punctuation, spaces) dropped."""
    return [w for w in _jieba().lcut(text) if _WORD_CHAR.search(w)]


def metric_words(text: str) -> list[str]:
    """Metric tokens of English: lower-case words (an inner apostrophe kept, "don't") and
    numbers ("3.5" whole); expects lower-cased text, as BLEU and ROUGE compare it."""
    return _METRIC_WORD.findall(text)


def metric_characters(text: str) -> list[str]:
    """Metric tokens of Chinese by characters: each Chinese character, latin words and numbers
    whole; expects lower-cased text."""
    return _METRIC_CHARACTER.findall(text)


def latin_words(text: str) -> list[str]:
    """Lower-case runs of ASCII letters and digits: the English words that term matching,
    sentence overlap and the lexical features compare."""
    return LATIN_WORD.findall(text.lower())


def numbers(text: str) -> list[str]:
    """The numbers of a text as written ("3.5" whole), in order."""
    return _NUMBER.findall(text)


def count_words(text: str) -> int:
    """How long a text is, as the service's text limit counts it: one per Chinese character,
    one per run of other word characters."""
    return len(_COUNTED_WORD.findall(text))
