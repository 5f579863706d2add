"""Words of English and Chinese text, and which language a text is in: the one home of the CJK
pattern and of jieba (set up once, with the radiology lexicon in lexicon/)."""
from __future__ import annotations

import logging
import re
from functools import cache
from pathlib import Path

CJK = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff]")
LEXICON = Path(__file__).parent / "lexicon" / "zh_radiology.txt"


def has_cjk(text: str | None) -> bool:
    return bool(CJK.search(text or ""))


def detect_language(text: str) -> str:
    """"zh" when the text holds any Chinese character, else "en"."""
    return "zh" if has_cjk(text) else "en"


@cache
def _jieba():
    import jieba

    jieba.setLogLevel(logging.WARNING)
    for term in LEXICON.read_text(encoding="utf-8").split():
        jieba.add_word(term)
    return jieba


def words(text: str) -> list[str]:
    """Search words of a text: jieba's search-mode segmentation for Chinese (both the whole
    terms and their parts), lower-case word tokens otherwise."""
    if has_cjk(text):
        return [w for w in _jieba().cut_for_search(text) if re.match(r"\w", w)]
    return re.findall(r"\w+", (text or "").lower())
