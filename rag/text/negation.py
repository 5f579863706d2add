"""Polarity of findings in radiology text: negative, uncertain or positive, English and Chinese.

A NegEx-style rule set. A cue governs a mention when both lie in the same clause:

* English clauses end at ``. ; : ! ?`` and before "but", "however", "although", "though",
  "except", "whereas", "while", "apart from", "aside from". A cue *before* the mention
  ("no", "without", "negative for", "possible", ...) reaches it across a list ("No pleural
  effusion or pneumothorax" negates both) but not across a verb ("is", "were", "seen",
  "shows", ...), a comma opening a new clause (", the ...") or more than eight words, so
  "no enlarged lymph nodes were seen, ground glass shadows ..." leaves the shadows positive.
  "normal" and "unremarkable" negate only right before it ("normal heart size"). A cue *after*
  it ("is not seen", "has resolved", "cannot be excluded") counts up to the next comma, "with"
  or "without", at most a dozen words on.
* Chinese clauses end at ``， , 。 ； ;``. Any cue earlier in the clause governs
  ("双肺未见明显实变"); after the mention, resolved / not-enlarged forms ("消失", "吸收",
  "不大", "未见增大", "正常") and uncertainty forms ("可能", "不除外", "？") do. So in
  "双肺未见明显实变，胸腔积液" the effusion, alone in its clause, is positive.

Cues that contain a negation word but mean something else are taken out first: uncertainty
phrases ("cannot be excluded", "not ruled out", "不除外", "不能排除", "待排") and pseudo-cues
("no change", "不均", "不清", "大小不等", "肺不张"). A cue after the mention decides first;
otherwise, of the cues before it, the nearest decides ("No focal consolidation to suggest
pneumonia": "suggest" is nearer, so pneumonia is uncertain).
"""
from __future__ import annotations

import re

from rag.text.words import CJK_CHARS, detect_language

NEGATIVE = "negative"
UNCERTAIN = "uncertain"
POSITIVE = "positive"
LANGUAGES = ("en", "zh")

_MAX_GAP_WORDS = 8


def _words(*phrases: str) -> re.Pattern[str]:
    """An English alternation of whole words or phrases, longest first, case-insensitive."""
    ordered = sorted(phrases, key=len, reverse=True)
    return re.compile(r"\b(?:" + "|".join(ordered) + r")\b", re.IGNORECASE)


def _chars(*phrases: str) -> re.Pattern[str]:
    """A Chinese alternation (no word boundaries in Chinese), longest first."""
    return re.compile("|".join(sorted(phrases, key=len, reverse=True)))


_EN_BOUNDARY = re.compile(
    r"[;:!?]|\.(?!\d)|\n|\b(?:but|however|although|though|except|whereas|while|apart from|aside from)\b",
    re.IGNORECASE,
)
_EN_PRE_NEGATION = _words(
    "no", "not", "without", "negative for", "free of", "clear of", "absence of", "absent",
    "no evidence of", "resolved", "resolution of", "removal of", "never", "no longer",
)
# Only directly before the mention: "normal heart size", "unremarkable mediastinal contours".
_EN_ADJACENT_NEGATION = _words("normal", "unremarkable")
_EN_POST_NEGATION = _words(
    r"(?:is|are|was|were|has been|have been)?\s*(?:not|no longer)\s+(?:clearly\s+|definitely\s+)?"
    r"(?:seen|visualized|visible|identified|present|demonstrated|noted|appreciated|enlarged|"
    r"widened|evident|detected|increased)",
    r"(?:has|have)?\s*(?:resolved|disappeared)",
    r"(?:has been|have been|was|were)\s+removed",
    r"(?:is|are|was|were)?\s*absent",
    r"(?:is|are|was|were)?\s*(?:normal|unremarkable|within normal limits)",
)
_EN_PRE_UNCERTAIN = _words(
    "may", "might", "could", "possible", "possibly", "probable", "probably", "likely", "unlikely",
    "suspicious for", "suspected", "suspect", "concern for", "concerning for", "questionable",
    "question of", "suggest", "suggests", "suggestive of", "suggesting", "versus", "vs",
    "differential", "differential diagnosis", "rule out", "cannot exclude", "can not exclude",
    "equivocal", "indeterminate", "presumed", "presumably", "borderline", "may represent",
)
_EN_POST_UNCERTAIN = _words(
    r"(?:cannot|can not|could not|not)\s+(?:be\s+)?(?:excluded|ruled out)",
    "versus", "vs",
    r"(?:is|are|was|were)\s+(?:possible|likely|probable|suspected|questionable|unlikely)",
    r"(?:may|might|could)\s+(?:be|represent)",
    "likely", "probably", "possibly", "suspected", "questionable",
)
_EN_PSEUDO = _words(
    r"no\s+(?:significant\s+|interval\s+|substantial\s+)?(?:change|increase|decrease|improvement|worsening)",
    r"without\s+(?:significant\s+|interval\s+)?change", "not only", "not certain whether",
)

