"""A fixed English-Chinese radiology glossary: what the prompt lists, and what the checks verify.

A small LLM writing a Chinese report from English cases mistranslates key terms ("bibasilar
atelectasis" becomes 肺气肿, emphysema). The glossary (package data,
``glossary/radiology_en_zh.tsv``) maps each concept to its standard Chinese term, with aliases
in both languages and a kind. ``prompt_terms`` picks the concepts the retrieved evidence
mentions, for the prompt to list as "use these translations"; ``check_translation`` and
``check_english`` report finding terms in a generated report that no retrieved case mentions,
in either language.

Matching takes the longest term at each place: "pleural effusion" is one term, never also
"effusion", and 双肺底肺不张 is 双肺底 + 肺不张. A term counts as supported by the evidence when
the evidence names it, names a more specific term that contains it (胸腔积液 supports 积液), or
names the more general term it contains (积液 supports 胸腔积液); a sibling does not (病毒性肺炎
supports 肺炎 but not 间质性肺炎). Only findings and devices are checked: locations and descriptors
(双侧, 右侧, 正常, 病灶) are listed in the prompt but never reported. Negation is not parsed: a
finding named only as absent ("no pneumothorax") still counts as mentioned.
"""
from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from functools import cache, lru_cache
from pathlib import Path

from rag.text.words import LATIN_WORD, detect_language, latin_words

GLOSSARY = Path(__file__).parent / "glossary" / "radiology_en_zh.tsv"
COLUMNS = ("en", "zh", "en_aliases", "zh_aliases", "kind")
KINDS = frozenset({"finding", "device", "anatomy", "location", "descriptor", "phrase"})
# Only these kinds are reported by the checks; locations and descriptors (双侧, 正常, 病灶) never are.
CHECKED_KINDS = frozenset({"finding", "device"})
LANGS = ("en", "zh")


@dataclass(frozen=True)
class Term:
    en: str
    zh: str
    en_aliases: tuple[str, ...] = ()
    zh_aliases: tuple[str, ...] = ()
    kind: str = "finding"

    def forms(self, lang: str) -> tuple[str, ...]:
        return (self.en, *self.en_aliases) if lang == "en" else (self.zh, *self.zh_aliases)

    @property
    def checked(self) -> bool:
        return self.kind in CHECKED_KINDS


def load_glossary(path: Path | None = None) -> list[Term]:
    """The glossary's terms in file order; the packaged file is read once."""
    return list(_default_glossary() if path is None else _read_glossary(Path(path)))


@cache
def _default_glossary() -> tuple[Term, ...]:
    return _read_glossary(GLOSSARY)


def _read_glossary(path: Path) -> tuple[Term, ...]:
    terms: list[Term] = []
    seen: dict[str, int] = {}
    header: tuple[str, ...] | None = None
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        cells = tuple(cell.strip() for cell in line.split("\t"))
        where = f"{path}:{lineno}"
        if header is None:
            if cells not in (COLUMNS, COLUMNS[:4]):
                raise ValueError(f"{where}: expected the header {' <TAB> '.join(COLUMNS)!r} "
                                 f"(kind optional), got {line!r}")
            header = cells
            continue
        if len(cells) != len(header):
            raise ValueError(f"{where}: expected {len(header)} tab-separated columns "
                             f"({', '.join(header)}), got {len(cells)}: {line!r}")
        row = dict(zip(header, cells))
        kind = row.get("kind", "finding")
        if not row["en"] or not row["zh"]:
            raise ValueError(f"{where}: en and zh must not be empty: {line!r}")
        if kind not in KINDS:
            raise ValueError(f"{where}: unknown kind {kind!r}; known: {', '.join(sorted(KINDS))}")
        key = row["en"].lower()
        if key in seen:
            raise ValueError(f"{where}: duplicate term {row['en']!r} (first on line {seen[key]})")
        seen[key] = lineno
        terms.append(Term(row["en"], row["zh"], _aliases(row["en_aliases"]),
                          _aliases(row["zh_aliases"]), kind))
    if header is None:
        raise ValueError(f"{path}: no header line; expected {' <TAB> '.join(COLUMNS)!r}")
    return tuple(terms)


def _aliases(cell: str) -> tuple[str, ...]:
    return tuple(alias.strip() for alias in cell.split("|") if alias.strip())


_JOINER = re.compile(r"[\s-]+")  # what may separate the words of a term: spaces or hyphens


def _words(form: str) -> tuple[str, ...]:
    return tuple(latin_words(form))


def _inflections(word: str) -> frozenset[str]:
    """The word and its simple plural: "s"/"es", or "y" -> "ies" after a consonant."""
    if not word[-1].isalpha():
        return frozenset({word})
    forms = {word, word + "s", word + "es"}
    if len(word) > 2 and word[-1] == "y" and word[-2] not in "aeiou":
        forms.add(word[:-1] + "ies")
    return frozenset(forms)


@dataclass(frozen=True)
class _Match:
    start: int
    end: int
    term: int  # index into the glossary

    @property
    def size(self) -> int:
        return self.end - self.start


class _Matcher:
    """Indexed forms of one glossary, and which terms contain which (胸腔积液 contains 积液).

    English is matched on words (lower-cased, separated only by spaces or hyphens, a plural on
    the last word), looked up by their first word; Chinese by substring.
    """

    def __init__(self, terms: tuple[Term, ...]):
        self.terms = terms
        self.english: dict[str, list[tuple[tuple[str, ...], frozenset[str], int]]] = {}
        for i, term in enumerate(terms):
            for words in dict.fromkeys(_words(f) for f in term.forms("en")):
                if words:
                    self.english.setdefault(words[0], []).append(
                        (words[:-1], _inflections(words[-1]), i))
        self.chinese = [t.forms("zh") for t in terms]
        self.general = [self._contained(i) for i in range(len(terms))]

    def matches(self, text: str, lang: str) -> list[_Match]:
        return _longest(self._english(text) if lang == "en" else self._chinese(text))

    def _english(self, text: str) -> list[_Match]:
        lowered = text.lower()
        if len(lowered) != len(text):  # a few characters ("İ") lower to two; keep offsets aligned
            lowered = "".join(c.lower() if len(c.lower()) == 1 else c for c in text)
        tokens = list(LATIN_WORD.finditer(lowered))
        # joined[k]: tokens k and k + 1 are separated only by spaces or hyphens
        joined = [bool(_JOINER.fullmatch(text, a.end(), b.start()))
                  for a, b in zip(tokens, tokens[1:])]
        found = []
        for k, token in enumerate(tokens):
            for head, last, i in self._candidates(token.group()):
                n = len(head)
                if (k + n < len(tokens) and all(joined[k:k + n])
                        and all(tokens[k + m].group() == w for m, w in enumerate(head))
                        and tokens[k + n].group() in last):
                    found.append(_Match(token.start(), tokens[k + n].end(), i))
        return found

    def _candidates(self, word: str):
        """Forms starting with this word, or (one-word forms) with this word as a plural."""
        yield from self.english.get(word, ())
        for stem in {word[:-1], word[:-2], word[:-3] + "y"} - {word}:
            for head, last, i in self.english.get(stem, ()):
                if not head:
                    yield head, last, i

    def _chinese(self, text: str) -> list[_Match]:
        return [_Match(start, start + len(form), i) for i, forms in enumerate(self.chinese)
                for form in forms for start in _occurrences(text, form)]

    def _contained(self, i: int) -> frozenset[int]:
        """The terms term i contains: its en forms name them and its zh forms hold their zh."""
        term = self.terms[i]
        inside_en = {m.term for form in term.forms("en") for m in self._english(form)}
        return frozenset(j for j in inside_en - {i}
                         if any(self.terms[j].zh in form for form in term.forms("zh")))


def _occurrences(text: str, form: str):
    start = text.find(form)
    while start >= 0:
        yield start
        start = text.find(form, start + 1)


def _longest(found: list[_Match]) -> list[_Match]:
    """Keep the longest match wherever matches overlap (the earlier one on a tie)."""
    taken: list[_Match] = []
    for match in sorted(found, key=lambda m: (-m.size, m.start)):
        if all(match.end <= t.start or match.start >= t.end for t in taken):
            taken.append(match)
    return sorted(taken, key=lambda m: m.start)


@lru_cache(maxsize=8)
def _matcher(terms: tuple[Term, ...]) -> _Matcher:
    return _Matcher(terms)


def _matcher_for(glossary: list[Term] | None) -> _Matcher:
    return _matcher(_default_glossary() if glossary is None else tuple(glossary))


def terms_in(text: str, lang: str, glossary: list[Term] | None = None) -> list[Term]:
    """The glossary terms that occur in ``text`` (longest match first), in order of appearance."""
    if lang not in LANGS:
        raise ValueError(f"unknown language {lang!r}; expected one of {', '.join(LANGS)}")
    matcher = _matcher_for(glossary)
    indices = dict.fromkeys(m.term for m in matcher.matches(text or "", lang))
    return [matcher.terms[i] for i in indices]


def prompt_terms(evidence_texts: list[str], glossary: list[Term] | None = None,
                 limit: int = 40) -> list[Term]:
    """The terms the evidence (English or Chinese texts) mentions, most frequent first."""
    matcher = _matcher_for(glossary)
    counts: Counter[int] = Counter()
    for text in evidence_texts:
        counts.update(m.term for m in matcher.matches(text or "", detect_language(text or "")))
    # Counter keeps first-seen order among equal counts, so ties follow the evidence order.
    return [matcher.terms[i] for i, _ in counts.most_common(limit)]


def check_translation(output_zh: str, evidence_texts: list[str],
                      glossary: list[Term] | None = None) -> list[str]:
    """Finding terms of a Chinese report that none of the retrieved cases mentions."""
    return [f"术语“{form}”({term.en}) 不见于检索到的病例 / term not in the retrieved cases"
            for form, term in _unsupported(output_zh, "zh", evidence_texts, glossary)]


def check_english(output_en: str, evidence_texts: list[str],
                  glossary: list[Term] | None = None) -> list[str]:
    """Finding terms of an English report that none of the retrieved cases mentions."""
    return [f"term “{form}” ({term.zh}) not in the retrieved cases / 术语不见于检索到的病例"
            for form, term in _unsupported(output_en, "en", evidence_texts, glossary)]


def _unsupported(output: str, lang: str, evidence_texts: list[str],
                 glossary: list[Term] | None) -> list[tuple[str, Term]]:
    matcher = _matcher_for(glossary)
    named = {m.term for text in evidence_texts
             for m in matcher.matches(text or "", detect_language(text or ""))}
    supported = named.union(*(matcher.general[i] for i in named))
    problems: dict[int, str] = {}
    for match in matcher.matches(output or "", lang):
        i = match.term
        if (matcher.terms[i].checked and i not in supported and not matcher.general[i] & named
                and i not in problems):
            problems[i] = output[match.start:match.end]
    return [(form, matcher.terms[i]) for i, form in problems.items()]