_ZH_BOUNDARY = re.compile(r"[，,。；;\n]")
_ZH_PRE_NEGATION = _chars("未见", "未发现", "未", "无", "没有", "不", "排除", "否认")
_ZH_POST_NEGATION = _chars(
    "消失", "未见显示", "未显示", "正常",
    r"(?<!部分)(?<!有所)(?<!稍)(?<!略)(?<!大部)(?:完全|基本|已)?吸收(?!好转|减少|变淡|中)",
    r"不(?:明显)?(?:增大|扩大|增宽|增厚|大(?!小)|宽|厚)",
    r"(?:未见|无)(?:明显)?(?:增大|扩大|增宽|增厚|异常)",
)
_ZH_PRE_UNCERTAIN = _chars(
    "可能", "考虑", "疑", "疑似", "可疑", "不除外", "不排除", "不能排除", "待排", "待排除",
    "待除外", "需排除", "除外", "倾向",
)
_ZH_POST_UNCERTAIN = _chars(
    "可能", "不除外", "不排除", "不能排除", "待排", "待除外", "可疑", "？", r"\?",
)
_ZH_PSEUDO = _chars(
    "不均", "不清", "不规则", "不规整", "不整", "不一", "不等", "不同", "不光整", "不全", "不张",
    "不锐利", "不完全", "不典型", "未明", "未定", "无法", "无明显变化", "无变化", "未见明显变化",
    "无症状",
)



def _language(text: str, lang: str | None) -> str:
    if lang is None:
        return detect_language(text)
    if lang not in LANGUAGES:
        raise ValueError(f"lang must be one of {LANGUAGES} or None, got {lang!r}")
    return lang


def _clause(text: str, start: int, boundary: re.Pattern[str]) -> tuple[int, int]:
    """(first, last) offsets of the clause holding offset `start`."""
    first, last = 0, len(text)
    for match in boundary.finditer(text):
        if match.end() <= start:
            first = match.end()
        elif match.start() >= start:
            last = match.start()
            break
    return first, last


def _spans(pattern: re.Pattern[str], text: str, blocked: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Non-empty matches of `pattern` that overlap no blocked span (pseudo-cue, uncertainty phrase)."""
    return [
        m.span() for m in pattern.finditer(text)
        if m.end() > m.start() and not any(m.start() < end and start < m.end() for start, end in blocked)
    ]


def _cues(clause: str, lang: str) -> list[tuple[int, int, str, str]]:
    """Cues of a clause as (start, end, polarity, where), where is "pre", "post" or "adjacent"."""
    if lang == "zh":
        pre_neg, post_neg, pre_unc, post_unc, pseudo_rx, adjacent_rx = (
            _ZH_PRE_NEGATION, _ZH_POST_NEGATION, _ZH_PRE_UNCERTAIN, _ZH_POST_UNCERTAIN, _ZH_PSEUDO, None)
    else:
        pre_neg, post_neg, pre_unc, post_unc, pseudo_rx, adjacent_rx = (
            _EN_PRE_NEGATION, _EN_POST_NEGATION, _EN_PRE_UNCERTAIN, _EN_POST_UNCERTAIN, _EN_PSEUDO,
            _EN_ADJACENT_NEGATION)
    pseudo = _spans(pseudo_rx, clause, [])
    uncertain_pre = _spans(pre_unc, clause, pseudo)
    uncertain_post = _spans(post_unc, clause, pseudo)
    blocked = pseudo + uncertain_pre + uncertain_post
    found = [(s, e, UNCERTAIN, "pre") for s, e in uncertain_pre]
    found += [(s, e, UNCERTAIN, "post") for s, e in uncertain_post]
    found += [(s, e, NEGATIVE, "pre") for s, e in _spans(pre_neg, clause, blocked)]
    found += [(s, e, NEGATIVE, "post") for s, e in _spans(post_neg, clause, blocked)]
    if adjacent_rx is not None:
        found += [(s, e, NEGATIVE, "adjacent") for s, e in _spans(adjacent_rx, clause, blocked)]
    return found


_EN_GAP_STOP = re.compile(
    r"\b(?:is|are|was|were|seen|noted|shows?|showed|demonstrates?|demonstrated|identified|visualized|"
    r"appears?|remains?|there)\b|,\s*(?:the|a|an)\b",
    re.IGNORECASE,
)
_EN_POST_STOP = re.compile(r",|\b(?:with|without)\b", re.IGNORECASE)


def _pre_reaches(gap: str, where: str, lang: str) -> bool:
    """Whether a cue before the mention reaches across `gap`, the text between them."""
    if where == "adjacent":
        return not gap.strip()
    if lang == "zh":
        return True
    return len(gap.split()) <= _MAX_GAP_WORDS and not _EN_GAP_STOP.search(gap)


def _post_window(after: str, lang: str) -> int:
    """How far (characters) after the mention start a post-cue may begin."""
    if lang == "zh":
        return len(after)
    stop = _EN_POST_STOP.search(after)
    window = after[: stop.start()] if stop else after
    words = list(re.finditer(r"\S+", window))
    return words[_MAX_GAP_WORDS + 3].start() if len(words) > _MAX_GAP_WORDS + 3 else len(window)


def _post_polarity(cues: list[tuple[int, int, str, str]], clause: str, at: int, lang: str) -> str | None:
    """Polarity of the first post-cue that starts within the window after offset `at`."""
    limit = at + _post_window(clause[at:], lang)
    post = [(s, polarity) for s, _, polarity, where in cues if where == "post" and at <= s < limit]
    return min(post)[1] if post else None


def mention_polarity(text: str, start: int, lang: str | None = None) -> str:
    """Polarity ("negative", "uncertain", "positive") of the finding mentioned at offset `start`.

    `lang` is "en", "zh" or None (detected from CJK characters). A post-cue after the
    mention decides first, else the nearest pre-cue that reaches it, else it is positive;
    see the module docstring for the scopes.
    """
    if not 0 <= start < max(len(text), 1):
        raise ValueError(f"start {start} is outside the text (length {len(text)})")
    lang = _language(text, lang)
    first, last = _clause(text, start, _ZH_BOUNDARY if lang == "zh" else _EN_BOUNDARY)
    clause, at = text[first:last], start - first
    cues = _cues(clause, lang)
    post = _post_polarity(cues, clause, at, lang)
    if post is not None:
        return post
    reaching = [
        c for c in cues if c[3] != "post" and c[1] <= at and _pre_reaches(clause[c[1]:at], c[3], lang)
    ]
    return max(reaching, key=lambda cue: cue[1])[2] if reaching else POSITIVE


_HEADER = re.compile(r"^\s*(?:[A-Za-z ]{1,30}:|[" + CJK_CHARS + r"]{1,8}[:：])\s*")
_EN_LEADING = re.compile(
    r"^\s*(?:(?:there|is|are|was|were|has|have|had|been|again|also|still|otherwise|now|and|the|a|an)\s+)*$",
    re.IGNORECASE,
)


def sentence_polarity(sentence: str, lang: str | None = None) -> str:
    """Polarity of a sentence's main statement, the one in its first clause.

    The first clause runs to the first comma or clause boundary (a leading "Findings:" or
    "印象：" header is skipped). Chinese: the earliest cue in it decides. English: a pre-cue
    that opens the clause ("No ...", "There is no ...", "Possible ..."), else a post-cue
    after its subject ("... is not seen", "... has resolved", "... may represent ..."), so
    "Small pleural effusion without pneumothorax." is positive. A sentence without cues (or an
    empty one) is "positive"; per-finding polarity needs `mention_polarity`.
    """
    lang = _language(sentence, lang)
    text = _HEADER.sub("", sentence, count=1).lstrip(" \t\n,，;；.。")
    boundary = _ZH_BOUNDARY if lang == "zh" else re.compile(_EN_BOUNDARY.pattern + "|,", re.IGNORECASE)
    match = boundary.search(text)
    clause = text[: match.start()] if match else text
    cues = _cues(clause, lang)
    if lang == "zh":
        return min(cues)[2] if cues else POSITIVE
    leading = [c for c in cues if c[3] != "post" and _EN_LEADING.match(clause[: c[0]])]
    if leading:
        return min(leading)[2]
    return _post_polarity(cues, clause, 0, lang) or POSITIVE
